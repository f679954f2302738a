"""The ``wtc`` command (also ``python -m wtc``)."""

from __future__ import annotations

import argparse
import sys


def _cmd_data(args) -> int:

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


def _cmd_train(args) -> int:
    from wtc.data import DataSetError
    from wtc.train import TrainConfig, TrainingError, train

    config = TrainConfig(model=args.model, data=args.data, data_root=args.data_root,
                         beta=args.beta, gamma=args.gamma, steps=args.steps,
                         batch_size=args.batch_size, seed=args.seed, device=args.device,
                         checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                         progress=not args.quiet)
    if args.step is not None:
        config.data_options["step"] = args.step
    try:
        result = train(config, args.out, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, TrainingError, DataSetError) as err:
        print(f"wtc train: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: reconstruction error {result['reconstruction_error']:.2f} after "
          f"{result['steps']} steps")
    return 0


def _cmd_traverse(args) -> int:
    from wtc.report import save_traversals
    from wtc.train import TrainingError, load_run

    try:
        model, config, dataset = load_run(args.run_dir, device=args.device)
    except TrainingError as err:
        print(f"wtc traverse: {err}", file=sys.stderr)
        return 2
    save_traversals(model, dataset, args.out, steps=args.steps, seed=args.seed,
                    title=f"{config.model} on {config.data}")
    print(f"wrote {args.out}")
    return 0


def _cmd_eval(args) -> int:
    import json
    import platform
    from pathlib import Path

    import numpy as np
    import scipy
    import sklearn
    import torch

    from wtc.metrics import evaluate
    from wtc.train import TrainingError, load_run

    try:
        model, config, dataset = load_run(args.run_dir, device=args.device)
        result = evaluate(model, dataset, metrics=args.metrics, protocol=args.protocol,
                          repeats=args.repeats, seed=args.seed, scale=args.scale)
    except (TrainingError, ValueError) as err:
        print(f"wtc eval: {err}", file=sys.stderr)
        return 2
    result["versions"] = {"torch": torch.__version__, "numpy": np.__version__,
                          "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
                          "python": platform.python_version()}
    result["run"] = {"model": config.model, "data": config.data}
    path = Path(args.run_dir) / "eval.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"{'metric':<14} {'mean':>9} {'std':>9}  ({result['protocol']}, "
          f"{result['repeats']} repeat(s))")
    for name, v in result["metrics"].items():
        print(f"{name:<14} {v['mean']:9.4f} {v['std']:9.4f}")
    print(f"wrote {path}")
    return 0


def _cmd_demo(args) -> int:
    from wtc.demo import run_demo

    run_demo(args.out, steps=args.steps, device=args.device, progress=not args.quiet)
    return 0


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

    from wtc.models import MODELS

    tr = sub.add_parser("train", help="train one of the six models")
    tr.add_argument("--model", required=True, help=", ".join(MODELS))
    tr.add_argument("--data", required=True, help="a data set name (see `wtc data`)")
    tr.add_argument("--data-root", default=None)
    tr.add_argument("--step", type=int, default=None,
                    help="procedural data sets: keep every step-th class of each factor")
    tr.add_argument("--beta", type=float, default=None)
    tr.add_argument("--gamma", type=float, default=None)
    tr.add_argument("--steps", type=int, default=300_000)
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    tr.add_argument("--checkpoint-every", type=int, default=10_000)
    tr.add_argument("--log-every", type=int, default=100)
    tr.add_argument("--out", required=True, help="the run's folder")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(run=_cmd_train)

    tv = sub.add_parser("traverse", help="latent traversals of a trained run")
    tv.add_argument("run_dir")
    tv.add_argument("--out", required=True, metavar="OUT.png")
    tv.add_argument("--steps", type=int, default=9)
    tv.add_argument("--seed", type=int, default=2)
    tv.add_argument("--device", default=None)
    tv.set_defaults(run=_cmd_traverse)

    from wtc.metrics import METRICS

    ev = sub.add_parser("eval", help="evaluate a run's last checkpoint; writes RUN_DIR/eval.json")
    ev.add_argument("run_dir")
    ev.add_argument("--metrics", nargs="+", default=["factor_vae", "mig", "modularity", "wdg",
                                                     "reconstruction"], choices=METRICS)
    ev.add_argument("--protocol", choices=["paper", "dlib"], default="paper")
    ev.add_argument("--repeats", type=int, default=None, help="default: the protocol's")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--scale", type=float, default=1.0,
                    help="multiply every sample size (quick looks; 1 is the protocol)")
    ev.add_argument("--device", default=None)
    ev.set_defaults(run=_cmd_eval)

    demo = sub.add_parser("demo", help="train WTC-VAE and beta-VAE on procedural dSprites and "
                                       "write a small report")
    demo.add_argument("--out", default="wtc-demo")
    demo.add_argument("--steps", type=int, default=None,
                      help="training steps per model (default: 1200 on CPU, 30000 on a GPU)")
    demo.add_argument("--device", default=None)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
