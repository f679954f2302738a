"""wtc_ext.gradient_penalty / critic_loss against the autograd double-backward reference."""

import os
import subprocess
import sys
import textwrap
from unittest import mock

import pytest
import torch
from torch import nn

import wtc_ext
import wtc_ext.ops
from wtc_ext.nn import MLPCritic
from wtc_ext.ops import mlp_layers
from wtc_ext.reference import critic_loss_reference, gradient_penalty_reference

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6)}


def gen(device, seed=0):
    return torch.Generator(device=device).manual_seed(seed)


def param_grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in module.parameters()]


def make_critic(kind, in_features, device, dtype):
    torch.manual_seed(0)
    if kind == "mlp":
        critic = MLPCritic(in_features)
    elif kind == "shallow":
        critic = MLPCritic(in_features, hidden=(7,))
    elif kind == "linear":
        critic = MLPCritic(in_features, hidden=())
    elif kind == "deep":
        critic = MLPCritic(in_features, hidden=(32, 16, 8, 4, 2))
    elif kind == "widening":  # a hidden layer wider than its input (the CPU kernel transposes)
        critic = MLPCritic(in_features, hidden=(8, 64, 16))
    elif kind == "user":
        critic = nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(inplace=True),
                               nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 1))
    else:
        raise ValueError(kind)
    return critic.to(device=device, dtype=dtype)


def assert_close(actual, expected, dtype):
    scale = max(expected.abs().max().item(), 1.0) if expected.numel() else 1.0
    tol = TOL[dtype]
    torch.testing.assert_close(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def compare_penalty(critic, real, fake, dtype, center=1.0):
    with mock.patch.object(wtc_ext.ops, "_autograd_penalty", side_effect=AssertionError("fallback")):
        gp = wtc_ext.gradient_penalty(critic, real, fake, center=center, generator=gen(real.device))
    gp.backward()
    fused = param_grads(critic)
    critic.zero_grad(set_to_none=True)
    ref = gradient_penalty_reference(critic, real, fake, center=center, generator=gen(real.device))
    ref.backward()
    expected = param_grads(critic)
    critic.zero_grad(set_to_none=True)
    assert_close(gp.detach(), ref.detach(), dtype)
    for a, b in zip(fused, expected):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["mlp", "shallow", "linear", "deep", "widening", "user"])
@pytest.mark.parametrize("batch", [1, 64])
def test_gradient_penalty_matches_autograd(device, dtype, kind, batch):
    critic = make_critic(kind, 10, device, dtype)
    real = torch.randn(batch, 10, device=device, dtype=dtype)
    fake = torch.randn(batch, 10, device=device, dtype=dtype) * 2 + 1
    compare_penalty(critic, real, fake, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["mlp", "shallow", "linear", "deep", "widening", "user"])
@pytest.mark.parametrize("batch", [1, 64])
def test_critic_loss_matches_autograd(device, dtype, kind, batch):
    critic = make_critic(kind, 10, device, dtype)
    p = torch.randn(batch, 10, device=device, dtype=dtype, requires_grad=True)
    q = (torch.randn(batch, 10, device=device, dtype=dtype) + 0.5).requires_grad_(True)
    out = wtc_ext.critic_loss(critic, p, q, gp_weight=4.0, generator=gen(device))
    out.loss.backward()
    fused = param_grads(critic) + [p.grad.clone(), q.grad.clone()]
    critic.zero_grad(set_to_none=True)
    p.grad = q.grad = None
    loss, w1 = critic_loss_reference(critic, p, q, gp_weight=4.0, generator=gen(device))
    loss.backward()
    expected = param_grads(critic) + [p.grad.clone(), q.grad.clone()]
    assert_close(out.loss.detach(), loss.detach(), dtype)
    assert_close(out.w1, w1.detach(), dtype)
    gp = gradient_penalty_reference(critic, p, q, generator=gen(device))
    assert_close(out.gradient_penalty, gp.detach(), dtype)
    assert not out.w1.requires_grad and not out.gradient_penalty.requires_grad
    for a, b in zip(fused, expected):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("batch", [50, 300])
