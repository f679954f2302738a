"""Fuzz suite of the ops: random shapes (empty, one element, non-contiguous, expanded), dtypes
(half to float64, integer, bool, complex), devices (CPU, meta mixes), values (NaN, inf, huge,
tiny, ties), label ranges and generators. Every case must give the reference's answer or a clear
error (ValueError / RuntimeError / TypeError naming an argument), never a crash or a wrong answer.

WTC_FUZZ_EXAMPLES sets the cases per op (default 200, for CI); e.g. WTC_FUZZ_EXAMPLES=5000 for a
longer hunt. Every case of every op runs on the CPU (the meta device stands in for "another
device", so the mixes run without a GPU)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from scipy.stats import wasserstein_distance  # noqa: E402

import wtc_ext  # noqa: E402
from wtc_ext import reference as ref  # noqa: E402

EXAMPLES = int(os.environ.get("WTC_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
OTHERS = [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64, torch.complex128]
ERRORS = (ValueError, RuntimeError, TypeError)


def clear_error(err: BaseException, *names: str) -> None:
    """A clear error: one of the expected types, and its message names one of the arguments."""
    assert isinstance(err, ERRORS), f"{type(err).__name__}: {err}"
    message = str(err)
    assert any(re.search(rf"\b{re.escape(n)}\b", message) for n in names), (
        f"the message names none of {names}: {message}")


def call(fn, *names):
    """fn() or ("error", err) for a clear error naming one of ``names``; anything else fails."""
    try:
        return fn()
    except ERRORS as err:  # noqa: PERF203
        clear_error(err, *names)
        return ("error", err)


def is_error(result) -> bool:
    error = isinstance(result, tuple) and len(result) == 2 and result[0] == "error"
    event("clear error" if error else "answer")  # (--hypothesis-show-statistics)
    return error


@st.composite
def values(draw, shape, dtype, special=True):
    """A tensor of ``shape`` and ``dtype``: normal values, ties, a huge or tiny scale, and (with
    ``special``) a few NaN or infinities."""
    numel = int(np.prod(shape)) if len(shape) else 1
    kind = draw(st.sampled_from(["normal", "ties", "huge", "tiny"]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(numel, generator=g, dtype=torch.float64)
    if kind == "ties":
        x = torch.randint(-2, 3, (numel,), generator=g).double()
    elif kind == "huge":
        x = x * (1e300 if dtype == torch.float64 else 1e37 if dtype in (torch.float32,
                                                                        torch.bfloat16) else 6e4)
    elif kind == "tiny":
        x = x * 1e-300 if dtype == torch.float64 else x * 1e-30
    if special and numel and draw(st.integers(0, 5)) == 0:
        where = draw(st.integers(0, numel - 1))
        x[where] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    if dtype == torch.bool:
        t = x > 0
    elif dtype.is_complex:
        t = torch.complex(x, torch.randn(numel, generator=g, dtype=torch.float64)).to(dtype)
    elif not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        t = x.clamp(-100, 100).nan_to_num(0).round().clamp(info.min, info.max).to(dtype)
    else:
        t = x.to(dtype)
    return t.reshape(shape)


@st.composite
def laid_out(draw, shape, dtype, special=True):
    """``shape`` as a contiguous, non-contiguous (a strided slice or a transpose) or expanded
    tensor."""
    layout = draw(st.sampled_from(["contiguous", "strided", "transposed", "expanded"]))
    if layout == "strided" and len(shape):
        big = list(shape)
        big[-1] = 2 * shape[-1]
        return draw(values(tuple(big), dtype, special))[..., ::2]
    if layout == "transposed" and len(shape) >= 2:
        t = draw(values(tuple(shape[:-2]) + (shape[-1], shape[-2]), dtype, special))
        return t.transpose(-1, -2)
    if layout == "expanded" and len(shape) and shape[0] > 0:
        return draw(values((1,) + tuple(shape[1:]), dtype, special)).expand(shape)
    return draw(values(tuple(shape), dtype, special))


def any_dtype():
    return st.sampled_from(FLOATS + FLOATS + OTHERS)


def generator_or_none():
    return st.one_of(st.none(), st.integers(0, 2**32).map(
        lambda s: torch.Generator().manual_seed(s)))


def magnitude(*ts) -> float:
    """The largest finite |value| of the tensors (0 for none)."""
    best = 0.0
    for t in ts:
        x = t.detach().double().abs()
        x = x[torch.isfinite(x)]
        if x.numel():
            best = max(best, float(x.max()))
    return best


def finite(*ts) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ts if t is not None)


# ----------------------------------------------------------------------------------------------
# permute_dims


@FUZZ
@given(st.data())
def test_fuzz_permute_dims(data):
    lead = data.draw(st.lists(st.integers(0, 3), max_size=2))
    B, d = data.draw(st.integers(0, 7)), data.draw(st.integers(0, 4))
    shape = tuple(lead) + (B, d)
    if data.draw(st.integers(0, 9)) == 0:
        shape = shape[-data.draw(st.integers(0, 1)):] if data.draw(st.booleans()) else ()
    dtype = data.draw(any_dtype())
    z = data.draw(laid_out(shape, dtype))
    on_meta = data.draw(st.integers(0, 7)) == 0
    if on_meta:
        z = z.to("meta")
    seed = data.draw(st.one_of(st.none(), st.integers(0, 2**32)))
    gen = lambda: None if seed is None else torch.Generator().manual_seed(seed)  # noqa: E731
    return_index = data.draw(st.booleans())
    # (a CPU generator with a meta z: a generator on another device, an error)
    valid = len(shape) >= 2 and dtype.is_floating_point and not (on_meta and seed is not None)
    torch.manual_seed(5)
    got = call(lambda: wtc_ext.permute_dims(z, generator=gen(), return_index=True), "z",
               "generator")
    if not valid:
        assert is_error(got), f"accepted z {dtype} {shape}"
        return
    assert not is_error(got), got[1]
    out, index = got
    assert out.shape == z.shape and out.dtype == z.dtype and out.device == z.device
    assert index.shape == z.shape and index.dtype == torch.int64
    if on_meta:
        return
    assert torch.equal(out, z.gather(-2, index)) or torch.equal(
        out.isnan(), z.gather(-2, index).isnan())  # NaN != NaN
    assert torch.equal(index.sort(-2).values,
                       torch.arange(B).view(B, 1).expand(shape) if B else index)
    torch.manual_seed(5)
    again = wtc_ext.permute_dims(z, generator=gen(), return_index=return_index)
    torch.testing.assert_close(again[0] if return_index else again, out, equal_nan=True,
                               rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# wasserstein_1d


def scipy_w1(u, v, uw=None, vw=None):
    """Row by row scipy over the broadcast leading dims, float64; empty rows NaN."""
    lead = torch.broadcast_shapes(u.shape[:-1], v.shape[:-1])
    u, v = u.double().expand(*lead, u.shape[-1]), v.double().expand(*lead, v.shape[-1])
    uw = None if uw is None else uw.double().expand(u.shape)
    vw = None if vw is None else vw.double().expand(v.shape)
    out = np.full(lead, np.nan)
    for idx in np.ndindex(*lead):
        if u.shape[-1] == 0 or v.shape[-1] == 0:
            continue
        a, b = u[idx].numpy(), v[idx].numpy()
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue  # NaN expected (see the test)
        out[idx] = wasserstein_distance(a, b, None if uw is None else uw[idx].numpy(),
                                        None if vw is None else vw[idx].numpy())
    return torch.from_numpy(out)


@FUZZ
@given(st.data())
def test_fuzz_wasserstein_1d(data):
    lead_u = data.draw(st.lists(st.integers(0, 3), max_size=2))
    lead_v = data.draw(st.sampled_from([lead_u, lead_u[-1:], []]) if data.draw(
        st.integers(0, 5)) else st.lists(st.integers(0, 3), max_size=2))
    n, m = data.draw(st.integers(0, 6)), data.draw(st.integers(0, 6))
    if data.draw(st.integers(0, 9)) == 0:
        n = data.draw(st.integers(7, 60))
    du = data.draw(any_dtype())
    dv = du if data.draw(st.booleans()) else data.draw(any_dtype())
    u = data.draw(laid_out(tuple(lead_u) + (n,), du))
    v = data.draw(laid_out(tuple(lead_v) + (m,), dv))
    uw = vw = None
    weights = data.draw(st.sampled_from(["none", "u", "v", "both", "bad"]))
    # weights that every dtype holds (huge ones would be inf in float16: an error, rightly)
    weight_scale = data.draw(st.sampled_from([1.0, 1e-3, 1e3]))
    if weights in ("u", "both", "bad"):
        uw = torch.rand(n, dtype=torch.float64) * weight_scale + 0.01 * data.draw(
            st.sampled_from([0, 1]))
        if weights == "bad":
            uw = data.draw(st.sampled_from([-uw - 1, uw * 0, uw.to(torch.complex128),
                                            uw.new_full(uw.shape, float("inf"))]))
    if weights in ("v", "both"):
        vw = torch.rand(tuple(lead_v) + (m,), dtype=torch.float64) * weight_scale + \
            data.draw(st.sampled_from([0.0, 1.0]))
    mix = data.draw(st.sampled_from(["cpu"] * 6 + ["u", "v", "vw", "all"]))
    if mix in ("u", "all"):
        u = u.to("meta")
    if mix in ("v", "all"):
        v = v.to("meta")
    if mix in ("vw", "all") and vw is not None:
        vw = vw.to("meta")
    create_graph = data.draw(st.integers(0, 5)) == 0

    try:
        lead = torch.broadcast_shapes(u.shape[:-1], v.shape[:-1])
    except RuntimeError:
        lead = None
    devices = {t.device for t in (u, v, uw, vw) if t is not None}
    valid_weights = all(
        w is None or (not w.dtype.is_complex and (w.is_meta or (
            bool((w >= 0).all()) and bool(torch.isfinite(w).all()) and
            (w.numel() == 0 or bool((w.sum(-1) > 0).all())))))
        for w in (uw, vw))
    valid = (lead is not None and not du.is_complex and not dv.is_complex and len(devices) == 1
             and valid_weights)
    names = ("u", "v", "u_weights", "v_weights")
    if create_graph and valid and (u.dtype.is_floating_point and not u.is_meta):
        u = u.detach().requires_grad_(True)
    got = call(lambda: wtc_ext.wasserstein_1d(u, v, uw, vw), *names)
    if not valid:
        assert is_error(got), "accepted invalid wasserstein_1d arguments"
        return
    assert not is_error(got), got[1]
    assert got.shape == lead
    if u.is_meta:
        assert got.is_meta
        return
    expected = scipy_w1(u.detach(), v, uw, vw)
    # NaN anywhere in a row gives NaN; infinities give NaN or inf (scipy is no help there)
    bad_u = ~torch.isfinite(u.detach().double()).all(-1).expand(lead) if n else None
    bad_v = ~torch.isfinite(v.double()).all(-1).expand(lead) if m else None
    nonfinite = torch.zeros(lead, dtype=torch.bool)
    for bad in (bad_u, bad_v):
        if bad is not None:
            nonfinite |= bad
    if nonfinite.any():
        assert not torch.isfinite(got.detach()[nonfinite]).any()
    fine = ~nonfinite
    got_d = got.detach().double()[fine]
    exp = expected[fine].to(got.dtype).double()  # overflow past the dtype's range is inf there
    eps = torch.finfo(got.dtype).eps
    scale = magnitude(u, v)
    torch.testing.assert_close(got_d, exp, rtol=64 * eps, atol=64 * eps * scale + 1e-300,
                               equal_nan=True)
    if create_graph and u.requires_grad and got.numel() and n and m and finite(u, v):
        # d/dz of sum(W^2) = 2 W dW/du: its derivative in u goes through W (the first
        # derivative is piecewise constant), so second derivatives are not zero
        (g,) = torch.autograd.grad((got.double() ** 2).sum(), u, create_graph=True)
        (gg,) = torch.autograd.grad(g.double().pow(2).sum(), u)
        uu = u.detach().double().requires_grad_(True)
        w_ref = ref.wasserstein_1d_reference(
            uu.expand(*lead, n), v.double().expand(*lead, m),
            None if uw is None else uw.expand(*lead, n),
            None if vw is None else vw.double().expand(*lead, m))
        (g_ref,) = torch.autograd.grad((w_ref ** 2).sum(), uu, create_graph=True)
        (gg_ref,) = torch.autograd.grad(g_ref.pow(2).sum(), uu)
        tol = 1e-6 if u.dtype == torch.float64 else 1e-2
        if u.dtype == torch.float64 and scale < 1e100 and scale > 1e-100:
            torch.testing.assert_close(gg.double(), gg_ref, rtol=tol, atol=tol)


def test_wasserstein_1d_complex_is_an_error():
    u = torch.tensor([1 + 5j, 2])
    v = torch.tensor([1, 2 - 7j])
    with pytest.raises(TypeError, match=r"\bu\b.*real dtype"):
        wtc_ext.wasserstein_1d(u, v)
    with pytest.raises(TypeError, match=r"\bv\b.*real dtype"):
        wtc_ext.wasserstein_1d(v.real, v)
    with pytest.raises(TypeError, match="u_weights"):
        wtc_ext.wasserstein_1d(v.real, v.real, u_weights=u)
    with pytest.raises(TypeError, match=r"\bz\b"):
        wtc_ext.conditional_wasserstein(torch.randn(4, 2, dtype=torch.complex64),
                                        torch.tensor([0, 0, 1, 1]))
    with pytest.raises(TypeError, match="reference"):
        wtc_ext.conditional_wasserstein(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]),
                                        torch.randn(4, 2, dtype=torch.complex64))


def test_wasserstein_1d_meta_mix_is_an_error():
    u = torch.randn(3, 5)
    with pytest.raises(ValueError, match=r"\bv\b.*device"):
        wtc_ext.wasserstein_1d(u, torch.randn(3, 5, device="meta"))
    with pytest.raises(ValueError, match=r"\bv\b.*device"):
        wtc_ext.wasserstein_1d(u.to("meta"), torch.randn(3, 5))
    with pytest.raises(ValueError, match="v_weights"):
        wtc_ext.wasserstein_1d(u, u, None, torch.rand(3, 5, device="meta"))
    # the op itself (its fake kernel serves the meta device) checks the devices too
    with pytest.raises(ValueError, match=r"\bv\b.*device"):
        torch.ops.wtc_ext.wasserstein_1d.default(u, torch.randn(3, 5, device="meta"))
    with pytest.raises(ValueError, match=r"\bv\b.*device"):
        torch.ops.wtc_ext.wasserstein_1d.default(u.to("meta"), torch.randn(3, 5))
    # all on meta: shapes only
    assert wtc_ext.wasserstein_1d(u.to("meta"), torch.randn(1, 7, device="meta")).shape == (3,)


def test_wasserstein_1d_double_backward():
    """Second derivatives through W1: the first derivative is piecewise constant in the samples,
    so d2W/du2 = 0, but a function of W (here W^2) has a non-zero second derivative, equal to
    the autograd reference's."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    vw = torch.rand(3, 4, generator=g, dtype=torch.float64)
    (gu,) = torch.autograd.grad((wtc_ext.wasserstein_1d(u, v, None, vw) ** 2).sum(), u,
                                create_graph=True)
    (ggu, ggv) = torch.autograd.grad(gu.pow(2).sum(), (u, v))
    uu, vv = u.detach().requires_grad_(True), v.detach().requires_grad_(True)
    (gu_ref,) = torch.autograd.grad((ref.wasserstein_1d_reference(uu, vv, None, vw) ** 2).sum(),
                                    uu, create_graph=True)
    (ggu_ref, ggv_ref) = torch.autograd.grad(gu_ref.pow(2).sum(), (uu, vv))
    assert ggu.abs().sum() > 0
    torch.testing.assert_close(ggu, ggu_ref)
    torch.testing.assert_close(ggv, ggv_ref)
    assert torch.autograd.gradgradcheck(
        lambda a, b: wtc_ext.wasserstein_1d(a, b).pow(2), (u, v))


