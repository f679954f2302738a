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

R runs' codes (R, N, d) of one data set (sharing the factors) are scored in one kernel call,
each run exactly as its own call would score it (its permutation drawn from its own seed).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """Codes as an (N, d) (or R runs' (R, N, d)) float64 tensor, in any layout (the kernels read
    strided columns), and without a copy when they already are one."""
    z = codes if isinstance(codes, torch.Tensor) else torch.as_tensor(np.asarray(codes))
    if z.dim() not in (2, 3):
        raise ValueError(f"wdg: expected codes of shape (N, d), or (R, N, d) for R runs, got "
                         f"{tuple(z.shape)}")
    if not (z.dtype.is_floating_point or z.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"wdg: codes must be numeric, got {z.dtype}")
    if z.dim() == 3 and z.shape[0] < 1:
        raise ValueError(f"wdg: expected codes of at least one run, got {tuple(z.shape)}")
    if z.shape[-1] < 2:
        raise ValueError(f"wdg: needs at least 2 latent dims (a gap between two), got "
                         f"{z.shape[-1]}")
    if z.shape[-2] < 2:
        raise ValueError(f"wdg: needs at least 2 samples, got {z.shape[-2]}")
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


def wdg(codes, factors, *, variant: str = "paper",
        seed: int | Sequence[int] = 0) -> WDGResult | list[WDGResult]:
    """Wasserstein dependency gap of codes (N, d) given integer factors (N, K).

    Args:
        codes: posterior means, numpy or torch, any device (computed there, in float64); or R
            runs' codes (R, N, d) sharing the factors, scored in one kernel call.
        factors: integer factor classes (any integer values), numpy or torch.
        variant: ``"paper"`` (the authors' algorithm) or ``"exact"`` (module docstring).
        seed: the permutation's seed (paper variant); for R runs one seed for all or R seeds,
            run r's permutation being the one ``wdg(codes[r], seed=seed[r])`` draws.

    Returns:
        a WDGResult, or for codes (R, N, d) a list of R, ``result[r] == wdg(codes[r], ...)``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"wdg: variant must be one of {VARIANTS}, got {variant!r}")
    z = _as_codes(codes)  # (N, d) or (R, N, d)
    stacked = z.dim() == 3
    seeds = None
    if stacked:
        seeds = [seed] * z.shape[0] if isinstance(seed, (int, np.integer)) else list(seed)
        if len(seeds) != z.shape[0]:
            raise ValueError(f"wdg: expected one seed or one per run ({z.shape[0]}), got "
                             f"{len(seeds)}")
    elif not isinstance(seed, (int, np.integer)):
        raise ValueError(f"wdg: expected an integer seed for codes (N, d), got {seed!r}")
    y = _as_factors(factors, z.shape[-2], z.device)
    classes, num_classes = _classes(y)
    # (d, K, C), NaN for absent classes. Dividing a column by its range divides its distances by
    # it. The paper's permuted reference is permute_dims's (permuted_reference's), drawn in the
    # kernel; its sorted order is z's, so each column is sorted once in all. The registered op
    # (public, torch.ops.wtc_ext) takes the classes as they are; wtc_ext.conditional_wasserstein
    # would rank them first.
    generator = generators = None
    if variant == "paper" and stacked:
        generators = [torch.Generator(device=z.device).manual_seed(int(s)) for s in seeds]
    elif variant == "paper":
        generator = torch.Generator(device=z.device).manual_seed(int(seed))
    W = torch.ops.wtc_ext.conditional_wasserstein.default(
        z, classes, None, None, num_classes, variant == "paper", generator, True, generators)
    # W (..., d, K, C): the leading run dim, if any, rides along.
    matrix = torch.nanmean(W, dim=-1)  # (..., d, K)
    top2 = matrix.topk(2, dim=-2).values  # (..., 2, K)
    gaps = top2.select(-2, 0) - top2.select(-2, 1)
    # each factor's number of distinct values (the same in every run: the factors are shared)
    num_values = (~torch.isnan(W.select(-3, 0))).sum(-1)
    gaps = torch.where(num_values >= 2, gaps, torch.full_like(gaps, float("nan")))
    valid = torch.isfinite(gaps) & (gaps > 0)
    counts = valid.sum(-1)
    scores = torch.where(valid, gaps, torch.zeros_like(gaps)).sum(-1) / counts
    scores = torch.where(counts > 0, scores, torch.full_like(scores, float("nan")))
    gaps_np, matrix_np, scores_list = gaps.cpu().numpy(), matrix.cpu().numpy(), scores.tolist()
    if not stacked:
        return WDGResult(scores_list, gaps_np, matrix_np)
    return [WDGResult(scores_list[r], gaps_np[r], matrix_np[r]) for r in range(z.shape[0])]


@register_metric("wdg", display="WDG", needs=("train",), default=True)
def _wdg_in_evaluate(r) -> float:
    return wdg(r.train_codes, r.train_factors, variant="paper", seed=r.seed).score