@pytest.mark.parametrize("threads", [1, 3])
def test_cpu_row_chunks_match_autograd(threads, batch):
    """On a CPU the batch is split into one chunk of rows per thread (here 1 or 3 uneven chunks),
    and a chunk into blocks of at most 64 rows whose gradients add up (batch 300: 5 blocks and a
    remainder on one thread, 2 per chunk on three): the summed shares equal the reference."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        critic = make_critic("mlp", 10, "cpu", torch.float64)
        p = torch.randn(batch, 10, dtype=torch.float64, requires_grad=True)
        q = (torch.randn(batch, 10, dtype=torch.float64) + 0.5).requires_grad_(True)
        out = wtc_ext.critic_loss(critic, p, q, gp_weight=4.0, generator=gen("cpu"))
        out.loss.backward()
        fused = param_grads(critic) + [p.grad.clone(), q.grad.clone()]
        critic.zero_grad(set_to_none=True)
        p.grad = q.grad = None
        loss, w1 = critic_loss_reference(critic, p, q, gp_weight=4.0, generator=gen("cpu"))
        loss.backward()
        expected = param_grads(critic) + [p.grad.clone(), q.grad.clone()]
    finally:
        torch.set_num_threads(previous)
    assert_close(out.loss.detach(), loss.detach(), torch.float64)
    assert_close(out.w1, w1.detach(), torch.float64)
    for a, b in zip(fused, expected):
        assert_close(a, b, torch.float64)


def test_cpu_products_through_aten_match_autograd(tmp_path):
    """WTC_CRITIC_GEMM=aten sends the CPU kernel's products through torch.addmm_ (the path
    taken where torch exports no BLAS symbols): float64 and float32, several blocks and widths,
    against the reference. A fresh process, since the choice is read once."""
    code = textwrap.dedent("""
        import torch, wtc_ext
        from wtc_ext.nn import MLPCritic
        from wtc_ext.reference import critic_loss_reference
        for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-5)]:
            for hidden, batch in [((256, 256), 150), ((8, 64, 16), 7)]:
                torch.manual_seed(0)
                critic = MLPCritic(10, hidden).to(dtype)
                p = torch.randn(batch, 10, dtype=dtype)
                q = torch.randn(batch, 10, dtype=dtype) + 0.5
                g = torch.Generator().manual_seed(1)
                wtc_ext.critic_loss(critic, p, q, gp_weight=4.0, generator=g).loss.backward()
                fused = [t.grad.clone() for t in critic.parameters()]
                critic.zero_grad(set_to_none=True)
                g = torch.Generator().manual_seed(1)
                critic_loss_reference(critic, p, q, gp_weight=4.0, generator=g)[0].backward()
                for a, b in zip(fused, [t.grad for t in critic.parameters()]):
                    scale = max(b.abs().max().item(), 1.0)
                    torch.testing.assert_close(a, b, rtol=tol, atol=tol * scale)
        with torch.profiler.profile() as prof:  # the products did go through ATen
            wtc_ext.critic_loss(critic, p, q, gp_weight=4.0)
        assert any(e.key == "aten::addmm_" for e in prof.key_averages())
        print("aten products ok")
    """)
    # the wtc_ext this process imported (run from elsewhere: the source tree has no build)
    where = os.path.dirname(os.path.dirname(os.path.abspath(wtc_ext.__file__)))
    path = os.pathsep.join([where, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, WTC_CRITIC_GEMM="aten", PYTHONPATH=path)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "aten products ok" in run.stdout


def test_backward_seeds_retain_graph_and_a_freed_graph(device):
    """The backward hands the forward's gradients over when it frees the graph and seeds 1;
    any other seed scales them, a retained graph can be differentiated again, and a second
    backward through a freed graph is a clear error."""
    critic = make_critic("mlp", 10, device, torch.float64)
    p = torch.randn(32, 10, device=device, dtype=torch.float64)
    q = torch.randn(32, 10, device=device, dtype=torch.float64)
    wtc_ext.critic_loss(critic, p, q, gp_weight=4.0, generator=gen(device)).loss.backward()
    once = param_grads(critic)
    critic.zero_grad(set_to_none=True)

    loss = wtc_ext.critic_loss(critic, p, q, gp_weight=4.0, generator=gen(device)).loss
    loss.backward(retain_graph=True)
    loss.backward()  # accumulates: twice the gradient
    for a, b in zip(param_grads(critic), once):
        assert_close(a, 2 * b, torch.float64)
    critic.zero_grad(set_to_none=True)

    (3 * wtc_ext.critic_loss(critic, p, q, gp_weight=4.0, generator=gen(device)).loss).backward()
    for a, b in zip(param_grads(critic), once):
        assert_close(a, 3 * b, torch.float64)
    critic.zero_grad(set_to_none=True)

    for seed in (1.0, 3.0):  # the gradients handed over as they are, or scaled first
        loss = wtc_ext.critic_loss(critic, p, q, gp_weight=4.0, generator=gen(device)).loss
        loss.backward(torch.tensor(seed, device=device, dtype=loss.dtype))
        with pytest.raises(RuntimeError, match="second time"):
            loss.backward(torch.tensor(seed, device=device, dtype=loss.dtype))


@pytest.mark.parametrize("in_features,hidden,batch", [(1, (16,), 5), (1024, (1024,), 3),
                                                      (3, (1024, 1024), 2)])
def test_extreme_widths(device, in_features, hidden, batch):
    torch.manual_seed(1)
    critic = MLPCritic(in_features, hidden).to(device=device, dtype=torch.float64)
    real = torch.randn(batch, in_features, device=device, dtype=torch.float64)
    fake = torch.randn(batch, in_features, device=device, dtype=torch.float64)
    compare_penalty(critic, real, fake, torch.float64, center=0.5)


def test_large_batch_float32(device):
    torch.manual_seed(2)
    critic = MLPCritic(10, (16, 16)).to(device)
    real, fake = torch.randn(65536, 10, device=device), torch.randn(65536, 10, device=device)
    compare_penalty(critic, real, fake, torch.float32)


def test_relu_exactly_at_zero(device):
    # A unit whose pre-activation is exactly 0 for every input (zero weights and bias), and a
    # unit that is exactly 0 at the interpolate (integer inputs and weights, bias = -W x).
    critic = MLPCritic(3, (4, 4)).to(device=device, dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0, -1.0]], device=device, dtype=torch.float64)
    with torch.no_grad():
        critic[0].weight.copy_(torch.tensor([[0, 0, 0], [1, -1, 2], [2, 1, 1], [-1, 1, 0]],
                                            dtype=torch.float64))
        critic[0].bias.zero_()
        critic[0].bias[1] = -(critic[0].weight[1] @ x[0])  # exactly 0 at x
    assert (critic[0](x)[0, :2] == 0).all()
    # real == fake, so x_hat == x whatever the interpolation weight.
    compare_penalty(critic, x, x.clone(), torch.float64)


def test_gradcheck_fused_op(device):
    torch.manual_seed(3)
    critic = MLPCritic(4, (6, 5)).to(device=device, dtype=torch.float64)
    weights, biases = mlp_layers(critic)
    weights = [w.detach().clone().requires_grad_(True) for w in weights]
    biases = [b.detach().clone().requires_grad_(True) for b in biases]
    p = torch.randn(7, 4, device=device, dtype=torch.float64, requires_grad=True)
    q = torch.randn(7, 4, device=device, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(7, device=device, dtype=torch.float64)
    L = len(weights)

    def fn(p, q, *params):
        out = torch.ops.wtc_ext.mlp_critic_loss(p, q, alpha, list(params[:L]), list(params[L:]),
                                                1.0, 4.0, 1.0, True)
        return out[0]

    assert torch.autograd.gradcheck(fn, (p, q, *weights, *biases))


@pytest.mark.parametrize("compute_grads", [True, False])
def test_opcheck(device, compute_grads):
    torch.manual_seed(4)
    critic = MLPCritic(5, (8, 6)).to(device)
    weights, biases = mlp_layers(critic)
    p, q = torch.randn(9, 5, device=device), torch.randn(9, 5, device=device)
    alpha = torch.rand(9, device=device)
    if not compute_grads:
        weights = [w.detach() for w in weights]
        biases = [b.detach() for b in biases]
    for w1_weight in (0.0, 1.0):
        torch.library.opcheck(torch.ops.wtc_ext.mlp_critic_loss.default,
                              (p, q, alpha, weights, biases, w1_weight, 4.0, 1.0, compute_grads))


def test_same_generator_gives_same_interpolation(device):
    critic = make_critic("mlp", 10, device, torch.float32)
    real, fake = torch.randn(64, 10, device=device), torch.randn(64, 10, device=device)
    a = wtc_ext.gradient_penalty(critic, real, fake, generator=gen(device, 5))
    b = wtc_ext.gradient_penalty(critic, real, fake, generator=gen(device, 5))
    c = wtc_ext.gradient_penalty(critic, real, fake, generator=gen(device, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(9)
    d = wtc_ext.gradient_penalty(critic, real, fake)
    torch.manual_seed(9)
    assert torch.equal(d, wtc_ext.gradient_penalty(critic, real, fake))


@pytest.mark.parametrize("critic", [
    nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 1)),
    nn.Sequential(nn.Linear(10, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)),
    nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2)),  # two outputs
    nn.Sequential(nn.Linear(10, 16), nn.Linear(16, 1)),  # no ReLU between
], ids=["tanh", "leaky", "two-outputs", "linear-linear"])
def test_unsupported_critics_fall_back_to_autograd(device, critic):
    critic = critic.to(device=device, dtype=torch.float64)
    assert mlp_layers(critic) is None or critic[-1].out_features != 1
    real = torch.randn(16, 10, device=device, dtype=torch.float64)
    fake = torch.randn(16, 10, device=device, dtype=torch.float64)
    gp = wtc_ext.gradient_penalty(critic, real, fake, generator=gen(device))
    ref = gradient_penalty_reference(critic, real, fake, generator=gen(device))
    torch.testing.assert_close(gp, ref, rtol=1e-12, atol=1e-12)
    gp.backward()  # differentiable in the critic's parameters on the fallback path too
    assert critic[0].weight.grad is not None


def test_image_shaped_inputs_fall_back(device):
    critic = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    real, fake = torch.randn(4, 3, 2, 2, device=device), torch.randn(4, 3, 2, 2, device=device)
    gp = wtc_ext.gradient_penalty(critic, real, fake, generator=gen(device))
    torch.testing.assert_close(gp, gradient_penalty_reference(critic, real, fake, generator=gen(device)))


def test_module_detection():
    assert mlp_layers(MLPCritic(10)) is not None
    assert len(mlp_layers(MLPCritic(10))[0]) == 4
    assert mlp_layers(nn.Sequential(nn.ReLU(), nn.Linear(3, 1))) is None
    assert mlp_layers(nn.Linear(3, 1)) is None  # not a Sequential: autograd path


def test_shape_mismatch_is_a_clear_error(device):
    critic = make_critic("mlp", 10, device, torch.float32)
    with pytest.raises(ValueError, match="real and fake must have the same shape"):
        wtc_ext.gradient_penalty(critic, torch.randn(4, 10, device=device),
                                 torch.randn(5, 10, device=device))
    with pytest.raises(ValueError, match="p and q must have the same shape"):
        wtc_ext.critic_loss(critic, torch.randn(4, 10, device=device),
                            torch.randn(4, 9, device=device), gp_weight=4.0)


@pytest.mark.parametrize("kind", ["mlp", "tanh"])
def test_empty_batch_is_a_clear_error(device, kind):
    critic = (make_critic("mlp", 10, device, torch.float32) if kind == "mlp" else
              nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 1)).to(device))
    empty = torch.randn(0, 10, device=device)
    with pytest.raises(ValueError, match="at least one sample"):
        wtc_ext.gradient_penalty(critic, empty, empty)
    with pytest.raises(ValueError, match="at least one sample"):
        wtc_ext.critic_loss(critic, empty, empty, gp_weight=4.0)
    with pytest.raises(ValueError, match="at least one row"):  # the op itself
        torch.ops.wtc_ext.mlp_critic_loss(empty, empty, torch.rand(0, device=device),
                                          *wtc_ext.ops.mlp_layers(make_critic(
                                              "mlp", 10, device, torch.float32)),
                                          1.0, 4.0, 1.0, True)


@pytest.mark.parametrize("stacked", [False, True])
def test_inputs_of_zero_width(device, stacked):
    """d = 0: the critic is a constant, so its input gradient is empty with norm 0; every row's
    penalty is center^2 and every gradient is zero (the W1 term's to rounding: its p and q rows
    cancel). (A penalty kernel that counted rows as
    numel / d would leave them all unset.)"""
    R, B, center, gp_weight = 2, 5, 2.5, 4.0
    kw = dict(device=device, dtype=torch.float64)
    p, q, alpha = torch.randn(R, B, 0, **kw), torch.randn(R, B, 0, **kw), torch.rand(R, B, **kw)
    weights = [torch.randn(R, 3, 0, **kw), torch.randn(R, 1, 3, **kw)]
    biases = [torch.randn(R, 3, **kw), torch.randn(R, 1, **kw)]
    if stacked:
        out = torch.ops.wtc_ext.stacked_mlp_critic_loss(p, q, alpha, weights, biases, 1.0,
                                                        gp_weight, center, True)
    else:
        out = torch.ops.wtc_ext.mlp_critic_loss(p[0], q[0], alpha[0], [w[0] for w in weights],
                                                [b[0] for b in biases], 1.0, gp_weight, center,
                                                True)
    loss, w1, gp, grad_w, grad_b, grad_p, grad_q = out
    assert torch.equal(gp, torch.full_like(gp, center ** 2))
    assert torch.equal(w1, torch.zeros_like(w1))
    assert torch.equal(loss, torch.full_like(loss, gp_weight * center ** 2))
    for g, t in zip(grad_w + grad_b, weights + biases):  # zero up to the W1 term's rounding
        assert g.shape == (t.shape if stacked else t.shape[1:])
        torch.testing.assert_close(g, torch.zeros_like(g), rtol=0, atol=1e-12)
    assert grad_p.shape == (p.shape if stacked else p.shape[1:]) and grad_q.shape == grad_p.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for a second device")
def test_device_mismatch_is_a_clear_error():
    critic = MLPCritic(10)
    with pytest.raises(ValueError, match="same device"):
        wtc_ext.gradient_penalty(critic, torch.randn(4, 10), torch.randn(4, 10, device="cuda"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("kind", ["mlp", "tanh"])
def test_non_finite_inputs_give_nan(device, bad, kind):
    critic = (make_critic("mlp", 10, device, torch.float32) if kind == "mlp" else
              nn.Sequential(nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 1)).to(device))
    real, fake = torch.randn(8, 10, device=device), torch.randn(8, 10, device=device)
    real[3, 2] = bad
    assert torch.isnan(wtc_ext.gradient_penalty(critic, real, fake))
    assert torch.isnan(wtc_ext.critic_loss(critic, real, fake, gp_weight=4.0).loss)


def test_no_grad_mode_computes_values_only(device):
    critic = make_critic("mlp", 10, device, torch.float32)
    real, fake = torch.randn(8, 10, device=device), torch.randn(8, 10, device=device)
    with torch.no_grad():
        out = wtc_ext.critic_loss(critic, real, fake, gp_weight=4.0, generator=gen(device))
    ref, _ = critic_loss_reference(critic, real, fake, gp_weight=4.0, generator=gen(device))
    assert not out.loss.requires_grad
    assert_close(out.loss, ref.detach(), torch.float32)


def test_mlp_critic_shape_and_errors():
    critic = MLPCritic(10)
    assert [m.out_features for m in critic if isinstance(m, nn.Linear)] == [256, 256, 256, 1]
    assert critic(torch.randn(3, 10)).shape == (3, 1)
    with pytest.raises(ValueError, match="in_features"):
        MLPCritic(0)
    with pytest.raises(ValueError, match="hidden"):
        MLPCritic(3, (4, 0))
