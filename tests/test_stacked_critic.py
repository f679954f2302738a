"""Stacked critics (R runs in one call): wtc_ext::stacked_mlp_critic_loss, StackedLinear and
StackedMLPCritic, against R single calls, the pure-PyTorch reference and autograd."""

from unittest import mock

import pytest
import torch
from torch import nn

import wtc_ext
import wtc_ext.ops
from wtc_ext.nn import MLPCritic, StackedLinear, StackedMLPCritic
from wtc_ext.ops import stacked_mlp_layers
from wtc_ext.reference import (critic_loss_reference, stacked_critic_loss_reference,
                               stacked_mlp_critic_loss_reference)

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def gens(device, R, base=100):
    return [torch.Generator(device=device).manual_seed(base + r) for r in range(R)]


def make_critics(R, d, hidden, device, dtype, seed=0):
    critics = []
    for r in range(R):
        torch.manual_seed(seed + r)  # each run its own seed, as stacked training does
        critics.append(MLPCritic(d, hidden).to(device=device, dtype=dtype))
    return critics


def inputs(R, B, d, device, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(R, B, d, generator=g, dtype=dtype).to(device).requires_grad_(True)
    q = (torch.randn(R, B, d, generator=g, dtype=dtype) * 2 + 0.5).to(device).requires_grad_(True)
    return p, q


def close(a, b, dtype):
    scale = max(b.detach().abs().max().item(), 1.0) if b.numel() else 1.0
    tol = TOL[dtype]
    torch.testing.assert_close(a.detach(), b.detach(), rtol=tol["rtol"], atol=tol["atol"] * scale)


def no_fallback():
    """Fails the test if the stacked path falls back to autograd through the module."""
    return mock.patch.object(StackedLinear, "forward", side_effect=AssertionError("fallback"))


def single_results(critics, p, q, device, op, base=100, **kw):
    """R single calls (each on its own copies of p[r], q[r]): values and gradients per run."""
    out = []
    for r, critic in enumerate(critics):
        pr = p[r].detach().clone().requires_grad_(True)
        qr = q[r].detach().clone().requires_grad_(True)
        g = torch.Generator(device=device).manual_seed(base + r)
        if op == "critic_loss":
            res = wtc_ext.critic_loss(critic, pr, qr, generator=g, **kw)
            loss, w1, gp = res
        else:
            loss = wtc_ext.gradient_penalty(critic, pr, qr, generator=g, **kw)
            w1 = gp = None
        loss.backward()
        grads = [t.grad.clone() for t in critic.parameters()]
        critic.zero_grad(set_to_none=True)
        out.append((loss.detach(), w1, gp, grads, pr.grad, qr.grad))
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("hidden,R,B", [((256, 256, 256), 3, 64), ((7,), 4, 5), ((), 2, 3),
                                        ((8, 64, 16), 3, 150), ((32, 16), 1, 33)])
@pytest.mark.parametrize("op", ["critic_loss", "gradient_penalty"])
def test_stacked_equals_single_calls(device, dtype, hidden, R, B, op):
    """The contract: run r of one stacked call equals the single call on run r's critic with the
    same generator state, values and every gradient (p and q included)."""
    d = 10
    critics = make_critics(R, d, hidden, device, dtype)
    stacked = StackedMLPCritic.from_critics(critics)
    p, q = inputs(R, B, d, device, dtype)
    kw = dict(gp_weight=4.0, center=1.0) if op == "critic_loss" else dict(center=0.7)
    with no_fallback():
        if op == "critic_loss":
            loss, w1, gp = wtc_ext.critic_loss(stacked, p, q, generator=gens(device, R), **kw)
        else:
            loss = wtc_ext.gradient_penalty(stacked, p, q, generator=gens(device, R), **kw)
    assert loss.shape == (R,) and loss.requires_grad
    loss.sum().backward()
    expected = single_results(critics, p, q, device, op, **kw)
    params = list(stacked.parameters())
    for r, (loss_r, w1_r, gp_r, grads, gp_grad, gq_grad) in enumerate(expected):
        close(loss[r], loss_r, dtype)
        if op == "critic_loss":
            close(w1[r], w1_r, dtype)
            close(gp[r], gp_r, dtype)
        for param, g in zip(params, grads):
            close(param.grad[r], g, dtype)
        close(p.grad[r], gp_grad, dtype)
        close(q.grad[r], gq_grad, dtype)


@pytest.mark.parametrize("w1_weight", [1.0, 0.0])
def test_op_matches_pure_pytorch_reference(device, w1_weight):
    torch.manual_seed(3)
    R, B, d, dtype = 3, 20, 6, torch.float64
    stacked = StackedMLPCritic(R, d, (9, 5)).to(device=device, dtype=dtype)
    weights, biases = stacked_mlp_layers(stacked)
    p, q = inputs(R, B, d, device, dtype)
    alpha = torch.rand(R, B, device=device, dtype=dtype)
    loss, w1, gp, gw, gb, gpp, gqq = torch.ops.wtc_ext.stacked_mlp_critic_loss(
        p, q, alpha, weights, biases, w1_weight, 4.0, 1.0, True)
    ref_loss, ref_w1, ref_gp = stacked_mlp_critic_loss_reference(
        p, q, alpha, weights, biases, w1_weight, 4.0, 1.0)
    close(loss, ref_loss, dtype)
    close(gp, ref_gp, dtype)
    if w1_weight:
        close(w1, ref_w1, dtype)
    else:
        assert torch.equal(w1, torch.zeros_like(w1))
    ref_grads = torch.autograd.grad(ref_loss.sum(), [*weights, *biases, p, q], allow_unused=True)
    for got, want in zip([*gw, *gb, gpp, gqq], ref_grads):
        close(got, torch.zeros_like(got) if want is None else want, dtype)


def test_matches_module_reference_with_one_generator(device):
    """One generator draws torch.rand(R, B) for all runs (the reference draws the same)."""
    R, B, d, dtype = 4, 16, 10, torch.float64
    torch.manual_seed(0)
    stacked = StackedMLPCritic(R, d, (32, 32)).to(device=device, dtype=dtype)
    p, q = inputs(R, B, d, device, dtype)
    g = torch.Generator(device=device)
    out = wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0, generator=g.manual_seed(5))
    out.loss.sum().backward()
    fused = [t.grad.clone() for t in stacked.parameters()]
    stacked.zero_grad(set_to_none=True)
    loss, w1 = stacked_critic_loss_reference(stacked, p, q, gp_weight=4.0,
                                             generator=g.manual_seed(5))
    loss.sum().backward()
    close(out.loss, loss, dtype)
    close(out.w1, w1, dtype)
    for a, b in zip(fused, stacked.parameters()):
        close(a, b.grad, dtype)
    # the global generator: reproducible from the global seed
    torch.manual_seed(9)
    a = wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0).loss
    torch.manual_seed(9)
    assert torch.equal(a, wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0).loss)


