"""Shared pieces of the metrics: input checks, disentanglement_lib's histogram discretisation and
a vectorised plug-in mutual information equal to scikit-learn's mutual_info_score."""

from __future__ import annotations

import numpy as np
import torch


def as_codes(codes, name: str = "codes") -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    codes = np.asarray(codes)
    # float32 stays float32: disentanglement_lib bins codes in their own precision (histogram
    # edges in float32), and a value on an edge must land in the same bin.
    if codes.dtype not in (np.float32, np.float64):
        codes = codes.astype(np.float64)
    if codes.ndim != 2:
        raise ValueError(f"{name}: expected shape (N, d), got {codes.shape}")
    if not np.isfinite(codes).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return codes


def as_factors(factors, n: int, name: str = "factors") -> np.ndarray:
    if isinstance(factors, torch.Tensor):
        factors = factors.detach().cpu().numpy()
    factors = np.asarray(factors)
    if factors.ndim == 1:
        factors = factors[:, None]
    if factors.ndim != 2 or factors.shape[0] != n:
        raise ValueError(f"{name}: expected shape (N, K) with N = {n} like the codes, got "
                         f"{factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"{name}: expected integer factor classes, got {factors.dtype}")
    return factors


def discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """disentanglement_lib's histogram discretisation, per code dim:
    np.digitize(z, np.histogram(z, num_bins)[1][:-1]) - labels 1..num_bins, the max in the last
    bin, a constant dim entirely in bin num_bins // 2 + 1."""
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def _dense_labels(x: np.ndarray) -> tuple[np.ndarray, int]:
    _, inverse = np.unique(x, return_inverse=True)
    inverse = inverse.reshape(-1)
    return inverse, int(inverse.max()) + 1 if inverse.size else 0


def mutual_information(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plug-in MI in nats between every column of a (N, p) and of b (N, q): (p, q). The same
    value as sklearn.metrics.mutual_info_score(a[:, i], b[:, j])."""
    n = a.shape[0]
    out = np.zeros((a.shape[1], b.shape[1]))
    b_labels = [_dense_labels(b[:, j]) for j in range(b.shape[1])]
    for i in range(a.shape[1]):
        ai, na = _dense_labels(a[:, i])
        pa = np.bincount(ai, minlength=na) / n
        for j, (bj, nb) in enumerate(b_labels):
            joint = np.bincount(ai * nb + bj, minlength=na * nb).reshape(na, nb) / n
            pb = np.bincount(bj, minlength=nb) / n
            nz = joint > 0
            out[i, j] = np.sum(joint[nz] * (np.log(joint[nz]) - np.log(np.outer(pa, pb)[nz])))
    return np.maximum(out, 0.0)


def entropies(factors: np.ndarray) -> np.ndarray:
    """H(factor) in nats per column (the MI of a factor with itself)."""
    out = np.empty(factors.shape[1])
    for k in range(factors.shape[1]):
        labels, _ = _dense_labels(factors[:, k])
        p = np.bincount(labels) / len(labels)
        p = p[p > 0]
        out[k] = -(p * np.log(p)).sum()
    return out
