"""Mutual information gap (Chen et al. 2018), as disentanglement_lib computes it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from wtc.metrics._utils import (
    as_codes,
    as_factors,
    discretize,
    entropies,
    mutual_information,
)
from wtc.metrics.registry import register_metric


class MIGResult(NamedTuple):
    score: float  #: mean of the defined per-factor gaps
    per_factor: np.ndarray  #: (K,) normalised gap; NaN for a factor with zero entropy
    mutual_information: np.ndarray  #: (d, K) MI in nats between discretised codes and factors


def mig(codes, factors, num_bins: int = 20) -> MIGResult:
    """MIG = mean over factors of (largest - second largest MI over code dims) / H(factor).

    Codes are discretised into ``num_bins`` equal-width bins per dim; MI is the plug-in estimate
    in nats. A factor with one value (zero entropy) is undefined (NaN) and left out of the mean.
    """
    z = as_codes(codes)
    y = as_factors(factors, len(z))
    return mig_from_mutual_information(mutual_information(discretize(z, num_bins), y), y)


def mig_from_mutual_information(m: np.ndarray, factors: np.ndarray) -> MIGResult:
    """MIG from the (d, K) MI matrix of discretised codes and ``factors`` (N, K) integer classes
    (so that Modularity can share the matrix)."""
    if m.shape[0] < 2:
        raise ValueError("mig: needs at least 2 code dims")
    h = entropies(factors)
    top = np.sort(m, axis=0)[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.where(h > 0, (top[0] - top[1]) / h, np.nan)
    defined = np.isfinite(gaps)
    score = float(gaps[defined].mean()) if defined.any() else float("nan")
    return MIGResult(score, gaps, m)


@register_metric("mig", display="MIG", needs=("train",), default=True)
def _mig_in_evaluate(r) -> float:
    return mig_from_mutual_information(r.train_mutual_information(), r.train_factors).score