def test_gradcheck(device):
    torch.manual_seed(4)
    R, B, d = 2, 5, 3
    stacked = StackedMLPCritic(R, d, (6, 4)).to(device=device, dtype=torch.float64)
    weights, biases = stacked_mlp_layers(stacked)
    weights = [w.detach().clone().requires_grad_(True) for w in weights]
    biases = [b.detach().clone().requires_grad_(True) for b in biases]
    p, q = inputs(R, B, d, device, torch.float64)
    alpha = torch.rand(R, B, device=device, dtype=torch.float64)
    L = len(weights)

    def fn(p, q, *params):
        return torch.ops.wtc_ext.stacked_mlp_critic_loss(
            p, q, alpha, list(params[:L]), list(params[L:]), 1.0, 4.0, 1.0, True)[0]

    assert torch.autograd.gradcheck(fn, (p, q, *weights, *biases))


@pytest.mark.parametrize("compute_grads", [True, False])
def test_opcheck(device, compute_grads):
    torch.manual_seed(5)
    R, B, d = 3, 7, 5
    stacked = StackedMLPCritic(R, d, (8, 6)).to(device)
    weights, biases = stacked_mlp_layers(stacked)
    p, q = torch.randn(R, B, d, device=device), torch.randn(R, B, d, device=device)
    alpha = torch.rand(R, B, device=device)
    if not compute_grads:
        weights = [w.detach() for w in weights]
        biases = [b.detach() for b in biases]
    for w1_weight in (0.0, 1.0):
        torch.library.opcheck(torch.ops.wtc_ext.stacked_mlp_critic_loss.default,
                              (p, q, alpha, weights, biases, w1_weight, 4.0, 1.0, compute_grads))