# ----------------------------------------------------------------------------------------------
# gradient_penalty and critic_loss


def make_critic(kind, width, dtype, seed):
    torch.manual_seed(seed)
    if kind == "fused":
        critic = torch.nn.Sequential(torch.nn.Linear(width, 5), torch.nn.ReLU(),
                                     torch.nn.Linear(5, 1))
    elif kind == "deep":
        critic = wtc_ext.nn.MLPCritic(width, hidden=(4, 3))
    else:
        critic = torch.nn.Sequential(torch.nn.Linear(width, 4), torch.nn.Tanh(),
                                     torch.nn.Linear(4, 1))
    return critic.to(dtype if dtype.is_floating_point else torch.float32)


@FUZZ
@given(st.data())
def test_fuzz_critic(data):
    op = data.draw(st.sampled_from(["gradient_penalty", "critic_loss"]))
    kind = data.draw(st.sampled_from(["fused", "deep", "tanh"]))
    B, width = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 4))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64] * 3 + FLOATS + OTHERS))
    dtype_q = dtype if data.draw(st.integers(0, 7)) else data.draw(any_dtype())
    shape = (B, width) if data.draw(st.integers(0, 7)) else data.draw(st.sampled_from(
        [(B,), (B, width, 1), (B, width + 1)]))
    shape_q = shape if data.draw(st.integers(0, 7)) else (B + 1, width)
    p = data.draw(laid_out(shape, dtype))
    q = data.draw(laid_out(shape_q, dtype_q))
    if data.draw(st.integers(0, 9)) == 0:
        q = q.to("meta")
    critic = make_critic(kind, width, dtype, data.draw(st.integers(0, 100)))
    seed = data.draw(st.integers(0, 2**32))
    center = data.draw(st.sampled_from([1.0, 0.0, 2.5]))
    names = ("real", "fake") if op == "gradient_penalty" else ("p", "q")
    valid = (dtype.is_floating_point and dtype == dtype_q and p.shape == q.shape
             and p.device == q.device and p.dim() >= 2 and B > 0)
    shape_ok = len(shape) == 2 and shape[1] == width
    create_graph = data.draw(st.integers(0, 7)) == 0

    def run(fn):
        return fn(critic, p, q, center=center, generator=torch.Generator().manual_seed(seed))

    if op == "gradient_penalty":
        fn = lambda: run(wtc_ext.gradient_penalty)  # noqa: E731
    else:
        fn = lambda: run(lambda *a, **k: wtc_ext.critic_loss(*a, gp_weight=3.0, **k))  # noqa: E731
    if valid and not shape_ok:
        # inputs the critic may not take: then the critic's own error (torch's Linear here),
        # which cannot name our arguments; (B, 1, 1) into Linear(1, .) works
        try:
            fn()
        except ERRORS:
            pass
        return
    got = call(fn, *names)
    if not valid:
        assert is_error(got), f"accepted {dtype} {tuple(shape)} and {dtype_q} {tuple(shape_q)}"
        return
    assert not is_error(got), got[1]
    if op == "gradient_penalty":
        expected = run(ref.gradient_penalty_reference)
        loss = got
    else:
        expected, w1 = run(lambda *a, **k: ref.critic_loss_reference(*a, gp_weight=3.0, **k))
        loss = got.loss
        torch.testing.assert_close(got.w1, w1.detach(), equal_nan=True,
                                   **tolerances(dtype, p, q))
    if not finite(p, q):
        # README: non-finite inputs are not checked; the result is then whatever the arithmetic
        # gives (usually NaN or inf), never a crash
        return
    torch.testing.assert_close(loss.detach(), expected.detach(), equal_nan=True,
                               **tolerances(dtype, p, q))
    if create_graph and loss.requires_grad:
        params = list(critic.parameters())
        fused = kind != "tanh" and dtype in (torch.float32, torch.float64)
        res = call(lambda: torch.autograd.grad(loss, params, create_graph=True,
                                               allow_unused=True), "create_graph")
        assert is_error(res) == fused, res
        if fused:
            assert "create_graph=True" in str(res[1])


