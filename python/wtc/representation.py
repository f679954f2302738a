"""Posterior means in batches: the one way a trained model's representation is computed (for
the metrics, the traversals, the demo and the reconstruction error)."""

from __future__ import annotations

import torch


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def posterior_means(model, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model.represent`` (posterior means) of ``images``, ``batch_size`` at a time on the
    model's device; returned on the CPU."""
    model.eval()
    device = model_device(model)
    return torch.cat([model.represent(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def dataset_means(model, dataset, indices, batch_size: int = 512) -> torch.Tensor:
    """Posterior means of the data set's images at ``indices``, loaded a batch at a time."""
    model.eval()
    device = model_device(model)
    return torch.cat([model.represent(dataset.batch(indices[i:i + batch_size]).to(device)).cpu()
                      for i in range(0, len(indices), batch_size)])


def representation_function(model, batch_size: int = 512):
    """``images -> codes``: what the sampling metrics take as their representation."""

    def represent(images):
        return posterior_means(model, images, batch_size)

    return represent
