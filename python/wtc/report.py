"""What a run shows a person: reconstruction error, reconstructions and latent traversals."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def reconstruction_error(model, dataset, num_samples: int = 2048, seed: int = 0,
                         batch_size: int = 256) -> float:
    """Mean over images of the Bernoulli NLL summed over pixels, decoding posterior means (the
    paper's reconstruction column)."""
    model.eval()
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(dataset), num_samples)
    total = 0.0
    for start in range(0, num_samples, batch_size):
        x = dataset.batch(indices[start:start + batch_size]).to(_device(model))
        logits = model.decoder(model.encoder(x)[0])
        total += F.binary_cross_entropy_with_logits(logits, x, reduction="sum").item()
    return total / num_samples


@torch.no_grad()
def embed(model, dataset, indices, batch_size: int = 512) -> torch.Tensor:
    """Posterior means of the images at ``indices``, batched on the model's device."""
    model.eval()
    out = []
    for start in range(0, len(indices), batch_size):
        x = dataset.batch(indices[start:start + batch_size]).to(_device(model))
        out.append(model.encoder(x)[0].cpu())
    return torch.cat(out)


def _show(images: torch.Tensor, path, rows: int, cols: int, row_labels=None, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            img = images[i].permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    if row_labels:
        for r, label in enumerate(row_labels):
            axes[r, 0].text(-8, 32, label, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.08)
    fig.savefig(path, dpi=80)
    plt.close(fig)


@torch.no_grad()
def save_reconstructions(model, dataset, path, count: int = 8, seed: int = 1) -> None:
    """Originals (top row) and their reconstructions from posterior means (bottom row)."""
    model.eval()
    indices = np.random.default_rng(seed).integers(0, len(dataset), count)
    x = dataset.batch(indices).to(_device(model))
    recon = torch.sigmoid(model.decoder(model.encoder(x)[0]))
    _show(torch.cat([x, recon]).cpu(), path, 2, count, ["data", "recon"])


@torch.no_grad()
def save_traversals(model, dataset, path, steps: int = 9, seed: int = 2,
                    title: str | None = None) -> None:
    """Each latent dim swept from its 2nd to its 98th percentile over the data (rows = dims)
    around one image's code, like the paper's figure 4."""
    model.eval()
    rng = np.random.default_rng(seed)
    codes = embed(model, dataset, rng.integers(0, len(dataset), 1000))
    low, high = torch.quantile(codes, 0.02, dim=0), torch.quantile(codes, 0.98, dim=0)
    base = codes[0]
    d = base.numel()
    grid = base.repeat(d * steps, 1)
    for j in range(d):
        grid[j * steps:(j + 1) * steps, j] = torch.linspace(low[j], high[j], steps)
    images = torch.sigmoid(model.decoder(grid.to(_device(model)))).cpu()
    _show(images, path, d, steps, [f"z{j}" for j in range(d)], title)
