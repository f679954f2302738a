"""Wasserstein dependency gap (WDG), the paper's metric (section 4, appendix D).

For every factor k, the W1 distance between a code dimension's conditional distribution given
the factor's value and its marginal measures how much that dimension depends on the factor;
the gap between the most and the second most dependent dimensions, averaged over factors, is the
score (higher: each factor is captured by one dimension).

Two variants, by name:

- ``"paper"`` (default; the authors' code behind table 1): each code column is divided by its
  range (max - min, not centred); the marginal is represented by a column-wise random
  permutation of the codes (``wtc_ext.permute_dims``, seeded), compared on the same rows:
  ``W[j, k, v] = W1(Z[m, j], Zs[m, j])`` with ``m = (y_k == v)``.
- ``"exact"``: eq. 12 read literally, ``W[j, k, v] = W1(Z[m, j], Z[:, j])`` against the whole
  column; no randomness.

Then ``Wbar[j, k]`` is the unweighted mean over the factor's values, ``gap_k`` the largest minus
the second largest ``Wbar[., k]``, and WDG the mean of the gaps that are finite and positive.
A factor with a single value has an undefined gap (NaN), left out of the mean as in the paper.
A constant code column (range 0) is left unscaled, where the authors' code would divide by zero
and turn every gap into NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

import wtc_ext
from wtc.metrics.registry import register_metric

VARIANTS = ("paper", "exact")


class WDGResult(NamedTuple):
    score: float  #: mean of the finite, positive per-factor gaps (NaN if there are none)
    gaps: np.ndarray  #: (K,) per-factor gap; NaN where undefined (a factor with one value)
    matrix: np.ndarray  #: (d, K) dependency matrix Wbar: mean over values of the conditional W1


def _as_codes(codes) -> torch.Tensor:
    """Codes as an (N, d) float64 tensor, in any layout (the kernels read strided columns), and
    without a copy when they already are one."""
    z = codes if isinstance(codes, torch.Tensor) else torch.as_tensor(np.asarray(codes))
    if z.dim() != 2:
        raise ValueError(f"wdg: expected codes of shape (N, d), got {tuple(z.shape)}")
    if not (z.dtype.is_floating_point or z.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"wdg: codes must be numeric, got {z.dtype}")
    if z.shape[1] < 2:
        raise ValueError(f"wdg: needs at least 2 latent dims (a gap between two), got {z.shape[1]}")
    if z.shape[0] < 2:
        raise ValueError(f"wdg: needs at least 2 samples, got {z.shape[0]}")
    z = z.detach().to(torch.float64)
    # a finite sum means finite values; a non-finite one may be an overflow: look closer
    if not torch.isfinite(z.sum()) and not torch.isfinite(z).all():
        raise ValueError("wdg: codes contain NaN or infinite values")
    return z


def _as_factors(factors, n: int, device) -> torch.Tensor:
    y = factors if isinstance(factors, torch.Tensor) else torch.as_tensor(np.asarray(factors))
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dtype.is_complex:
        raise ValueError(f"wdg: factors must be integer classes, got {y.dtype} "
                         "(discretise continuous factor values first)")
    if y.dim() == 1:
        y = y[:, None]
    if y.dim() != 2 or y.shape[0] != n:
        raise ValueError(f"wdg: expected factors of shape (N, K) with N = {n} like the codes, "
                         f"got {tuple(y.shape)}")
    return y.to(device=device, dtype=torch.int64)


def _classes(y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(N, K) class indices for the kernel and the number of classes C. A class is the value
    minus the factor's minimum: values missing in between are empty classes, NaN in W, which the
    means over classes skip, and finding which values occur is saved. A range too wide for that
    (more than 4 N + 1024 values) gets the ranks of the distinct values instead."""
    n, K = y.shape
    if K == 0:
        return y.contiguous(), 1
    low, high = torch.aminmax(y, dim=0)
    span = int((high - low).max()) + 1
    if span <= 4 * n + 1024:
        return (y - low).contiguous(), span
    ranks = [torch.unique(y[:, k], return_inverse=True) for k in range(K)]
    return torch.stack([r[1] for r in ranks], 1).contiguous(), max(r[0].numel() for r in ranks)


def scale_by_range(z: torch.Tensor) -> torch.Tensor:
    """Each column divided by its range (max - min), not centred; constant columns unchanged."""
    span = z.max(0).values - z.min(0).values
    return z / torch.where(span > 0, span, torch.ones_like(span))


def permuted_reference(z: torch.Tensor, seed: int, return_index: bool = False):
    """The marginal's sample of the paper variant: every column of z permuted independently."""
    generator = torch.Generator(device=z.device).manual_seed(int(seed))
    return wtc_ext.permute_dims(z, generator=generator, return_index=return_index)


def wdg(codes, factors, *, variant: str = "paper", seed: int = 0) -> WDGResult:
    """Wasserstein dependency gap of codes (N, d) given integer factors (N, K).

    Args:
        codes: posterior means, numpy or torch, any device (computed there, in float64).
        factors: integer factor classes (any integer values), numpy or torch.
        variant: ``"paper"`` (the authors' algorithm) or ``"exact"`` (module docstring).
        seed: the permutation's seed (paper variant).
    """
    if variant not in VARIANTS:
        raise ValueError(f"wdg: variant must be one of {VARIANTS}, got {variant!r}")
    z = _as_codes(codes)  # (N, d)
    y = _as_factors(factors, z.shape[0], z.device)
    classes, num_classes = _classes(y)
    # (d, K, C), NaN for absent classes. Dividing a column by its range divides its distances by
    # it. The paper's permuted reference is permute_dims's (permuted_reference's), drawn in the
    # kernel; its sorted order is z's, so each column is sorted once in all. The registered op
    # (public, torch.ops.wtc_ext) takes the classes as they are; wtc_ext.conditional_wasserstein
    # would rank them first.
    generator = None
    if variant == "paper":
        generator = torch.Generator(device=z.device).manual_seed(int(seed))
    W = torch.ops.wtc_ext.conditional_wasserstein.default(
        z, classes, None, None, num_classes, variant == "paper", generator, True)
    matrix = torch.nanmean(W, dim=2)  # (d, K)
    top2 = matrix.topk(2, dim=0).values  # (2, K)
    gaps = top2[0] - top2[1]
    num_values = (~torch.isnan(W[0])).sum(1)  # each factor's number of distinct values
    gaps = torch.where(num_values >= 2, gaps, torch.full_like(gaps, float("nan")))
    valid = torch.isfinite(gaps) & (gaps > 0)
    score = gaps[valid].mean().item() if bool(valid.any()) else float("nan")
    return WDGResult(score, gaps.cpu().numpy(), matrix.cpu().numpy())


@register_metric("wdg", display="WDG", needs=("train",), default=True)
def _wdg_in_evaluate(r) -> float:
    return wdg(r.train_codes, r.train_factors, variant="paper", seed=r.seed).score
