"""wtc_ext.wasserstein_1d and conditional_wasserstein against scipy.stats.wasserstein_distance."""

import zlib

import numpy as np
import pytest
import scipy.stats
import torch

import wtc_ext
from conftest import AOT_WITH_GENERATOR_FAILS
from wtc_ext.reference import (conditional_wasserstein_reference, wasserstein_1d_padded,
                               wasserstein_1d_reference)

TOL = {torch.float64: 1e-9, torch.float32: 1e-5}


def scipy_rows(u, v, uw=None, vw=None):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return np.array([scipy.stats.wasserstein_distance(
        u[r], v[r], None if uw is None else np.asarray(uw[r], np.float64),
        None if vw is None else np.asarray(vw[r], np.float64)) for r in range(u.shape[0])])


def random_case(rng, kind, rows=6):
    n, m = rng.integers(1, 40, size=2)
    if kind == "equal":
        m = n
    u = rng.normal(size=(rows, n))
    v = rng.normal(1.0, 2.0, size=(rows, m))
    if kind == "ties":
        u = rng.integers(0, 4, size=(rows, n)).astype(float)
        v = rng.integers(0, 4, size=(rows, m)).astype(float)
    if kind == "offset":
        u += 1e6
        v += 1e6 + 0.5
    if kind == "one-point":
        u = rng.normal(size=(rows, 1))
    return u, v


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["unequal", "equal", "ties", "offset", "one-point"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_scipy(device, dtype, kind, weighted):
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{weighted}".encode()))  # stable across runs
    for _ in range(5):
        u, v = random_case(rng, kind)
        uw = rng.random(u.shape) + 0.01 if weighted else None
        vw = rng.random(v.shape) + 0.01 if weighted else None
        if weighted and kind == "ties" and u.shape[1] > 1:
            uw[:, 0] = 0.0  # zero weights are allowed (with a positive total)
        t = lambda a: None if a is None else torch.tensor(a, dtype=dtype, device=device)
        # Compare with scipy on the values as the op sees them (rounded to dtype).
        u_d, v_d = t(u).double().cpu().numpy(), t(v).double().cpu().numpy()
        uw_d = None if uw is None else t(uw).double().cpu().numpy()
        vw_d = None if vw is None else t(vw).double().cpu().numpy()
        expected = scipy_rows(u_d, v_d, uw_d, vw_d)
        got = wtc_ext.wasserstein_1d(t(u), t(v), t(uw), t(vw)).double().cpu().numpy()
        np.testing.assert_allclose(got, expected, rtol=TOL[dtype], atol=TOL[dtype] * 1e-3)


def test_duplicates_and_identical_samples(device):
    u = torch.tensor([[1.0, 1.0, 2.0, 2.0, 2.0]], dtype=torch.float64, device=device)
    assert wtc_ext.wasserstein_1d(u, u).item() == 0.0
    v = torch.tensor([[2.0, 1.0, 2.0, 1.0, 2.0]], dtype=torch.float64, device=device)
    assert wtc_ext.wasserstein_1d(u, v).item() == 0.0
    # Hand-computed: point masses at 0 and 3 -> 3; {0, 1} vs {0, 3} -> 1.
    a = torch.tensor([0.0], dtype=torch.float64, device=device)
    b = torch.tensor([3.0], dtype=torch.float64, device=device)
    assert wtc_ext.wasserstein_1d(a, b).item() == 3.0
    assert wtc_ext.wasserstein_1d(torch.tensor([0.0, 1.0], device=device),
                                  torch.tensor([0.0, 3.0], device=device)).item() == 1.0


def test_broadcasting_over_leading_dims(device):
    u = torch.randn(4, 1, 9, dtype=torch.float64, device=device)
    v = torch.randn(3, 13, dtype=torch.float64, device=device)
    out = wtc_ext.wasserstein_1d(u, v)
    assert out.shape == (4, 3)
    expected = scipy_rows(u.expand(4, 3, 9).reshape(12, 9).cpu(), v.expand(4, 3, 13).reshape(12, 13).cpu())
    np.testing.assert_allclose(out.reshape(-1).cpu().numpy(), expected, rtol=1e-12)
    # Plain 1-D samples give a scalar.
    assert wtc_ext.wasserstein_1d(u[0, 0], v[0]).shape == ()


def test_gradients_match_finite_differences(device):
    torch.manual_seed(0)
    u = torch.randn(3, 7, dtype=torch.float64, device=device, requires_grad=True)
    v = (torch.randn(3, 5, dtype=torch.float64, device=device) * 2).requires_grad_(True)
    w = torch.rand(3, 7, dtype=torch.float64, device=device) + 0.1
    assert torch.autograd.gradcheck(lambda a, b: wtc_ext.wasserstein_1d(a, b), (u, v))
    assert torch.autograd.gradcheck(lambda a, b: wtc_ext.wasserstein_1d(a, b, w), (u, v))
    # Broadcast inputs get their gradients summed over the broadcast dims.
    x = torch.randn(1, 6, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: wtc_ext.wasserstein_1d(a, b), (x, v))


def test_gradient_of_two_points(device):
    u = torch.tensor([0.0], dtype=torch.float64, device=device, requires_grad=True)
    v = torch.tensor([2.0], dtype=torch.float64, device=device, requires_grad=True)
    wtc_ext.wasserstein_1d(u, v).backward()
    assert u.grad.item() == -1.0 and v.grad.item() == 1.0


def test_opcheck(device):
    u = torch.randn(4, 6, dtype=torch.float64, device=device, requires_grad=True)
    v = torch.randn(4, 9, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.rand(4, 9, dtype=torch.float64, device=device)
    torch.library.opcheck(torch.ops.wtc_ext.wasserstein_1d.default, (u, v, None, w))
    torch.library.opcheck(torch.ops.wtc_ext.wasserstein_1d.default, (u, v))
    z = torch.randn(50, 3, device=device)
    labels = torch.randint(0, 4, (50, 2), device=device)
    torch.library.opcheck(torch.ops.wtc_ext.conditional_wasserstein.default, (z, labels, None, None, 4))
    torch.library.opcheck(torch.ops.wtc_ext.conditional_wasserstein.default,
                          (z, labels, z.flip(0), None, 4))


def test_empty_and_nan(device):
    u = torch.randn(3, 0, device=device)
    assert torch.isnan(wtc_ext.wasserstein_1d(u, torch.randn(3, 4, device=device))).all()
    assert wtc_ext.wasserstein_1d(torch.randn(0, 5, device=device),
                                  torch.randn(0, 4, device=device)).shape == (0,)
    x = torch.randn(2, 5, device=device)
    x[1, 2] = float("nan")
    out = wtc_ext.wasserstein_1d(x, torch.randn(2, 5, device=device))
    assert torch.isfinite(out[0]) and torch.isnan(out[1])


def test_bad_weights_are_clear_errors(device):
    u, v = torch.randn(2, 5, device=device), torch.randn(2, 4, device=device)
    with pytest.raises(ValueError, match="u_weights must be finite and non-negative"):
        wtc_ext.wasserstein_1d(u, v, -torch.ones(2, 5, device=device))
    with pytest.raises(ValueError, match="v_weights must have a positive total"):
        wtc_ext.wasserstein_1d(u, v, None, torch.zeros(2, 4, device=device))
    with pytest.raises(ValueError, match="does not match"):
        wtc_ext.wasserstein_1d(u, v, torch.ones(3, device=device))
    with pytest.raises(ValueError, match="do not broadcast"):
        wtc_ext.wasserstein_1d(torch.randn(2, 5, device=device), torch.randn(3, 4, device=device))


def test_pure_pytorch_references_agree():
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(5, 20)), rng.normal(size=(5, 31))
    uw, vw = rng.random((5, 20)), rng.random((5, 31))
    expected = scipy_rows(u, v, uw, vw)
    got = wasserstein_1d_reference(*(torch.tensor(a) for a in (u, v, uw, vw)))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    us = [torch.tensor(rng.normal(size=s)) for s in (3, 9, 5)]
    vs = [torch.tensor(rng.normal(size=s)) for s in (7, 2, 4)]
    padded = wasserstein_1d_padded(us, vs)
    np.testing.assert_allclose(padded.numpy(), [scipy.stats.wasserstein_distance(a, b)
                                                for a, b in zip(us, vs)], rtol=1e-10)


# -- conditional_wasserstein -------------------------------------------------------------------

def scipy_conditional(z, labels, reference=None):
    N, d = z.shape
    K = labels.shape[1]
    C = max(len(np.unique(labels[:, k])) for k in range(K))
    out = np.full((d, K, C), np.nan)
    for k in range(K):
        for c, value in enumerate(np.unique(labels[:, k])):
            rows = labels[:, k] == value
            for j in range(d):
                ref = z[:, j] if reference is None else reference[rows, j]
                out[j, k, c] = scipy.stats.wasserstein_distance(z[rows, j], ref)
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_reference", [False, True])
def test_conditional_matches_scipy_loop(device, dtype, with_reference):
    rng = np.random.default_rng(3)
    N, d = 400, 4
    labels = np.stack([rng.integers(0, 3, N), rng.integers(10, 17, N) * 3,
                       np.zeros(N, dtype=np.int64)], 1)  # any integer values; one constant factor
    z = rng.normal(size=(N, d))
    z[:, 1] = labels[:, 0] + 0.1 * rng.normal(size=N)  # a dependent column
    z[:, 2] = np.round(z[:, 2], 1)  # ties
    reference = z[rng.permutation(N)] if with_reference else None
    tz = torch.tensor(z, dtype=dtype, device=device)
    tr = None if reference is None else torch.tensor(reference, dtype=dtype, device=device)
    got = wtc_ext.conditional_wasserstein(tz, torch.tensor(labels, device=device), tr)
    z_d = tz.double().cpu().numpy()
    r_d = None if tr is None else tr.double().cpu().numpy()
    expected = scipy_conditional(z_d, labels, r_d)
    np.testing.assert_allclose(got.double().cpu().numpy(), expected, rtol=TOL[dtype],
                               atol=TOL[dtype] * 1e-2)
    # The pure-PyTorch sort-once reference agrees too (labels as class indices).
    classes = torch.tensor(np.stack([np.unique(labels[:, k], return_inverse=True)[1]
                                     for k in range(3)], 1), device=device)
    ref = conditional_wasserstein_reference(tz.double(), classes, None if tr is None else tr.double())
    np.testing.assert_allclose(ref.cpu().numpy(), expected, rtol=1e-9, atol=1e-12)


def test_conditional_one_dim_labels_and_empty_classes(device):
    z = torch.randn(30, 2, dtype=torch.float64, device=device)
    labels = torch.tensor([0, 5] * 15, device=device)
    out = wtc_ext.conditional_wasserstein(z, labels)
    assert out.shape == (2, 2)
    expected = scipy_conditional(z.cpu().numpy(), labels[:, None].cpu().numpy())[:, 0]
    np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-12)
    # A factor with fewer classes than another leaves the missing classes NaN.
    two = torch.stack([labels, torch.arange(30, device=device) % 3], 1)
    out = wtc_ext.conditional_wasserstein(z, two)
    assert out.shape == (2, 2, 3) and torch.isnan(out[:, 0, 2]).all()
    assert torch.isfinite(out[:, 1]).all()


