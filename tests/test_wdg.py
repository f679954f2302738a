"""wtc.metrics.wdg against a straightforward scipy implementation of REFERENCE.md's algorithm."""

import numpy as np
import pytest
import scipy.stats
import torch

from wtc.metrics import wdg
from wtc.metrics.wdg import permuted_reference, scale_by_range


def scipy_wdg(z, factors, reference=None):
    """The authors' algorithm, written out with scipy: z already scaled; reference = the permuted
    codes (paper variant) or None (against the whole column)."""
    N, d = z.shape
    K = factors.shape[1]
    matrix = np.zeros((d, K))
    gaps = np.full(K, np.nan)
    for k in range(K):
        values = np.unique(factors[:, k])
        for j in range(d):
            dists = []
            for v in values:
                m = factors[:, k] == v
                ref = z[:, j] if reference is None else reference[m, j]
                dists.append(scipy.stats.wasserstein_distance(z[m, j], ref))
            matrix[j, k] = np.mean(dists)
        if len(values) > 1:
            top = np.sort(matrix[:, k])
            gaps[k] = top[-1] - top[-2]
    valid = np.isfinite(gaps) & (gaps > 0)
    return (gaps[valid].mean() if valid.any() else np.nan), gaps, matrix


def structured_codes(rng, N=3000):
    factors = np.stack([rng.integers(0, 3, N), rng.integers(0, 6, N), rng.integers(0, 10, N),
                        np.zeros(N, dtype=np.int64)], 1)
    z = rng.normal(size=(N, 6)) * 0.3
    z[:, 0] += factors[:, 1]            # dim 0 encodes factor 1
    z[:, 3] += 0.5 * factors[:, 2]      # dim 3 encodes factor 2
    z[:, 4] += factors[:, 0] + 0.3 * factors[:, 2]  # dim 4 mixes factors 0 and 2
    return z, factors


@pytest.mark.parametrize("codes", ["random", "structured"])
@pytest.mark.parametrize("variant", ["paper", "exact"])
def test_wdg_matches_scipy_implementation(codes, variant):
    rng = np.random.default_rng(0)
    if codes == "random":
        z, factors = rng.normal(size=(1000, 5)), rng.integers(0, 4, size=(1000, 3))
    else:
        z, factors = structured_codes(rng)
    result = wdg(z, factors, variant=variant, seed=7)
    scaled = scale_by_range(torch.tensor(z))
    reference = permuted_reference(scaled, 7).numpy() if variant == "paper" else None
    score, gaps, matrix = scipy_wdg(scaled.numpy(), factors, reference)
    np.testing.assert_allclose(result.matrix, matrix, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.gaps, gaps, rtol=1e-9, atol=1e-12)  # NaN where undefined
    assert result.score == pytest.approx(score, rel=1e-9)


def test_constant_factor_is_undefined_and_excluded():
    rng = np.random.default_rng(1)
    z, factors = structured_codes(rng)
    result = wdg(z, factors)
    assert np.isnan(result.gaps[3])  # the constant factor
    finite = result.gaps[np.isfinite(result.gaps) & (result.gaps > 0)]
    assert result.score == pytest.approx(finite.mean())


def test_disentangled_codes_score_higher_than_entangled():
    rng = np.random.default_rng(2)
    N = 4000
    factors = rng.integers(0, 8, size=(N, 3))
    disentangled = factors + 0.05 * rng.normal(size=(N, 3))
    mixing = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    entangled = disentangled @ mixing
    noise = rng.normal(size=(N, 3))
    good, bad, none = (wdg(c, factors).score for c in (disentangled, entangled, noise))
    assert good > 0.3 and good > 10 * bad and bad > none >= 0 and none < 0.005


def test_accepts_torch_and_numpy_and_is_seeded():
    rng = np.random.default_rng(3)
    z, factors = structured_codes(rng, N=500)
    a = wdg(z, factors, seed=1)
    b = wdg(torch.tensor(z, dtype=torch.float32), torch.tensor(factors), seed=1)
    assert a.score == pytest.approx(b.score, rel=1e-5)
    assert wdg(z, factors, seed=1).score == a.score
    assert wdg(z, factors, seed=2).score != a.score
    assert wdg(z, factors, variant="exact").score == wdg(z, factors, variant="exact", seed=5).score


def test_constant_code_dim_does_not_poison_the_score():
    rng = np.random.default_rng(4)
    z, factors = structured_codes(rng, N=800)
    z[:, 5] = 0.25
    result = wdg(z, factors)
    assert np.isfinite(result.score) and np.all(result.matrix[5] == 0)


