"""The ``wtc`` command (also ``python -m wtc``)."""

from __future__ import annotations

import argparse
import sys


def _cmd_data(args) -> int:
    import numpy as np

    from wtc.data import DataSetError, load

    options = {}
    if args.step is not None:
        options["step"] = args.step
    if args.protocol is not None:
        options["protocol"] = args.protocol
    if args.variant is not None:
        options["variant"] = args.variant
    try:
        dataset = load(args.name, root=args.root, **options)
    except DataSetError as err:
        print(f"wtc data: {err}", file=sys.stderr)
        return 2
    print(dataset.describe())
    for name, size in zip(dataset.factor_names, dataset.factor_sizes):
        print(f"  {name:<18} {size}")
    if args.show:
        show_examples(dataset, args.show, count=args.count, seed=args.seed)
        print(f"wrote {args.show}")
    return 0


def show_examples(dataset, path, count: int = 16, seed: int = 0) -> None:
    """A grid of random images titled with their factor classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(seed)
    indices = rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)
    images = dataset.batch(indices)
    factors = dataset.index_to_factors(indices)
    cols = min(8, len(indices))
    rows = (len(indices) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, f in zip(axes.flat, images, factors):
        img = image.permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        label = "\n".join(f"{n}={v}" for n, v in zip(dataset.factor_names, f))
        ax.set_title(label, fontsize=6)
    fig.suptitle(dataset.describe(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wtc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="describe a data set and show example images")
    data.add_argument("name", help="dsprites, shapes3d, cars3d, smallnorb, mpi3d, celeba, "
                                   "dsprites-procedural, shapes3d-procedural")
    data.add_argument("--root", default=None, help="folder holding the data set's file")
    data.add_argument("--show", default=None, metavar="OUT.png", help="save example images")
    data.add_argument("--count", type=int, default=16, help="how many examples to show")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--step", type=int, default=None,
                      help="procedural sets: keep every step-th class of each factor")
    data.add_argument("--protocol", choices=["paper", "dlib"], default=None,
                      help="dSprites: keep (paper) or drop (dlib) the constant colour factor")
    data.add_argument("--variant", choices=["toy", "realistic", "real"], default=None,
                      help="MPI3D variant")
    data.set_defaults(run=_cmd_data)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
