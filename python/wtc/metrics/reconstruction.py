"""Reconstruction error: the paper's table-1 column."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wtc.metrics.registry import register_metric
from wtc.representation import model_input


@torch.no_grad()
def reconstruction_error(model, dataset, num_samples: int = 2048, seed: int = 0,
                         batch_size: int = 256) -> float:
    """Mean over images of the Bernoulli NLL summed over pixels, decoding posterior means (the
    paper's reconstruction column). Images are drawn uniformly with ``seed``."""
    model.eval()
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(dataset), num_samples)
    total = 0.0
    for start in range(0, num_samples, batch_size):
        x = model_input(model, dataset.batch(indices[start:start + batch_size]))
        logits = model.decoder(model.represent(x))
        total += F.binary_cross_entropy_with_logits(logits, x, reduction="sum").item()
    return total / num_samples


@register_metric("reconstruction", display="Reconstruction", needs=("model",),
                 lower_is_better=True, digits=1, default=True)
def _reconstruction_in_evaluate(r) -> float:
    return reconstruction_error(r.model, r.dataset, num_samples=r.sizes["num_test"], seed=r.seed)