def test_runs_are_isolated(device):
    """A NaN in one run's input (or parameters) stays in that run: the other runs' values and
    gradients equal their single calls."""
    R, B, d, dtype = 3, 12, 4, torch.float64
    critics = make_critics(R, d, (16, 8), device, dtype)
    stacked = StackedMLPCritic.from_critics(critics)
    p, q = inputs(R, B, d, device, dtype)
    with torch.no_grad():
        p[1, 3, 2] = float("nan")
        stacked[2].bias[0, 0] = float("nan")  # and a NaN parameter in run 0's second layer
    critics[0][2].bias.data[0] = float("nan")
    out = wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0, generator=gens(device, R))
    out.loss.sum().backward()
    assert torch.isnan(out.loss[0]) and torch.isnan(out.loss[1])
    assert torch.isfinite(out.loss[2])
    expected = single_results(critics, p, q, device, "critic_loss", gp_weight=4.0)
    close(out.loss[2], expected[2][0], dtype)
    for param, g in zip(stacked.parameters(), expected[2][3]):
        assert torch.isfinite(param.grad[2]).all()
        close(param.grad[2], g, dtype)
    close(p.grad[2], expected[2][4], dtype)


def test_backward_scales_each_run(device):
    """The incoming gradient scales each run's gradients by its own entry; a retained graph can be
    differentiated twice, a freed one is a clear error."""
    R, B, d, dtype = 3, 8, 5, torch.float64
    torch.manual_seed(6)
    stacked = StackedMLPCritic(R, d, (12,)).to(device=device, dtype=dtype)
    p, q = inputs(R, B, d, device, dtype)

    def grads_of(seed_fn, **kw):
        stacked.zero_grad(set_to_none=True)
        loss = wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0, generator=gens(device, R)).loss
        seed_fn(loss).backward(**kw)
        return [t.grad.clone() for t in stacked.parameters()], loss

    base, _ = grads_of(lambda loss: loss.sum())
    scale = torch.tensor([2.0, 0.0, -0.5], device=device, dtype=dtype)
    scaled, _ = grads_of(lambda loss: (loss * scale).sum())
    for a, b in zip(scaled, base):
        close(a, b * scale.view(-1, *([1] * (b.dim() - 1))), dtype)
    only_first, _ = grads_of(lambda loss: loss[0])
    for a, b in zip(only_first, base):
        close(a[0], b[0], dtype)
        assert torch.equal(a[1:], torch.zeros_like(a[1:]))
    stacked.zero_grad(set_to_none=True)
    loss = wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0, generator=gens(device, R)).loss
    loss.sum().backward(retain_graph=True)
    loss.sum().backward()
    for a, b in zip(stacked.parameters(), base):
        close(a.grad, 2 * b, dtype)
    for seed in (torch.ones(R, device=device, dtype=dtype),  # handed over as they are
                 torch.arange(1.0, R + 1, device=device, dtype=dtype)):  # scaled first
        loss = wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0).loss
        loss.backward(seed)
        with pytest.raises(RuntimeError, match="second time"):
            loss.backward(seed)
    loss = wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0).loss
    with pytest.raises(RuntimeError, match="create_graph=True"):
        torch.autograd.grad(loss.sum(), list(stacked.parameters()), create_graph=True)