def test_conditional_errors(device):
    z = torch.randn(10, 3, device=device)
    with pytest.raises(ValueError, match="labels must be integers"):
        wtc_ext.conditional_wasserstein(z, torch.rand(10, device=device))
    with pytest.raises(ValueError, match="expected labels of shape"):
        wtc_ext.conditional_wasserstein(z, torch.zeros(9, dtype=torch.long, device=device))
    z[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        wtc_ext.conditional_wasserstein(z, torch.zeros(10, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="reference must match"):
        wtc_ext.conditional_wasserstein(torch.randn(10, 3, device=device),
                                        torch.zeros(10, dtype=torch.long, device=device),
                                        torch.randn(10, 2, device=device))


@pytest.mark.parametrize("kind", ["float32-ties", "beyond-float32", "tiny", "mixed", "outliers"])
def test_float64_sorting_beyond_float32_keys(kind):
    # The CPU sort orders float64 values by float32 keys, repairs the order within equal keys,
    # and falls back to a full 64-bit sort when that repair has too much to do.
    rng = np.random.default_rng(11)
    N = 3000
    if kind == "float32-ties":  # thousands of distinct values behind one float32 key
        z = 1.0 + rng.permutation(N) * 1e-13
    elif kind == "beyond-float32":
        z = rng.normal(size=N) * 1e300
    elif kind == "tiny":
        z = rng.normal(size=N) * 1e-310
    elif kind == "outliers":  # linear keys put every ordinary value in a few keys: fallback
        z = rng.normal(size=N)
        z[[5, 17]] = [1e12, -3e11]
    else:  # a short colliding run among ordinary values: repaired, no fallback
        z = np.concatenate([rng.normal(size=N - 30), 2.0 + rng.permutation(30) * 1e-12])
        z = rng.permutation(z)
    v = rng.permutation(z)[: N // 2] * 0.5
    got = wtc_ext.wasserstein_1d(torch.tensor(z)[None], torch.tensor(v)[None]).item()
    expected = scipy.stats.wasserstein_distance(z, v)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)
    Z = np.stack([z, rng.permutation(z)], 1)
    labels = rng.integers(0, 5, size=(N, 2))
    idx = torch.stack([torch.randperm(N, generator=torch.Generator().manual_seed(s))
                       for s in (1, 2)], 1)
    tz = torch.tensor(Z)
    got = wtc_ext.conditional_wasserstein(tz, torch.tensor(labels), reference_index=idx)
    expected = scipy_conditional(Z, labels, tz.gather(0, idx).numpy())
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-300)


def test_conditional_permuted_reference_is_permute_dims(device):
    """reference="permuted" draws permute_dims's permutation from the same generator state."""
    g = torch.Generator(device=device).manual_seed(5)
    z = torch.randn(300, 4, dtype=torch.float64, device=device, generator=g)
    labels = torch.randint(0, 6, (300, 3), device=device, generator=g)
    got = wtc_ext.conditional_wasserstein(
        z, labels, "permuted", generator=torch.Generator(device=device).manual_seed(9))
    ref = wtc_ext.permute_dims(z, generator=torch.Generator(device=device).manual_seed(9))
    expected = wtc_ext.conditional_wasserstein(z, labels, ref)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15)
    again = wtc_ext.conditional_wasserstein(
        z, labels, "permuted", generator=torch.Generator(device=device).manual_seed(9))
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    other = wtc_ext.conditional_wasserstein(
        z, labels, "permuted", generator=torch.Generator(device=device).manual_seed(10))
    assert not torch.equal(other, got)
    torch.library.opcheck(torch.ops.wtc_ext.conditional_wasserstein.default,
                          (z, labels, None, None, 6, True, None, True))