def tolerances(dtype, p, q):
    scale = max(magnitude(p, q), 1.0)
    eps = torch.finfo(dtype).eps
    return {"rtol": 1e3 * eps, "atol": 1e3 * eps * scale * scale}


def test_critic_integer_inputs_are_clear_errors():
    critic = torch.nn.Sequential(torch.nn.Linear(3, 1))
    x = torch.ones(4, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"gradient_penalty: expected real .*floating"):
        wtc_ext.gradient_penalty(critic, x, x.float())
    with pytest.raises(TypeError, match=r"gradient_penalty: expected fake .*floating"):
        wtc_ext.gradient_penalty(critic, x.float(), x.bool())
    with pytest.raises(TypeError, match=r"critic_loss: expected p .*floating"):
        wtc_ext.critic_loss(critic, x, x, gp_weight=1.0)


def test_critic_loss_create_graph_is_a_clear_error():
    critic = wtc_ext.nn.MLPCritic(3, hidden=(4,))
    p, q = torch.randn(5, 3), torch.randn(5, 3)
    loss = wtc_ext.critic_loss(critic, p, q, gp_weight=1.0).loss
    with pytest.raises(RuntimeError, match="does not support create_graph=True"):
        torch.autograd.grad(loss, list(critic.parameters()), create_graph=True)
    # the plain backward is unchanged
    wtc_ext.critic_loss(critic, p, q, gp_weight=1.0).loss.backward()
    assert all(t.grad is not None for t in critic.parameters())