@pytest.mark.parametrize("bad,match", [
    (lambda z, f: (np.where(np.arange(z.size).reshape(z.shape) == 3, np.nan, z), f), "NaN"),
    (lambda z, f: (np.where(np.arange(z.size).reshape(z.shape) == 3, np.inf, z), f), "infinite"),
    (lambda z, f: (z[:, :1], f), "at least 2 latent dims"),
    (lambda z, f: (z, f.astype(float)), "integer"),
    (lambda z, f: (z, f[:-1]), "N = "),
])
def test_bad_input_is_a_clear_error(bad, match):
    rng = np.random.default_rng(5)
    z, factors = rng.normal(size=(50, 3)), rng.integers(0, 3, size=(50, 2))
    z, factors = bad(z, factors)
    with pytest.raises(ValueError, match=match):
        wdg(z, factors)


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        wdg(np.zeros((4, 2)), np.zeros((4, 1), dtype=int), variant="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.cuda
def test_cuda_matches_cpu():
    rng = np.random.default_rng(6)
    z, factors = structured_codes(rng)
    cpu = wdg(z, factors, variant="exact")
    gpu = wdg(torch.tensor(z, device="cuda"), torch.tensor(factors, device="cuda"), variant="exact")
    np.testing.assert_allclose(gpu.matrix, cpu.matrix, rtol=1e-9, atol=1e-12)
    assert gpu.score == pytest.approx(cpu.score, rel=1e-9)
    # The paper variant draws its permutation from the CUDA generator: a different sample.
    paper = wdg(torch.tensor(z, device="cuda"), torch.tensor(factors, device="cuda"))
    assert paper.score == pytest.approx(wdg(z, factors).score, rel=0.2)


def test_factor_values_need_not_be_contiguous():
    """Factor values with gaps between them (5 f + 7) are the same classes as f."""
    rng = np.random.default_rng(12)
    factors = np.stack([rng.integers(0, n, 600) for n in (3, 7)], 1)
    codes = rng.normal(size=(600, 4)) + np.repeat(factors, 2, axis=1) * 0.3
    for variant in ("paper", "exact"):
        dense = wdg(codes, factors, variant=variant, seed=2)
        spread = wdg(codes, 5 * factors + 7, variant=variant, seed=2)
        assert spread.score == pytest.approx(dense.score, rel=1e-12)
        np.testing.assert_allclose(spread.matrix, dense.matrix, rtol=1e-12)


def test_factor_values_over_a_wide_range_are_ranked():
    """Values spread too widely for one class per value (wdg ranks them instead) and negative
    values give the classes of their order: the same score as the dense factors."""
    rng = np.random.default_rng(13)
    factors = np.stack([rng.integers(0, n, 500) for n in (4, 6)], 1)
    codes = rng.normal(size=(500, 3)) + factors[:, [0, 1, 1]] * 0.4
    for variant in ("paper", "exact"):
        dense = wdg(codes, factors, variant=variant, seed=3)
        for values in (10**9 * factors - 5, -3 * factors):
            spread = wdg(codes, values, variant=variant, seed=3)
            np.testing.assert_allclose(spread.matrix, dense.matrix, rtol=1e-12)
            assert spread.score == pytest.approx(dense.score, rel=1e-12)


@pytest.mark.parametrize("variant", ["paper", "exact"])
def test_stacked_codes_score_each_run_as_its_own_call(variant):
    """R runs' codes (R, N, d) sharing the factors: one call gives R results, each exactly the
    run's own call (its permutation from its own seed)."""
    rng = np.random.default_rng(4)
    runs = [structured_codes(rng, N=800) for _ in range(3)]
    factors = runs[0][1]
    codes = np.stack([z for z, _ in runs])
    seeds = [3, 8, 13]
    results = wdg(codes, factors, variant=variant, seed=seeds)
    assert isinstance(results, list) and len(results) == 3
    for r, result in enumerate(results):
        single = wdg(codes[r], factors, variant=variant, seed=seeds[r])
        np.testing.assert_array_equal(result.matrix, single.matrix)
        np.testing.assert_array_equal(result.gaps, single.gaps)
        assert result.score == pytest.approx(single.score, rel=1e-15)
    same_seed = wdg(torch.tensor(codes), factors, variant=variant, seed=7)
    for r, result in enumerate(same_seed):
        assert result.score == pytest.approx(wdg(codes[r], factors, variant=variant,
                                                 seed=7).score, rel=1e-15)
    with pytest.raises(ValueError, match="one seed or one per run"):
        wdg(codes, factors, seed=[1, 2])
    with pytest.raises(ValueError, match="integer seed"):
        wdg(codes[0], factors, seed=[1])
    with pytest.raises(ValueError, match=r"codes of shape \(N, d\), or \(R, N, d\)"):
        wdg(codes[None], factors)