def test_opcheck_permuted_with_generator(device):
    """As for permute_dims (see OPCHECK_WITH_GENERATOR in test_permute_dims.py):
    test_aot_dispatch_dynamic (and _static) rerun the op with the same generator object, which the
    eager run advanced, so they cannot pass; the rest of opcheck does, and the compiled op equals eager from
    equal generator states."""
    z = torch.randn(40, 3, device=device, dtype=torch.float64)
    labels = torch.randint(0, 4, (40, 2), device=device)
    args = (z, labels, None, None, 4, True, torch.Generator(device=device).manual_seed(1), True)
    torch.library.opcheck(torch.ops.wtc_ext.conditional_wasserstein.default, args,
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))
    for test in ("test_aot_dispatch_dynamic", "test_aot_dispatch_static"):
        with pytest.raises(Exception, match=AOT_WITH_GENERATOR_FAILS):
            torch.library.opcheck(torch.ops.wtc_ext.conditional_wasserstein.default, args,
                                  test_utils=test)
    op = torch.ops.wtc_ext.conditional_wasserstein.default
    compiled = torch.compile(lambda x, y, g: op(x, y, None, None, 4, True, g, True),
                             backend="aot_eager", dynamic=True)
    for n in (40, 30):
        x, y = z[:n], labels[:n]
        torch.testing.assert_close(
            compiled(x, y, torch.Generator(device=device).manual_seed(2)),
            op(x, y, None, None, 4, True, torch.Generator(device=device).manual_seed(2), True),
            rtol=0, atol=0, equal_nan=True)