def make_stacked_critic(kind, runs, width, dtype, seed):
    torch.manual_seed(seed)
    if kind == "fused":
        critic = wtc_ext.nn.StackedMLPCritic(runs, width, hidden=(4, 3))
    else:
        critic = torch.nn.Sequential(wtc_ext.nn.StackedLinear(runs, width, 4), torch.nn.Tanh(),
                                     wtc_ext.nn.StackedLinear(runs, 4, 1))
    return critic.to(dtype if dtype.is_floating_point else torch.float32)


def unstacked(critic, kind, r):
    """Run r of a stacked critic as a single critic."""
    if kind == "fused":
        return critic.critic(r)
    return torch.nn.Sequential(critic[0].unstack(r), torch.nn.Tanh(), critic[2].unstack(r))


@FUZZ
@given(st.data())
def test_fuzz_stacked_critic(data):
    """Stacked critics (R runs): every case equals the R single reference calls run by run (with
    one generator per run) or the stacked reference (one generator or the global one), or is a
    clear error naming an argument."""
    op = data.draw(st.sampled_from(["gradient_penalty", "critic_loss"]))
    kind = data.draw(st.sampled_from(["fused", "fused", "tanh"]))
    runs = data.draw(st.integers(1, 3))
    R = runs if data.draw(st.integers(0, 7)) else data.draw(st.integers(0, 4))
    B, width = data.draw(st.integers(0, 5)), data.draw(st.integers(1, 4))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64] * 3 + FLOATS + OTHERS))
    dtype_q = dtype if data.draw(st.integers(0, 7)) else data.draw(any_dtype())
    shape = (R, B, width) if data.draw(st.integers(0, 7)) else data.draw(st.sampled_from(
        [(B, width), (R, B, width, 1), (R, B, width + 1)]))
    shape_q = shape if data.draw(st.integers(0, 7)) else (R, B + 1, width)
    p = data.draw(laid_out(shape, dtype))
    q = data.draw(laid_out(shape_q, dtype_q))
    if data.draw(st.integers(0, 9)) == 0:
        q = q.to("meta")
    critic = make_stacked_critic(kind, runs, width, dtype, data.draw(st.integers(0, 100)))
    gen_kind = data.draw(st.sampled_from(["none", "one", "list", "list", "short"]))
    seeds = [data.draw(st.integers(0, 2**32)) for _ in range(runs)]

    def generator():
        if gen_kind == "one":
            return torch.Generator().manual_seed(seeds[0])
        if gen_kind in ("list", "short"):
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            return gens[:-1] if gen_kind == "short" else gens
        return None

    center = data.draw(st.sampled_from([1.0, 0.0, 2.5]))
    names = ("real", "fake") if op == "gradient_penalty" else ("p", "q")
    valid = (dtype.is_floating_point and dtype == dtype_q and p.shape == q.shape
             and p.device == q.device and p.dim() == 3 and R == runs and B > 0
             and gen_kind != "short")
    shape_ok = p.dim() == 3 and p.shape[-1] == width
    if gen_kind == "short":
        names = names + ("generator",)

    def run():
        torch.manual_seed(11)
        if op == "gradient_penalty":
            return wtc_ext.gradient_penalty(critic, p, q, center=center, generator=generator())
        return wtc_ext.critic_loss(critic, p, q, gp_weight=3.0, center=center,
                                   generator=generator())

    if valid and not shape_ok:
        # a width the fused path refuses naming p, or the module's own error
        try:
            run()
        except ERRORS:
            pass
        return
    got = call(run, *names)
    if not valid:
        assert is_error(got), f"accepted {dtype} {tuple(shape)} and {dtype_q} {tuple(shape_q)}"
        return
    assert not is_error(got), got[1]
    loss = got if op == "gradient_penalty" else got.loss
    assert loss.shape == (runs,)
    if not finite(p, q):
        return  # as for one critic: whatever the arithmetic gives, never a crash
    if gen_kind == "list":  # the contract: run r equals the single reference call
        expected, w1 = [], []
        for r in range(runs):
            g = torch.Generator().manual_seed(seeds[r])
            single = unstacked(critic, kind, r)
            if op == "gradient_penalty":
                expected.append(ref.gradient_penalty_reference(single, p[r], q[r], center=center,
                                                               generator=g).detach())
            else:
                e, w = ref.critic_loss_reference(single, p[r], q[r], gp_weight=3.0,
                                                 center=center, generator=g)
                expected.append(e.detach())
                w1.append(w.detach())
        expected = torch.stack(expected)
        w1 = torch.stack(w1) if w1 else None
    else:
        torch.manual_seed(11)
        gp_weight = 1.0 if op == "gradient_penalty" else 3.0
        e, w = ref.stacked_critic_loss_reference(critic, p, q, gp_weight=gp_weight,
                                                 center=center, generator=generator())
        # (loss = gp_weight * gp - w1: the penalty alone is loss + w1 at weight 1)
        expected = (e + w).detach() if op == "gradient_penalty" else e.detach()
        w1 = w.detach()
    torch.testing.assert_close(loss.detach(), expected, equal_nan=True, **tolerances(dtype, p, q))
    if op == "critic_loss":
        torch.testing.assert_close(got.w1, w1, equal_nan=True, **tolerances(dtype, p, q))


