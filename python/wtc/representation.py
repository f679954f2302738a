"""Posterior means in batches: the one way a trained model's representation is computed (for
the metrics, the traversals, the demo and the reconstruction error)."""

from __future__ import annotations

import numpy as np
import torch


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def model_input(model, x: torch.Tensor) -> torch.Tensor:
    """Images on the model's device in its dtype (a float64 model takes float64 images)."""
    p = next(model.parameters())
    return x.to(p.device, p.dtype)


@torch.no_grad()
def posterior_means(model, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model.represent`` (posterior means) of ``images``, ``batch_size`` at a time on the
    model's device; returned on the CPU."""
    model.eval()
    return torch.cat([model.represent(model_input(model, images[i:i + batch_size])).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def dataset_means(model, dataset, indices, batch_size: int = 512) -> torch.Tensor:
    """Posterior means of the data set's images at ``indices``, loaded a batch at a time."""
    model.eval()
    return torch.cat([model.represent(model_input(model, dataset.batch(indices[i:i + batch_size]))).cpu()
                      for i in range(0, len(indices), batch_size)])


def representation_function(model, batch_size: int = 512):
    """``images -> codes``: what the sampling metrics take as their representation."""

    def represent(images):
        return posterior_means(model, images, batch_size)

    return represent


@torch.no_grad()
def encode_dataset(model, dataset, batch_size: int = 512, progress: bool = False,
                   desc: str | None = None) -> torch.Tensor:
    """Posterior means of every image of ``dataset`` in index order, (len(dataset), d) float32 on
    the CPU: encoded ``batch_size`` at a time on the model's device, loading only that batch's
    images (what an evaluation caches instead of encoding a million draws)."""
    model.eval()
    n = len(dataset)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="img", unit_scale=True, dynamic_ncols=True,
                   desc=desc or f"encoding {getattr(dataset, 'name', '') or 'data set'}")
    out = None
    try:
        for start in range(0, n, batch_size):
            index = np.arange(start, min(start + batch_size, n), dtype=np.int64)
            z = model.represent(model_input(model, dataset.batch(index))).cpu()
            if out is None:  # the code size is known only after the first batch
                out = torch.empty((n, z.shape[1]), dtype=z.dtype)
            out[start:start + len(index)] = z
            if bar is not None:
                bar.update(len(index))
    finally:
        if bar is not None:
            bar.close()
    return out if out is not None else torch.empty((0, 0))