def test_conditional_scale_by_range(device):
    """Dividing each column's distances by its range equals dividing the column first; a
    constant column is left unscaled."""
    g = torch.Generator(device=device).manual_seed(6)
    z = torch.randn(200, 3, dtype=torch.float64, device=device, generator=g) * 7 + 3
    z[:, 2] = 4.0
    labels = torch.randint(0, 5, (200, 2), device=device, generator=g)
    span = z.max(0).values - z.min(0).values
    scaled = z / torch.where(span > 0, span, torch.ones_like(span))
    for reference in (None, "permuted"):
        gen = {"generator": torch.Generator(device=device).manual_seed(1)} if reference else {}
        got = wtc_ext.conditional_wasserstein(z, labels, reference, scale_by_range=True, **gen)
        gen = {"generator": torch.Generator(device=device).manual_seed(1)} if reference else {}
        expected = wtc_ext.conditional_wasserstein(scaled, labels, reference, **gen)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15)


def test_conditional_argument_errors(device):
    z = torch.randn(10, 3, device=device)
    labels = torch.zeros(10, dtype=torch.long, device=device)
    with pytest.raises(ValueError, match="reference must be a tensor, None or 'permuted'"):
        wtc_ext.conditional_wasserstein(z, labels, "shuffled")
    with pytest.raises(ValueError, match="generator is only used"):
        wtc_ext.conditional_wasserstein(z, labels, generator=torch.Generator(device=device))
    with pytest.raises(ValueError, match="labels must lie in"):
        torch.ops.wtc_ext.conditional_wasserstein.default(z, labels[:, None] + 3, None, None, 2)
    with pytest.raises(ValueError, match="labels must lie in"):
        torch.ops.wtc_ext.conditional_wasserstein.default(z, labels[:, None] - 1, None, None, 2)
    with pytest.raises(ValueError, match="at most one of"):
        torch.ops.wtc_ext.conditional_wasserstein.default(z, labels[:, None], z, None, 1, True)