# ----------------------------------------------------------------------------------------------
# conditional_wasserstein


def label_tensor(draw, N, K):
    kind = draw(st.sampled_from(["small", "small", "offset", "sparse", "int64_ends",
                                 "uint64_high", "narrow", "small", "offset", "sparse",
                                 "int64_ends", "uint64_high", "narrow", "float", "bool"]))
    shape = (N,) if K is None else (N, K)
    g = np.random.default_rng(draw(st.integers(0, 2**32)))
    if kind == "small":
        return torch.from_numpy(g.integers(0, draw(st.integers(1, 4)), shape))
    if kind == "offset":
        return torch.from_numpy(g.integers(-3, 3, shape) + draw(st.integers(-2**62, 2**62)))
    if kind == "sparse":
        return torch.from_numpy(g.integers(0, 3, shape) * draw(st.integers(1, 2**40)))
    if kind == "int64_ends":
        lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        return torch.from_numpy(g.choice(np.array([lo, lo + 1, 0, hi - 1, hi]), shape))
    if kind == "uint64_high":
        top = np.iinfo(np.uint64).max
        choices = np.array([0, 1, 2**63 - 1, 2**63, 2**63 + 1, top], dtype=np.uint64)
        return torch.from_numpy(g.choice(choices, shape))
    if kind == "narrow":
        dtype = draw(st.sampled_from([np.int8, np.uint8, np.int16, np.int32, np.uint32]))
        info = np.iinfo(dtype)
        return torch.from_numpy(g.choice(np.array([info.min, 0, 1, info.max], dtype=dtype),
                                          shape))
    if kind == "float":
        return torch.from_numpy(g.integers(0, 3, shape)).double()
    return torch.from_numpy(g.integers(0, 2, shape)).bool()