def test_no_grad_gives_values(device):
    R, B, d = 2, 9, 4
    torch.manual_seed(7)
    stacked = StackedMLPCritic(R, d, (8,)).to(device)
    p, q = torch.randn(R, B, d, device=device), torch.randn(R, B, d, device=device)
    with torch.no_grad():
        out = wtc_ext.critic_loss(stacked, p, q, gp_weight=4.0, generator=gens(device, R))
    assert not out.loss.requires_grad and out.loss.shape == (R,)
    loss, _ = stacked_critic_loss_reference(stacked, p, q, gp_weight=4.0,
                                            generator=gens(device, R))
    close(out.loss, loss, torch.float32)


def test_non_fused_inputs_fall_back_with_the_same_results(device):
    """Other activations, float16-free fallbacks (non-fused stacks) and non-contiguous inputs:
    the same values as the fused path or the per-run reference."""
    R, B, d, dtype = 3, 10, 4, torch.float64
    torch.manual_seed(8)
    # a stack the fused op does not handle: autograd through the module, per run
    tanh = nn.Sequential(StackedLinear(R, d, 8), nn.Tanh(), StackedLinear(R, 8, 1)).to(
        device=device, dtype=dtype)
    assert stacked_mlp_layers(tanh) is None
    p, q = inputs(R, B, d, device, dtype)
    out = wtc_ext.critic_loss(tanh, p, q, gp_weight=4.0, generator=gens(device, R))
    assert out.loss.shape == (R,)
    out.loss.sum().backward()
    for r in range(R):
        single = nn.Sequential(tanh[0].unstack(r), nn.Tanh(), tanh[2].unstack(r))
        g = torch.Generator(device=device).manual_seed(100 + r)
        loss, w1 = critic_loss_reference(single, p[r].detach(), q[r].detach(), gp_weight=4.0,
                                         generator=g)
        close(out.loss[r], loss, dtype)
        close(out.w1[r], w1, dtype)
        loss.backward()
        close(tanh[0].weight.grad[r], single[0].weight.grad, dtype)
    # non-contiguous inputs take the fused path with the contiguous result
    stacked = StackedMLPCritic(R, d, (8, 8)).to(device=device, dtype=dtype)
    pt = p.detach().transpose(0, 1).contiguous().transpose(0, 1)
    assert not pt.is_contiguous()
    with no_fallback():
        a = wtc_ext.critic_loss(stacked, pt, q.detach(), gp_weight=4.0, generator=gens(device, R))
    b = wtc_ext.critic_loss(stacked, p.detach(), q.detach(), gp_weight=4.0,
                            generator=gens(device, R))
    close(a.loss, b.loss, dtype)
    # a user stack without biases is fused with zero biases
    nobias = nn.Sequential(StackedLinear(R, d, 8, bias=False), nn.ReLU(),
                           StackedLinear(R, 8, 1)).to(device=device, dtype=dtype)
    assert stacked_mlp_layers(nobias) is not None
    with no_fallback():
        fused = wtc_ext.gradient_penalty(nobias, p.detach(), q.detach(),
                                         generator=gens(device, R))
    loss_ref = torch.stack([
        wtc_ext.gradient_penalty(nn.Sequential(nobias[0].unstack(r), nn.ReLU(),
                                               nobias[2].unstack(r)), p[r].detach(),
                                 q[r].detach(), generator=gens(device, R)[r])
        for r in range(R)])
    close(fused, loss_ref, dtype)