def test_conditional_reads_any_layout():
    # The CPU kernel reads z, reference and reference_index through their strides.
    g = torch.Generator().manual_seed(3)
    big = torch.randn(80, 6, dtype=torch.float64, generator=g)
    labels = torch.randint(0, 4, (40, 2), generator=g)
    views = {"row-major": big[::2, ::2].contiguous(),
             "column-major": big[::2, ::2].t().contiguous().t(), "strided": big[::2, ::2]}
    idx = torch.stack([torch.randperm(40, generator=g) for _ in range(3)], 1)
    expected = wtc_ext.conditional_wasserstein(views["row-major"], labels, reference_index=idx)
    for name, z in views.items():
        got = wtc_ext.conditional_wasserstein(z, labels, reference_index=idx.t().contiguous().t())
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15, msg=name)
        ref = z.gather(0, idx)
        got = wtc_ext.conditional_wasserstein(z, labels, ref.t().contiguous().t())
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-15, msg=name)


# ----------------------------------------------------------------------------------------------
# R runs' codes in one call: z (R, N, d) sharing the labels


def stacked_codes(device, R=3, N=120, d=4, K=2, seed=21):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(R, N, d, dtype=torch.float64, generator=g)
    labels = torch.randint(0, 5, (N, K), generator=g)
    z[..., 0] += labels[:, 0].double()  # some dependence, so the distances differ
    return z.to(device), labels.to(device)


@pytest.mark.parametrize("mode", ["none", "tensor", "index", "permuted-list", "permuted-one",
                                  "permuted-global"])