def scipy_conditional(z, labels, reference):
    """W (d, K, C) by scipy: classes are each factor's distinct values in increasing order."""
    z = z.double().numpy()
    lab = labels.numpy()
    if lab.ndim == 1:
        lab = lab[:, None]
    r = None if reference is None else reference.double().numpy()
    N, d = z.shape
    K = lab.shape[1]
    classes = [np.unique(lab[:, k]) for k in range(K)]  # numpy: exact for uint64 too
    C = max([len(c) for c in classes] + [1])
    out = np.full((d, K, C), np.nan)
    for j in range(d):
        for k in range(K):
            for c, value in enumerate(classes[k]):
                rows = lab[:, k] == value
                other = z[:, j] if r is None else r[rows, j]
                out[j, k, c] = wasserstein_distance(z[rows, j], other)
    return torch.from_numpy(out)


@FUZZ
@given(st.data())
def test_fuzz_conditional_wasserstein(data):
    N, d = data.draw(st.integers(0, 9)), data.draw(st.integers(0, 3))
    K = data.draw(st.sampled_from([None, 1, 2]))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64] * 6 + FLOATS + OTHERS))
    z = data.draw(laid_out((N, d), dtype, special=data.draw(st.integers(0, 3)) == 0))
    if data.draw(st.integers(0, 11)) == 0:
        z = z.reshape(-1)
    labels = label_tensor(data.draw, N if data.draw(st.integers(0, 11)) else N + 1, K)
    mode = data.draw(st.sampled_from(["none", "tensor", "index", "permuted"] * 3 +
                                     ["bad_string", "bad_index", "complex_ref"]))
    reference = reference_index = generator = None
    if mode == "tensor":
        reference = data.draw(laid_out((N, d), dtype if not dtype.is_complex else
                                       torch.float64))
    elif mode == "complex_ref":
        reference = data.draw(values((N, d), torch.complex64))
    elif mode in ("index", "bad_index"):
        reference_index = torch.stack([torch.randperm(N) for _ in range(d)], 1) if d else \
            torch.zeros(N, 0, dtype=torch.int64)
        if mode == "bad_index" and N >= 2 and d:
            reference_index[0, 0] = reference_index[1, 0]
    elif mode in ("permuted", "bad_string"):
        reference = "permuted" if mode == "permuted" else "shuffled"
    seed = data.draw(st.one_of(st.none(), st.integers(0, 2**32)))
    if seed is not None and mode == "permuted":
        generator = torch.Generator().manual_seed(seed)
    scale = data.draw(st.booleans())
    meta = data.draw(st.sampled_from([None] * 16 + ["z", "labels", "reference"]))
    if meta == "z":
        z = z.to("meta")
    elif meta == "labels":
        labels = labels.to("meta")
    elif meta == "reference" and isinstance(reference, torch.Tensor):
        reference = reference.to("meta")
    else:
        meta = None

    valid = (z.dim() == 2 and not dtype.is_complex and labels.shape[0] == N and
             not labels.dtype.is_floating_point and labels.dtype != torch.bool and
             mode not in ("bad_string", "complex_ref") and meta is None and
             (mode != "bad_index" or N < 2 or not d))
    torch.manual_seed(7)
    got = call(lambda: wtc_ext.conditional_wasserstein(
        z, labels, reference, reference_index=reference_index, generator=generator,
        scale_by_range=scale), "z", "labels", "reference", "reference_index", "generator")
    if valid and not finite(z, reference if isinstance(reference, torch.Tensor) else None):
        assert is_error(got) and "NaN or infinite" in str(got[1])  # documented: an error
        return
    if not valid:
        assert is_error(got), "accepted invalid conditional_wasserstein arguments"
        return
    assert not is_error(got), got[1]
    zc = z if z.dtype in (torch.float32, torch.float64) else z.double() if not \
        z.dtype.is_floating_point else z.float()
    if mode == "permuted":
        torch.manual_seed(7)
        r = wtc_ext.permute_dims(zc, generator=None if seed is None else
                                 torch.Generator().manual_seed(seed))
    elif mode == "index":
        r = zc.gather(0, reference_index)
    else:
        r = None if reference is None else reference.to(zc.dtype)
    expected = scipy_conditional(zc, labels, r)
    if scale and N:
        span = zc.double().amax(0) - zc.double().amin(0)
        span = torch.where(span > 0, span, torch.ones_like(span))
        expected = expected / span.view(-1, 1, 1)
    if K is None:
        expected = expected[:, 0]
    assert got.shape == expected.shape, (got.shape, expected.shape)
    eps = torch.finfo(got.dtype).eps
    mag = magnitude(zc)
    if scale:
        mag = 1.0
    torch.testing.assert_close(got.double(), expected.to(got.dtype).double(), rtol=64 * eps,
                               atol=64 * eps * mag + 1e-300, equal_nan=True)