def test_bad_inputs_are_clear_errors(device):
    R, B, d = 3, 4, 5
    stacked = StackedMLPCritic(R, d, (6,)).to(device)
    p = torch.randn(R, B, d, device=device)
    with pytest.raises(ValueError, match=r"\bp\b must have shape \(R, B, d\) = \(3, B, d\)"):
        wtc_ext.critic_loss(stacked, p[0], p[0], gp_weight=1.0)  # wrong rank
    with pytest.raises(ValueError, match=r"\breal\b must have shape"):
        wtc_ext.gradient_penalty(stacked, p[:2], p[:2])  # R mismatch
    with pytest.raises(ValueError, match=r"\bp\b must have shape"):
        wtc_ext.critic_loss(stacked, p[:0], p[:0], gp_weight=1.0)  # R = 0
    with pytest.raises(ValueError, match="at least one sample per run"):
        wtc_ext.critic_loss(stacked, p[:, :0], p[:, :0], gp_weight=1.0)  # B = 0
    with pytest.raises(ValueError, match=r"p and q must have the same shape"):
        wtc_ext.critic_loss(stacked, p, p[:, :2], gp_weight=1.0)
    with pytest.raises(ValueError, match=r"takes 5 features"):
        wtc_ext.critic_loss(stacked, p[..., :4], p[..., :4], gp_weight=1.0)
    with pytest.raises(TypeError, match=r"\bq\b to have a floating-point dtype"):
        wtc_ext.critic_loss(stacked, p, p.long(), gp_weight=1.0)
    with pytest.raises(ValueError, match="one generator per run"):
        wtc_ext.critic_loss(stacked, p, p, gp_weight=1.0, generator=gens(device, 2))
    with pytest.raises(TypeError, match="generator"):
        wtc_ext.critic_loss(stacked, p, p, gp_weight=1.0, generator=[1, 2, 3])
    # the op itself names the argument
    weights, biases = stacked_mlp_layers(stacked)
    alpha = torch.rand(R, B, device=device)
    op = torch.ops.wtc_ext.stacked_mlp_critic_loss.default
    cases = [
        ((p[0], p[0], alpha, weights, biases), r"expected p \(real\) of shape \(R, B, d\)"),
        ((p[:2], p[:2], alpha[:2], weights, biases), r"weights\[0\] must have shape \(R, out, in\)"),
        ((p[:0], p[:0], alpha[:0], weights, biases), "at least one run"),
        ((p[:, :0], p[:, :0], alpha[:, :0], weights, biases), "at least one row"),
        ((p, p, alpha[:, :2], weights, biases), r"alpha of shape \(R, B\)"),
        ((p, p, alpha, weights, [biases[0][:, :2], biases[1]]), r"biases\[0\] must have shape"),
        ((p, p, alpha, weights, biases[:1]), "as many biases as weights"),
        ((p.double(), p.double(), alpha.double(), weights, biases), r"weights\[0\] must be on"),
        ((p.long(), p.long(), alpha, weights, biases), "float32 or float64"),
        ((p, p, alpha, weights[:1], biases[:1]), r"last layer .* one output"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            op(*args, 1.0, 1.0, 1.0, False)
    meta = [(p, p.to("meta"), alpha, weights, biases), (p, p, alpha, [weights[0].to("meta"),
                                                                      weights[1]], biases)]
    for args in meta:
        with pytest.raises(ValueError, match=r"\b(q|weights)\b.*device"):
            op(*args, 1.0, 1.0, 1.0, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for a second device")
def test_device_mismatch_is_a_clear_error():
    stacked = StackedMLPCritic(2, 3, (4,))
    p = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="same device"):
        wtc_ext.critic_loss(stacked, p, p.cuda(), gp_weight=1.0)
    weights, biases = stacked_mlp_layers(stacked)
    with pytest.raises(ValueError, match=r"weights\[0\] must be on"):
        torch.ops.wtc_ext.stacked_mlp_critic_loss(p.cuda(), p.cuda(), torch.rand(2, 4).cuda(),
                                                  weights, [b.cuda() for b in biases],
                                                  1.0, 1.0, 1.0, False)


# ----------------------------------------------------------------------------------------------
# StackedLinear and StackedMLPCritic


def test_stacked_linear_initialises_like_linears():
    torch.manual_seed(11)
    stacked = StackedLinear(3, 7, 5)
    torch.manual_seed(11)
    linears = [nn.Linear(7, 5) for _ in range(3)]
    for r, lin in enumerate(linears):
        assert torch.equal(stacked.weight[r], lin.weight)
        assert torch.equal(stacked.bias[r], lin.bias)
    x = torch.randn(3, 4, 2, 7)  # (R, *, in)
    out = stacked(x)
    assert out.shape == (3, 4, 2, 5)
    for r, lin in enumerate(linears):
        torch.testing.assert_close(out[r], lin(x[r]))
    nobias = StackedLinear(2, 3, 4, bias=False)
    assert nobias.bias is None and nobias(torch.randn(2, 6, 3)).shape == (2, 6, 4)
    with pytest.raises(ValueError, match="runs"):
        StackedLinear(0, 3, 4)
    with pytest.raises(ValueError, match=r"\(R, \.\.\., in\) = \(3, \.\.\., 7\)"):
        stacked(torch.randn(2, 4, 7))


def test_stacked_linear_round_trip():
    linears = [nn.Linear(4, 3, dtype=torch.float64) for _ in range(5)]
    stacked = StackedLinear.from_linears(linears)
    assert stacked.weight.shape == (5, 3, 4) and stacked.bias.shape == (5, 3)
    assert stacked.weight.dtype == torch.float64
    for r, lin in enumerate(linears):
        back = stacked.unstack(r)
        assert type(back) is nn.Linear
        assert torch.equal(back.weight, lin.weight) and torch.equal(back.bias, lin.bias)
    with pytest.raises(ValueError, match="same shape"):
        StackedLinear.from_linears([nn.Linear(4, 3), nn.Linear(4, 2)])
    with pytest.raises(ValueError, match="non-empty"):
        StackedLinear.from_linears([])
    with pytest.raises(IndexError, match="run 5"):
        stacked.unstack(5)


def test_stacked_critic_state_dict_and_round_trip():
    critics = make_critics(4, 10, (256, 256, 256), "cpu", torch.float32)
    stacked = StackedMLPCritic.from_critics(critics)
    sd = stacked.state_dict()
    assert list(sd) == list(critics[0].state_dict())
    for r, critic in enumerate(critics):
        for k, v in critic.state_dict().items():
            assert torch.equal(sd[k][r], v)
        back = stacked.critic(r)
        assert type(back) is MLPCritic and back.hidden == (256, 256, 256)
        for k, v in back.state_dict().items():
            assert torch.equal(v, critic.state_dict()[k])
    x = torch.randn(4, 6, 10)
    out = stacked(x)
    assert out.shape == (4, 6, 1)
    for r, critic in enumerate(critics):
        torch.testing.assert_close(out[r], critic(x[r]))
    # a fresh stack loads the same state dict; R MLPCritics created in turn under one seed equal
    # a StackedMLPCritic created under that seed
    torch.manual_seed(3)
    fresh = StackedMLPCritic(4, 10)
    torch.manual_seed(3)
    singles = [MLPCritic(10) for _ in range(4)]
    for r, critic in enumerate(singles):
        for k, v in critic.state_dict().items():
            assert torch.equal(fresh.state_dict()[k][r], v)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(x), out)
    state = torch.random.get_rng_state()
    stacked.critic(0)  # copying a run does not consume random numbers
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(ValueError, match="same layer shapes"):
        StackedMLPCritic.from_critics([MLPCritic(10, (4,)), MLPCritic(10, (5,))])
    with pytest.raises(ValueError, match="MLPCritic"):
        StackedMLPCritic.from_critics([nn.Sequential(nn.Linear(3, 1), nn.Tanh())])
    with pytest.raises(ValueError, match="runs"):
        StackedMLPCritic(0, 10)
    assert wtc_ext.StackedMLPCritic is StackedMLPCritic and wtc_ext.StackedLinear is StackedLinear