@pytest.mark.parametrize("scale", [False, True])
def test_conditional_stacked_equals_single_calls(device, mode, scale):
    """W[r] of one call on z (R, N, d) equals the call on z[r], exactly; a permuted reference
    draws run r's permutation as that call would (from generator[r], or in turn from one
    generator or the global one, as R calls in a row would)."""
    z, labels = stacked_codes(device)
    R, N, d = z.shape
    kwargs = [{} for _ in range(R)]
    stacked_kw = {}
    if mode == "tensor":
        ref = torch.randn(R, N, d, dtype=z.dtype, device=device)
        stacked_kw = {"reference": ref}
        kwargs = [{"reference": ref[r]} for r in range(R)]
    elif mode == "index":
        idx = torch.stack([torch.stack([torch.randperm(N) for _ in range(d)], 1)
                           for _ in range(R)]).to(device)
        stacked_kw = {"reference_index": idx}
        kwargs = [{"reference_index": idx[r]} for r in range(R)]
    elif mode == "permuted-list":
        stacked_kw = {"reference": "permuted",
                      "generator": [torch.Generator(device=device).manual_seed(10 + r)
                                    for r in range(R)]}
        kwargs = [{"reference": "permuted",
                   "generator": torch.Generator(device=device).manual_seed(10 + r)}
                  for r in range(R)]
    elif mode == "permuted-one":
        stacked_kw = {"reference": "permuted",
                      "generator": torch.Generator(device=device).manual_seed(5)}
        one = torch.Generator(device=device).manual_seed(5)
        kwargs = [{"reference": "permuted", "generator": one} for _ in range(R)]
    elif mode == "permuted-global":
        stacked_kw = {"reference": "permuted"}
        kwargs = [{"reference": "permuted"} for _ in range(R)]
    torch.manual_seed(3)
    got = wtc_ext.conditional_wasserstein(z, labels, scale_by_range=scale, **stacked_kw)
    torch.manual_seed(3)
    expected = torch.stack([wtc_ext.conditional_wasserstein(z[r], labels, scale_by_range=scale,
                                                            **kwargs[r]) for r in range(R)])
    assert got.shape == (R, d, labels.shape[1], 5)
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    if mode.startswith("permuted"):  # and the runs did get permutations of their own
        assert not torch.equal(got[0], got[1])
    one_factor = wtc_ext.conditional_wasserstein(z, labels[:, 0])
    assert one_factor.shape == (R, d, 5)
    torch.testing.assert_close(one_factor, torch.stack(
        [wtc_ext.conditional_wasserstein(z[r], labels[:, 0]) for r in range(R)]), rtol=0, atol=0)


def test_conditional_stacked_opcheck(device):
    z, labels = stacked_codes(device, R=2, N=30, d=3)
    op = torch.ops.wtc_ext.conditional_wasserstein.default
    torch.library.opcheck(op, (z, labels, None, None, 5))
    torch.library.opcheck(op, (z, labels, torch.randn_like(z), None, 5, False, None, True))
    torch.library.opcheck(op, (z, labels, None, None, 5, True, None, True))
    gens = [torch.Generator(device=device).manual_seed(r) for r in range(2)]
    # (the generators' state advances between opcheck's runs: see test_opcheck_permuted_with_generator)
    torch.library.opcheck(op, (z, labels, None, None, 5, True, None, True, gens),
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))
    compiled = torch.compile(lambda x, y, g: op(x, y, None, None, 5, True, None, True, g),
                             backend="aot_eager")
    torch.testing.assert_close(
        compiled(z, labels, [torch.Generator(device=device).manual_seed(r) for r in range(2)]),
        op(z, labels, None, None, 5, True, None, True,
           [torch.Generator(device=device).manual_seed(r) for r in range(2)]),
        rtol=0, atol=0, equal_nan=True)


def test_conditional_stacked_errors_and_empty(device):
    z, labels = stacked_codes(device, R=2, N=20, d=3)
    gens = [torch.Generator(device=device) for _ in range(2)]
    with pytest.raises(ValueError, match="one generator per run"):
        wtc_ext.conditional_wasserstein(z, labels, "permuted", generator=gens[:1])
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        wtc_ext.conditional_wasserstein(z[0], labels, "permuted", generator=gens)
    with pytest.raises(ValueError, match="generator is only used"):
        wtc_ext.conditional_wasserstein(z, labels, generator=gens)
    op = torch.ops.wtc_ext.conditional_wasserstein.default
    with pytest.raises(ValueError, match="generators are only used with the permuted"):
        op(z, labels, None, None, 5, False, None, False, gens)
    with pytest.raises(ValueError, match="generator or generators, not both"):
        op(z, labels, None, None, 5, True, gens[0], False, gens)
    with pytest.raises(ValueError, match=r"generators \(one per run\) need z of shape"):
        op(z[0], labels, None, None, 5, True, None, False, gens)
    with pytest.raises(ValueError, match=r"expected z of shape \(N, d\), or \(R, N, d\)"):
        wtc_ext.conditional_wasserstein(z[None], labels)
    with pytest.raises(ValueError, match="labels of shape"):
        wtc_ext.conditional_wasserstein(z, labels[:5])
    with pytest.raises(ValueError, match="reference must match z's shape"):
        wtc_ext.conditional_wasserstein(z, labels, z[0])
    assert wtc_ext.conditional_wasserstein(z[:0], labels).shape == (0, 3, 2, 5)
    assert wtc_ext.conditional_wasserstein(z[:0], labels, "permuted").shape == (0, 3, 2, 5)
