"""WDG and the sorted-CDF Wasserstein ops against the scipy loop of the authors' code, POT-style
padded batching in pure PyTorch, and a pure-PyTorch sort-once implementation.

Sizes: one WDG evaluation on the dSprites grid (N = 12,800 codes, d = 10, factors with 3, 6, 40,
32, 32 values: 1,130 distances), and 10,000 random unequal pairs of sizes 100 to 10,000."""

import numpy as np
import pytest
import scipy.stats
import torch

import wtc_ext
from conftest import DEVICES
from wtc.metrics import wdg
from wtc.metrics.wdg import permuted_reference, scale_by_range
from wtc_ext.reference import conditional_wasserstein_reference, wasserstein_1d_padded

DSPRITES_VALUES = (3, 6, 40, 32, 32)


def dsprites_like(seed=0, N=12_800, d=10):
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, k, N) for k in DSPRITES_VALUES], 1)
    z = rng.normal(size=(N, d))
    z[:, :5] += factors / np.array(DSPRITES_VALUES)  # some dependence, as a trained model has
    return z, factors


def wdg_scipy_loop(z, factors, seed=0):
    """The authors' algorithm as their code runs it: numpy scaling and permutation, one
    scipy.stats.wasserstein_distance call per (dim, factor, value)."""
    z = z / (z.max(0) - z.min(0))
    rng = np.random.default_rng(seed)
    zs = np.stack([rng.permutation(z[:, j]) for j in range(z.shape[1])], 1)
    gaps = []
    for k in range(factors.shape[1]):
        values = np.unique(factors[:, k])
        wbar = []
        for j in range(z.shape[1]):
            ws = [scipy.stats.wasserstein_distance(z[factors[:, k] == v, j],
                                                   zs[factors[:, k] == v, j]) for v in values]
            wbar.append(np.mean(ws))
        top = np.sort(wbar)
        gaps.append(top[-1] - top[-2])
    gaps = np.array(gaps)
    return gaps[np.isfinite(gaps) & (gaps > 0)].mean()


def wdg_torch_sort_once(z, factors, seed=0):
    """The same metric in pure PyTorch: sort each column once, group by a stable sort of the
    labels, segment sums (wtc_ext.reference.conditional_wasserstein_reference)."""
    z = scale_by_range(z)
    W = conditional_wasserstein_reference(z, factors, permuted_reference(z, seed))
    top = torch.nanmean(W, 2).topk(2, dim=0).values
    gaps = top[0] - top[1]
    return gaps[torch.isfinite(gaps) & (gaps > 0)].mean()


@pytest.mark.parametrize("impl", ["wtc_ext", "torch_sort_once", "scipy_loop"])
@pytest.mark.parametrize("device", DEVICES)
def test_wdg_dsprites_grid(bench, device, impl):
    z, factors = dsprites_like()
    size = "dSprites grid, N=12800, d=10"
    if impl == "scipy_loop":  # on the CPU whatever the group: the baseline of every device
        bench("wdg", device, size, impl, lambda: wdg_scipy_loop(z, factors), rounds=3)
        return
    tz = torch.tensor(z, device=device)
    tf = torch.tensor(factors, device=device)
    fn = (lambda: wdg(tz, tf)) if impl == "wtc_ext" else (lambda: wdg_torch_sort_once(tz, tf))
    bench("wdg", device, size, impl, fn)


@pytest.fixture(scope="module")
def unequal_pairs():
    rng = np.random.default_rng(1)
    sizes = rng.integers(100, 10_001, size=(10_000, 2))
    us = [rng.normal(size=n).astype(np.float32) for n in sizes[:, 0]]
    vs = [(rng.normal(size=m) * 2 + 1).astype(np.float32) for m in sizes[:, 1]]
    return us, vs


def padded(xs, device):
    """Samples of unequal sizes as one (R, max) batch with zero weights on the padding."""
    size = max(len(x) for x in xs)
    values = np.zeros((len(xs), size), np.float32)
    weights = np.zeros((len(xs), size), np.float32)
    for i, x in enumerate(xs):
        values[i, :len(x)] = x
        values[i, len(x):] = x.max()
        weights[i, :len(x)] = 1
    return torch.tensor(values, device=device), torch.tensor(weights, device=device)


@pytest.mark.parametrize("impl", ["wtc_ext", "pot_padded", "scipy_loop"])
@pytest.mark.parametrize("device", DEVICES)
def test_wasserstein_1d_unequal_pairs(bench, device, impl, unequal_pairs):
    us, vs = unequal_pairs
    size = "10000 pairs, sizes 100-10000"
    if impl == "scipy_loop":  # on the CPU whatever the group: the baseline of every device
        fn = lambda: [scipy.stats.wasserstein_distance(u, v) for u, v in zip(us, vs)]
        bench("wasserstein_1d", device, size, impl, fn, rounds=1)
        return
    if impl == "wtc_ext":
        u, uw = padded(us, device)
        v, vw = padded(vs, device)
        bench("wasserstein_1d", device, size, impl, lambda: wtc_ext.wasserstein_1d(u, v, uw, vw),
              rounds=3)
    else:
        tus = [torch.tensor(u, device=device) for u in us]
        tvs = [torch.tensor(v, device=device) for v in vs]
        bench("wasserstein_1d", device, size, impl, lambda: wasserstein_1d_padded(tus, tvs),
              rounds=1)
