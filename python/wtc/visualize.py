"""Pictures of data sets and trained runs: example grids, reconstructions, latent traversals,
loss curves. Every figure of wtc is drawn through :func:`pyplot` (matplotlib without a display)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from wtc.representation import dataset_means, model_input


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures are written to files, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _image(tensor: torch.Tensor) -> tuple:
    """(array, imshow keywords) of one (C, H, W) image in [0, 1]."""
    img = tensor.permute(1, 2, 0).clamp(0, 1).numpy()
    return (img[..., 0] if img.shape[-1] == 1 else img), {"cmap": "gray", "vmin": 0, "vmax": 1}


def image_formats() -> set:
    """The file name endings matplotlib can write (png, pdf, svg, ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return set(FigureCanvasAgg.get_supported_filetypes())


def save_image_grid(images: torch.Tensor, path, rows: int, cols: int, row_labels=None,
                    title=None, col_labels=None) -> None:
    plt = pyplot()
    longest = max((len(label) for label in row_labels or ()), default=0)
    width = cols * 0.9 + 0.065 * longest  # room for the row labels at the left
    top = 0.3 if col_labels else 0.0
    fig, axes = plt.subplots(rows, cols, figsize=(width, rows * 0.9 + 0.4 + top), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            img, kw = _image(images[i])
            ax.imshow(img, **kw)
    if row_labels:
        for r, label in enumerate(row_labels):
            axes[r, 0].text(-8, 32, label, ha="right", va="center", fontsize=7)
    if col_labels:
        for c, label in enumerate(col_labels):
            axes[0, c].set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=min(0.5, (0.08 * cols * 0.9 + 0.065 *
                                                                  longest) / width),
                        right=0.98)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_examples(dataset, path, count: int = 16, seed: int = 0) -> None:
    """A grid of random images of a data set, titled with their factor classes."""
    plt = pyplot()
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
        img, kw = _image(image)
        ax.imshow(img, **kw)
        label = "\n".join(f"{n}={v}" for n, v in zip(dataset.factor_names, f))
        ax.set_title(label, fontsize=6)
    fig.suptitle(dataset.describe(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def save_reconstructions(model, dataset, path, count: int = 8, seed: int = 1) -> None:
    """Originals (top row) and their reconstructions from posterior means (bottom row)."""
    model.eval()
    indices = np.random.default_rng(seed).integers(0, len(dataset), count)
    x = model_input(model, dataset.batch(indices))
    recon = torch.sigmoid(model.decoder(model.represent(x)))
    save_image_grid(torch.cat([x, recon]).cpu(), path, 2, count, ["data", "recon"])


@torch.no_grad()
def save_traversals(model, dataset, path, steps: int = 9, seed: int = 2,
                    title: str | None = None) -> None:
    """Each latent dim swept from its 2nd to its 98th percentile over the data (rows = dims,
    labelled with the values swept; columns = the percentile) around one image's code, like the
    paper's figure 4."""
    model.eval()
    rng = np.random.default_rng(seed)
    codes = dataset_means(model, dataset, rng.integers(0, len(dataset), 1000))
    low, high = torch.quantile(codes, 0.02, dim=0), torch.quantile(codes, 0.98, dim=0)
    base = codes[0]
    d = base.numel()
    grid = base.repeat(d * steps, 1)
    for j in range(d):
        grid[j * steps:(j + 1) * steps, j] = torch.linspace(low[j], high[j], steps)
    images = torch.sigmoid(model.decoder(model_input(model, grid))).cpu()
    rows = [f"z{j} {float(low[j]):+.2f}..{float(high[j]):+.2f}" for j in range(d)]
    columns = [f"{p:.0f}%" for p in np.linspace(2, 98, steps)]
    note = "rows: latent dims, swept over the values shown; columns: percentile over the data"
    save_image_grid(images, path, d, steps, rows, f"{title}\n{note}" if title else note,
                    col_labels=columns)


def read_log(path) -> list:
    """The records of a run's log.jsonl in step order; a resumed run's records replace those
    the killed run logged after its checkpoint, and a half-written last line is skipped."""
    by_step = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            by_step[record["step"]] = record
    return [by_step[k] for k in sorted(by_step)]


def save_loss_curves(log_path, path, title: str | None = None) -> bool:
    """One panel per logged term of a run's log.jsonl against the step (steps/s included);
    written atomically. False, and nothing written, when the log has no records yet."""
    from wtc.runfiles import atomic_write

    records = read_log(log_path)
    if not records:
        return False
    keys = list(dict.fromkeys(k for r in records for k in r if k != "step"))
    plt = pyplot()
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
            ax.plot(*zip(*points), lw=1, marker="." if len(points) < 50 else None)  # 1 shows
        ax.set_title(key, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:  # format given: the temporary file's name does not end in .png
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=Path(path).suffix[1:] or "png",
                                                   dpi=80))
    finally:
        plt.close(fig)
    return True