def test_conditional_labels_extreme_values():
    """uint64 labels >= 2^63 keep their order, and int64 labels at both ends of the range give
    the right classes (they once overflowed high - low)."""
    z = torch.arange(6, dtype=torch.float64).view(6, 1)
    high = torch.tensor([2**63, 2**63 + 5, 1, 1, 2**64 - 1, 2**63], dtype=torch.uint64)
    got = wtc_ext.conditional_wasserstein(z, high)
    expected = scipy_conditional(z, high, None)[:, 0]
    torch.testing.assert_close(got, expected)
    info = torch.iinfo(torch.int64)
    ends = torch.tensor([info.min, info.max, info.min, 0, info.max, info.max])
    got = wtc_ext.conditional_wasserstein(z, ends)
    torch.testing.assert_close(got, scipy_conditional(z, ends, None)[:, 0])


def test_size_checks_come_first():
    """An expanded input (stride 0) with more samples than the CPU kernels index is refused
    before anything the size of it is allocated."""
    huge = torch.zeros(1).expand(2**31)
    with pytest.raises(ValueError, match="2\\^31 - 1 samples"):
        wtc_ext.wasserstein_1d(huge, torch.zeros(3))
    with pytest.raises(ValueError, match="2\\^31 - 1 samples"):
        # an integer input is cast to float64 only after the check
        wtc_ext.wasserstein_1d(torch.zeros(1, dtype=torch.int64).expand(2**31), torch.zeros(3))
    with pytest.raises(ValueError, match="2\\^31 - 1 samples"):
        torch.ops.wtc_ext.wasserstein_1d.default(huge.view(1, -1), torch.zeros(1, 3))
    z = torch.zeros(1, 1).expand(2**31, 1)
    with pytest.raises(ValueError, match="2\\^31 - 1 rows"):
        wtc_ext.conditional_wasserstein(z, torch.zeros(1, dtype=torch.int64).expand(2**31))
    with pytest.raises(ValueError, match="2\\^31 - 1 rows"):
        torch.ops.wtc_ext.conditional_wasserstein.default(
            z, torch.zeros(1, 1, dtype=torch.int64).expand(2**31, 1), None, None, 1)


def test_critic_op_meta_mix_is_an_error():
    """The op itself with one meta tensor among CPU ones (its fake kernel serves the meta
    device) raises instead of returning uninitialised memory."""
    p, w, b = torch.randn(4, 3), torch.randn(1, 3), torch.randn(1)
    for args in [(p, p.to("meta"), torch.rand(4), [w], [b]),
                 (p.to("meta"), p, torch.rand(4, device="meta"), [w], [b]),
                 (p, p, torch.rand(4), [w.to("meta")], [b])]:
        with pytest.raises(ValueError, match=r"\b(q|alpha|weights|p)\b.*device"):
            torch.ops.wtc_ext.mlp_critic_loss.default(*args, 1.0, 1.0, 1.0, False)
