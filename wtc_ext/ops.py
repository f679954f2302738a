"""Public functions of the ops, and their fake (meta) kernels for torch.compile and export.

Every op's autograd lives in C++ (csrc/<family>/autograd/, see csrc/extension.cpp for why); only
the fake kernels are registered here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from wtc_ext.nn import StackedLinear

try:  # loading it registers torch.ops.wtc_ext.*
    # The compiled module is top-level, under a name no source folder holds: from a checkout's
    # root, the uncompiled wtc_ext/ folder can shadow the installed package but not this.
    import _wtc_ext as _C
except ImportError as err:
    raise ImportError(
        "wtc_ext: its compiled module _wtc_ext is not built or not importable ("
        f"{err}). Install the package with `pip install --no-build-isolation .`, or for "
        "development build it in place with `python setup.py build_ext --inplace` and put the "
        "checkout on PYTHONPATH (PYTHONPATH=.:python)") from err

_permute_dims = torch.ops.wtc_ext.permute_dims.default
_is_compiling = torch.compiler.is_compiling


def build_info() -> dict:
    """How the extension was built: ``cuda`` (bool), ``cuda_version``, ``cuda_archs``,
    ``torch_version`` (the torch it was compiled against), ``compiler``, ``openmp``."""
    return dict(_C.build_info())


def permute_dims(z: torch.Tensor, *, generator: torch.Generator | None = None,
                 return_index: bool = False):
    """Permute the rows of every column of ``z`` independently (the paper's Algorithm 1).

    ``z`` has shape ``(..., B, d)``. For every leading index and every column ``j``,
    ``out[..., :, j] = z[..., perm, j]`` with ``perm`` a uniform random permutation of the ``B``
    rows, drawn independently for each column and each leading index, so ``(N, B, d)`` permutes
    ``N`` batches in one call. The samples of ``out`` follow the product of the marginals of
    ``z``'s rows.

    Args:
        z: floating-point tensor with at least 2 dims, on CPU or CUDA, any strides.
        generator: a ``torch.Generator`` on z's device; default: the global generator, so
            ``torch.manual_seed`` makes the result reproducible.
        return_index: also return the int64 ``index`` with ``out == z.gather(-2, index)``.

    Returns:
        ``out`` (same shape, dtype and device as ``z``, contiguous, differentiable in ``z``:
        the gradient is scattered back through the same permutation), and ``index`` if asked.
    """
    if _is_compiling():  # dynamo traces the registered op; eager calls take the direct path
        out, index = _permute_dims(z, generator=generator, return_index=return_index)
    else:
        out, index = _C.permute_dims(z, generator=generator, return_index=return_index)
    return (out, index) if return_index else out


def _check_permute_dims(z: torch.Tensor) -> None:
    # Mirrors the C++ checks so fake tensors fail the same way real ones do.
    if z.dim() < 2:
        raise ValueError(
            "permute_dims: expected z of shape (..., B, d) with at least 2 dims, but got a "
            f"tensor of shape {tuple(z.shape)}")
    if not z.dtype.is_floating_point:
        raise ValueError(
            f"permute_dims: expected z to have a floating-point dtype, but got {z.dtype}")


@torch.library.register_fake("wtc_ext::permute_dims")
def _permute_dims_fake(z, *, generator=None, return_index=True):
    _check_permute_dims(z)
    if generator is not None and generator.device.type != z.device.type:
        raise ValueError(f"permute_dims: generator is on device '{generator.device}' but z is on "
                         f"'{z.device}'; pass a torch.Generator for z's device or generator=None")
    index_shape = z.shape if return_index else (0,)
    return z.new_empty(z.shape), z.new_empty(index_shape, dtype=torch.int64)


# ----------------------------------------------------------------------------------------------
# Gradient penalty and critic loss (WGAN-GP) with the fused path for Linear/ReLU critics.

class CriticLoss(NamedTuple):
    """What :func:`critic_loss` returns: the objective to minimise, and its parts for logging.
    Scalars for one critic; tensors of shape (R,) (one value per run) for a stacked critic."""

    loss: torch.Tensor  #: -(mean f(p) - mean f(q)) + gp_weight * gradient_penalty
    w1: torch.Tensor  #: mean f(p) - mean f(q), the critic's W1 estimate (no gradient)
    gradient_penalty: torch.Tensor  #: mean (||grad f(x_hat)|| - center)^2 (no gradient)


def mlp_layers(critic: nn.Module):
    """(weights, biases) if ``critic`` is a Linear, ReLU, ..., Linear(·, 1) stack the fused kernels
    handle, else None. Linears without bias get zero biases."""
    if not isinstance(critic, nn.Sequential) or critic._forward_hooks or critic._forward_pre_hooks:
        return None
    modules = list(critic._modules.values())
    if len(modules) % 2 == 0:
        return None
    weights, biases = [], []
    for module in modules[1::2]:
        if type(module) is not nn.ReLU:
            return None
    for module in modules[::2]:
        if type(module) is not nn.Linear or module._forward_hooks or module._forward_pre_hooks:
            return None
        # _parameters directly: nn.Module.__getattr__ costs a microsecond a lookup, and a weight
        # that is no longer a parameter (a reparametrised Linear) is not ours to fuse
        params = module._parameters
        weight, bias = params.get("weight"), params.get("bias")
        if weight is None:
            return None
        weights.append(weight)
        biases.append(bias if bias is not None
                      else torch.zeros(weight.shape[0], device=weight.device, dtype=weight.dtype))
    if weights[-1].shape[0] != 1:
        return None
    return weights, biases


def _check_pair(real: torch.Tensor, fake: torch.Tensor, names=("real", "fake"),
                op="gradient_penalty") -> None:
    a, b = names
    if not isinstance(real, torch.Tensor) or not isinstance(fake, torch.Tensor):
        raise TypeError(f"{op}: expected tensors for {a} and {b}, got {type(real)} and "
                        f"{type(fake)}")
    for name, t in ((a, real), (b, fake)):
        # torch.rand (the interpolation weights) and the input gradient need a real float dtype
        if not t.dtype.is_floating_point:
            raise TypeError(f"{op}: expected {name} to have a floating-point dtype, got {t.dtype}")
    if real.dtype != fake.dtype:
        raise TypeError(f"{op}: {a} and {b} must have the same dtype, got {real.dtype} and "
                        f"{fake.dtype}")
    if real.shape != fake.shape:
        raise ValueError(f"{op}: {a} and {b} must have the same shape, got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")
    if real.device != fake.device:
        raise ValueError(f"{op}: {a} and {b} must be on the same device, got {real.device} "
                         f"and {fake.device}")
    if real.dim() < 2:
        raise ValueError(f"{op}: {a} and {b} must have shape (B, ...) with a batch dim, got "
                         f"{tuple(real.shape)}")
    if real.shape[0] == 0:  # the means over the batch would be NaN
        raise ValueError(f"{op}: {a} and {b} must hold at least one sample, got shape "
                         f"{tuple(real.shape)}")


def _interpolation_weights(real, generator):
    # alpha ~ U(0, 1), one per sample, drawn from `generator` (or the global seed).
    return torch.rand(real.shape[0], generator=generator, device=real.device, dtype=real.dtype)


def _fused_inputs(critic, real):
    """(weights, biases) when the fused kernels apply to this call, else None."""
    if real.dim() != 2 or real.dtype not in (torch.float32, torch.float64):
        return None
    layers = mlp_layers(critic)
    if layers is None:
        return None
    weights, biases = layers
    if real.shape[1] != weights[0].shape[1]:
        return None
    dtype, device = real.dtype, real.device
    for t in weights + biases:
        if t.dtype != dtype or t.device != device:
            return None
    return weights, biases


def _run_fused(real, fake, alpha, weights, biases, w1_weight, gp_weight, center):
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in [real, fake, *weights, *biases])
    return torch.ops.wtc_ext.mlp_critic_loss.default(
        real, fake, alpha, weights, biases, float(w1_weight), float(gp_weight), float(center),
        needs_grad)


def _autograd_penalty(critic, x_hat, center):
    x_hat = x_hat.detach().requires_grad_(True)
    with torch.enable_grad():
        out = critic(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - center).pow(2).mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, *,
                     center: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP gradient penalty: mean over the batch of (||grad_x critic(x_hat)||_2 - center)^2,
    x_hat = a * real + (1 - a) * fake, a ~ U(0, 1) per sample.

    Differentiable in the critic's parameters (and in real and fake, where the penalty's gradient
    is zero almost everywhere). A critic that is a stack of ``nn.Linear`` and ``nn.ReLU`` ending
    in one output (:class:`wtc_ext.nn.MLPCritic` or a user ``nn.Sequential``), with float32 or
    float64 inputs, takes the fused path: forward, input gradient, penalty and the penalty's
    parameter gradients in closed form (ReLU'' = 0), without a double backward. Every other
    critic or dtype goes through autograd, with the same result.

    ``generator`` (or the global seed) draws ``a``; the same generator state gives the same
    interpolation on both paths. Non-finite inputs are not checked (a device sync a step): the
    result is then usually NaN or inf, but a ReLU can clip an infinity to a finite value.
    Integer, bool or complex inputs raise ``TypeError``. The fused path has no second
    derivatives: a backward through it with ``create_graph=True`` raises.

    A stacked critic (:class:`wtc_ext.nn.StackedMLPCritic`, or any ``nn.Sequential`` starting
    with a :class:`wtc_ext.nn.StackedLinear`) of R runs takes ``real`` and ``fake`` of shape
    (R, B, d) and returns the R penalties, shape (R,); see :func:`critic_loss` for the generators.
    """
    runs = _stack_runs(critic)
    if runs is not None:
        return _stacked_critic_loss(critic, runs, real, fake, 0.0, 1.0, center, generator,
                                    "gradient_penalty", ("real", "fake"))[0]
    _check_pair(real, fake)
    alpha = _interpolation_weights(real, generator)
    fused = _fused_inputs(critic, real)
    if fused is None:
        x_hat = torch.lerp(fake, real, alpha.view(-1, *([1] * (real.dim() - 1))))
        return _autograd_penalty(critic, x_hat, center)
    loss, *_ = _run_fused(real, fake, alpha, *fused, 0.0, 1.0, center)
    return loss


def critic_loss(critic: nn.Module, p: torch.Tensor, q: torch.Tensor, *, gp_weight: float,
                center: float = 1.0, generator: torch.Generator | None = None) -> CriticLoss:
    """The whole WGAN-GP critic objective in one call:
    ``loss = -(mean f(p) - mean f(q)) + gp_weight * GP``, GP interpolating between p and q.

    Minimising ``loss`` trains ``critic`` towards the W1 distance between the distributions of
    ``p`` and ``q`` (Kantorovich-Rubinstein duality). On the fused path (see
    :func:`gradient_penalty`) the forward on p, q and the interpolates and every parameter
    gradient come from one op; ``loss.backward()`` just hands them over. Returns
    ``CriticLoss(loss, w1, gradient_penalty)``; ``w1`` is the estimate mean f(p) - mean f(q).

    Stacked critics (R runs trained side by side): for a :class:`wtc_ext.nn.StackedMLPCritic`
    (or any ``nn.Sequential`` starting with a :class:`wtc_ext.nn.StackedLinear`) of R runs, ``p``
    and ``q`` are (R, B, d) and every field is a tensor of shape (R,), run r's value equal to
    ``critic_loss(stacked.critic(r), p[r], q[r], ...)``; ``loss.sum().backward()`` gives every
    run's parameters its own run's gradient. float32/float64 Linear/ReLU stacks take one fused op
    for all runs (``wtc_ext::stacked_mlp_critic_loss``); anything else goes through autograd with
    the same results. ``generator`` is then None (the global generator), one generator (the
    weights of all runs drawn at once, ``torch.rand(R, B)``) or a sequence of R generators: run
    r's weights are then ``torch.rand(B, generator=generator[r])``, exactly the single call's
    draw, so the stacked call reproduces R single calls with those generators.
    """
    runs = _stack_runs(critic)
    if runs is not None:
        return CriticLoss(*_stacked_critic_loss(critic, runs, p, q, 1.0, gp_weight, center,
                                                generator, "critic_loss", ("p", "q")))
    _check_pair(p, q, ("p", "q"), "critic_loss")
    alpha = _interpolation_weights(p, generator)
    fused = _fused_inputs(critic, p)
    if fused is None:
        x_hat = torch.lerp(q, p, alpha.view(-1, *([1] * (p.dim() - 1))))
        gp = _autograd_penalty(critic, x_hat, center)
        w1 = critic(p).mean() - critic(q).mean()
        return CriticLoss(gp_weight * gp - w1, w1.detach(), gp.detach())
    loss, w1, gp, *_ = _run_fused(p, q, alpha, *fused, 1.0, gp_weight, center)
    return CriticLoss(loss, w1, gp)


@torch.library.register_fake("wtc_ext::mlp_critic_loss")
def _mlp_critic_loss_fake(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                          compute_grads):
    # A CPU op call with one meta tensor lands here: without this check it would return
    # uninitialised CPU memory.
    for name, ts in (("q", [q]), ("alpha", [alpha]), ("weights", weights), ("biases", biases)):
        for t in ts:
            _check_device(t, name, p.device, "mlp_critic_loss", "p")
    scalar = p.new_empty(())
    if not compute_grads:
        return (scalar, p.new_empty(()), p.new_empty(()), [], [], p.new_empty((0,)),
                p.new_empty((0,)))
    return (scalar, p.new_empty(()), p.new_empty(()), [w.new_empty(w.shape) for w in weights],
            [b.new_empty(b.shape) for b in biases], p.new_empty(p.shape), q.new_empty(q.shape))


# Autograd is registered in C++ (csrc/critic/autograd/): the backward hands over the gradients
# the forward computed.


# ----------------------------------------------------------------------------------------------
# Stacked critics: R runs' critics in one call (wtc_ext::stacked_mlp_critic_loss).

def _stack_runs(critic) -> int | None:
    """R when ``critic`` is a stack of R runs (a Sequential whose first module is a
    StackedLinear), else None. Cheap: it runs on every critic_loss call."""
    if isinstance(critic, nn.Sequential):
        modules = critic._modules
        if modules:
            first = next(iter(modules.values()))
            if isinstance(first, StackedLinear):
                return first.runs
    return None


def stacked_mlp_layers(critic: nn.Module):
    """(weights, biases) of a StackedLinear, ReLU, ..., StackedLinear(·, 1) stack (a
    :class:`wtc_ext.nn.StackedMLPCritic` or a user Sequential of that shape) that the stacked
    fused op handles: weights[l] (R, out, in), biases[l] (R, out); else None. Layers without bias
    get zero biases."""
    if not isinstance(critic, nn.Sequential) or critic._forward_hooks or critic._forward_pre_hooks:
        return None
    modules = list(critic._modules.values())
    if len(modules) % 2 == 0:
        return None
    for module in modules[1::2]:
        if type(module) is not nn.ReLU:
            return None
    weights, biases = [], []
    for module in modules[::2]:
        if (type(module) is not StackedLinear or module._forward_hooks
                or module._forward_pre_hooks):
            return None
        params = module._parameters
        weight, bias = params.get("weight"), params.get("bias")
        if weight is None or weight.dim() != 3:
            return None
        weights.append(weight)
        biases.append(bias if bias is not None else torch.zeros(
            weight.shape[:2], device=weight.device, dtype=weight.dtype))
    if weights[-1].shape[1] != 1 or any(w.shape[0] != weights[0].shape[0] for w in weights):
        return None
    return weights, biases


def _stacked_interpolation_weights(p, generator, op):
    """alpha (R, B) ~ U(0, 1): one draw for all runs from one generator (or the global one), or
    run r's from generator[r] exactly as the single call draws."""
    R, B = p.shape[0], p.shape[1]
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(R, B, generator=generator, device=p.device, dtype=p.dtype)
    if not isinstance(generator, Sequence) or not all(
            isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"{op}: generator must be None, a torch.Generator or a sequence of "
                        f"{R} torch.Generators, got {type(generator).__name__}")
    if len(generator) != R:
        raise ValueError(f"{op}: expected one generator per run ({R}), got {len(generator)}")
    return torch.stack([torch.rand(B, generator=g, device=p.device, dtype=p.dtype)
                        for g in generator])


def _stacked_critic_loss(critic, runs, p, q, w1_weight, gp_weight, center, generator, op, names):
    """(loss, w1, gp), each (R,), of a stacked critic: the fused op or autograd."""
    a, b = names
    for name, t in ((a, p), (b, q)):
        if isinstance(t, torch.Tensor) and (t.dim() != 3 or t.shape[0] != runs):
            raise ValueError(f"{op}: the critic stacks {runs} runs, so {name} must have shape "
                             f"(R, B, d) = ({runs}, B, d), got {tuple(t.shape)}")
    _check_pair(p, q, names, op)
    if p.shape[1] == 0:
        raise ValueError(f"{op}: {a} and {b} must hold at least one sample per run, got shape "
                         f"{tuple(p.shape)}")
    layers = stacked_mlp_layers(critic)
    if layers is not None and p.shape[2] != layers[0][0].shape[2]:
        raise ValueError(f"{op}: the critic takes {layers[0][0].shape[2]} features, but {a} and "
                         f"{b} have {p.shape[2]} (shape {tuple(p.shape)})")
    alpha = _stacked_interpolation_weights(p, generator, op)
    fused = layers is not None and p.dtype in (torch.float32, torch.float64) and all(
        t.dtype == p.dtype and t.device == p.device for t in layers[0] + layers[1])
    if fused:
        weights, biases = layers
        needs_grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in [p, q, *weights, *biases])
        loss, w1, gp, *_ = torch.ops.wtc_ext.stacked_mlp_critic_loss.default(
            p, q, alpha, weights, biases, float(w1_weight), float(gp_weight), float(center),
            needs_grad)
        return loss, w1, gp
    # Autograd through the stacked module: its runs do not mix, so every run's penalty and its
    # gradients are the single critic's.
    x_hat = torch.lerp(q, p, alpha.unsqueeze(-1)).detach().requires_grad_(True)
    with torch.enable_grad():
        out = critic(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    gp = (grad.flatten(2).norm(2, dim=2) - center).pow(2).mean(1)
    if w1_weight == 0.0:
        return gp, torch.zeros_like(gp), gp.detach()
    w1 = critic(p).flatten(1).mean(1) - critic(q).flatten(1).mean(1)
    return gp_weight * gp - w1_weight * w1, w1.detach(), gp.detach()


@torch.library.register_fake("wtc_ext::stacked_mlp_critic_loss")
def _stacked_mlp_critic_loss_fake(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                                  compute_grads):
    # The device checks of the C++ op (a meta tensor among CPU ones lands here), and the shapes.
    for name, ts in (("q", [q]), ("alpha", [alpha]), ("weights", weights), ("biases", biases)):
        for t in ts:
            _check_device(t, name, p.device, "stacked_mlp_critic_loss", "p")
    if p.dim() != 3 or q.shape != p.shape or alpha.shape != p.shape[:2]:
        raise ValueError(f"stacked_mlp_critic_loss: expected p and q (R, B, d) and alpha (R, B), "
                         f"got {tuple(p.shape)}, {tuple(q.shape)}, {tuple(alpha.shape)}")
    R = p.shape[0]
    if not compute_grads:
        return (p.new_empty((R,)), p.new_empty((R,)), p.new_empty((R,)), [], [],
                p.new_empty((0,)), p.new_empty((0,)))
    return (p.new_empty((R,)), p.new_empty((R,)), p.new_empty((R,)),
            [w.new_empty(w.shape) for w in weights], [b.new_empty(b.shape) for b in biases],
            p.new_empty(p.shape), q.new_empty(q.shape))


# ----------------------------------------------------------------------------------------------
# Sorted-CDF Wasserstein-1 distances.

_MAX_ROW = 2**31 - 1  # the CPU kernels index a row (or column) with int32


def _check_real(t, name, op):
    # A cast to a real dtype would drop the imaginary part and answer for another input.
    if t.dtype.is_complex:
        raise TypeError(f"{op}: expected {name} to have a real dtype, got {t.dtype}")


def _check_device(t, name, device, op, other="u"):
    if t.device != device:
        raise ValueError(f"{op}: expected {name} on {other}'s device {device}, got {t.device}")


def _check_weights(w, values, name):
    if w is None:
        return None
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(w, dtype=values.dtype, device=values.device)
    _check_real(w, name, "wasserstein_1d")
    _check_device(w, name, values.device, "wasserstein_1d", "its samples")
    try:
        if torch.broadcast_shapes(w.shape, values.shape) != values.shape:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"wasserstein_1d: {name} of shape {tuple(w.shape)} does not match "
                         f"the samples' shape {tuple(values.shape)}") from None
    # The values as given, before broadcasting: bad weights are an error even where the
    # samples have no rows (and the checks read each weight once).
    w = w.to(values.dtype)
    if w.numel() and not w.is_meta:  # (meta tensors have no values to check)
        # Two passes: non-negative weights with finite row totals are all finite.
        totals = w.sum(-1)
        if not bool(w.min() >= 0) or not bool(torch.isfinite(totals).all()):
            raise ValueError(f"wasserstein_1d: {name} must be finite and non-negative")
        if not bool((totals > 0).all()):
            raise ValueError(f"wasserstein_1d: {name} must have a positive total in every row")
    return w.expand(values.shape)


def wasserstein_1d(u: torch.Tensor, v: torch.Tensor, u_weights: torch.Tensor | None = None,
                   v_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Exact Wasserstein-1 distance between 1-D empirical distributions along the last dim.

    ``u`` (..., n) and ``v`` (..., m) hold samples (n and m may differ); their leading dims
    broadcast. Optional non-negative weights have the samples' shapes (or broadcast to them).
    Returns the distances, shape = the broadcast leading dims; row by row equal to
    ``scipy.stats.wasserstein_distance``. Sorted-CDF algorithm: sort both samples, merge the two
    CDFs once, integrate |F - G| (in float64 accumulation for float32 inputs). Differentiable in
    ``u`` and ``v`` (not in the weights), twice too (the first derivative is piecewise constant
    in the samples). An empty sample gives NaN; NaN samples give NaN. Complex inputs raise
    ``TypeError``, inputs on different devices (meta included) ``ValueError``.
    """
    if not isinstance(u, torch.Tensor) or not isinstance(v, torch.Tensor):
        raise TypeError("wasserstein_1d: u and v must be tensors")
    if u.dim() < 1 or v.dim() < 1:
        raise ValueError(f"wasserstein_1d: u and v need a sample dim, got shapes "
                         f"{tuple(u.shape)} and {tuple(v.shape)}")
    _check_real(u, "u", "wasserstein_1d")
    _check_real(v, "v", "wasserstein_1d")
    # Here, not only in the op: a CPU u with a meta v would dispatch to the fake kernel.
    _check_device(v, "v", u.device, "wasserstein_1d")
    if u.device.type == "cpu" and max(u.shape[-1], v.shape[-1]) > _MAX_ROW:
        # before the casts and reshapes below, which may copy an expanded input
        raise ValueError(f"wasserstein_1d: expected at most 2^31 - 1 samples per row in u and "
                         f"v, got {u.shape[-1]} and {v.shape[-1]}")
    if u.dtype != v.dtype:
        dtype = torch.promote_types(u.dtype, v.dtype)
        u, v = u.to(dtype), v.to(dtype)
    if not u.dtype.is_floating_point:
        u, v = u.double(), v.double()
    out_dtype = u.dtype
    if u.dtype not in (torch.float32, torch.float64):  # half and bfloat16: float32 kernels
        u, v = u.float(), v.float()
    try:
        lead = torch.broadcast_shapes(u.shape[:-1], v.shape[:-1])
    except RuntimeError:
        raise ValueError(f"wasserstein_1d: leading dims of u {tuple(u.shape)} and v "
                         f"{tuple(v.shape)} do not broadcast") from None
    u_weights = _check_weights(u_weights, u, "u_weights")
    v_weights = _check_weights(v_weights, v, "v_weights")
    n, m = u.shape[-1], v.shape[-1]
    rows = 1
    for size in lead:
        rows *= size
    u2 = u.expand(*lead, n).reshape(rows, n)
    v2 = v.expand(*lead, m).reshape(rows, m)
    uw = None if u_weights is None else u_weights.expand(*lead, n).reshape(rows, n)
    vw = None if v_weights is None else v_weights.expand(*lead, m).reshape(rows, m)
    out = torch.ops.wtc_ext.wasserstein_1d.default(u2, v2, uw, vw)
    return out.reshape(lead).to(out_dtype)


def _check_wasserstein_1d_fake(u, v, u_weights, v_weights):
    # Mirrors check_wasserstein_1d_args (C++), so fake tensors fail as real ones do.
    if u.dim() != 2 or v.dim() != 2 or u.shape[0] != v.shape[0]:
        raise ValueError(f"wasserstein_1d: expected u (R, n) and v (R, m) with the same R, got "
                         f"{tuple(u.shape)} and {tuple(v.shape)}")
    if u.dtype != v.dtype or u.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"wasserstein_1d: expected u and v both float32 or both float64, got "
                         f"{u.dtype} and {v.dtype}")
    _check_device(v, "v", u.device, "wasserstein_1d")
    for name, w, x in (("u_weights", u_weights, u), ("v_weights", v_weights, v)):
        if w is not None and (w.shape != x.shape or w.device != x.device or w.dtype != x.dtype):
            raise ValueError(f"wasserstein_1d: {name} must match {name[0]}'s shape, device and "
                             "dtype")


@torch.library.register_fake("wtc_ext::wasserstein_1d")
def _wasserstein_1d_fake(u, v, u_weights=None, v_weights=None):
    _check_wasserstein_1d_fake(u, v, u_weights, v_weights)
    return u.new_empty((u.shape[0],))


@torch.library.register_fake("wtc_ext::wasserstein_1d_backward")
def _wasserstein_1d_backward_fake(grad, u, v, u_weights, v_weights):
    _check_wasserstein_1d_fake(u, v, u_weights, v_weights)
    return u.new_empty(u.shape), v.new_empty(v.shape)


# Autograd is registered in C++ (csrc/wasserstein/autograd/): its backward is the op
# wasserstein_1d_backward.


def _as_labels(labels: torch.Tensor, n: int, device, ranks: bool = True
               ) -> tuple[torch.Tensor, list[int]]:
    """Integer labels (N,) or (N, K) -> (N, K) int64 class indices (the rank of each value among
    the factor's distinct values) and each factor's number of classes. With ``ranks=False`` a
    class may also be value - the factor's minimum, the values missing in between being empty
    classes (the kernels leave them NaN): for callers that only average over classes, it saves
    finding which values occur."""
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"conditional_wasserstein: labels must be integers, got {labels.dtype}")
    if labels.is_meta or torch.device(device).type == "meta":
        raise ValueError("conditional_wasserstein: z and labels must not be on the meta device: "
                         "the labels' classes are found from their values")
    if labels.dtype == torch.uint64:
        # int64 would wrap values >= 2^63 to negatives and reorder the classes; flipping the
        # top bit maps uint64 onto int64 in the same order (x - 2^63), and only order and
        # differences matter below.
        labels = labels.view(torch.int64) ^ torch.iinfo(torch.int64).min
    if labels.dim() == 1:
        labels = labels[:, None]
    if labels.dim() != 2 or labels.shape[0] != n:
        raise ValueError(f"conditional_wasserstein: expected labels of shape (N,) or (N, K) with "
                         f"N = {n}, got {tuple(labels.shape)}")
    labels = labels.to(device=device, dtype=torch.int64)
    if labels.numel() == 0:
        return labels.contiguous(), [0] * labels.shape[1]
    low, high = torch.aminmax(labels, dim=0)
    # in Python ints: high - low overflows int64 for labels near both ends of its range
    span = max(h - lo for lo, h in zip(low.tolist(), high.tolist())) + 1
    if span <= 4 * n + 1024:
        shifted = labels - low if bool((low != 0).any()) else labels
        if not ranks:
            return shifted.contiguous(), (high - low + 1).tolist()
        # Small ranges (the usual factor classes): ranks by counting, no sort.
        offsets = torch.arange(labels.shape[1], device=device) * span
        present = torch.bincount((shifted + offsets).flatten(),
                                 minlength=span * labels.shape[1]).view(-1, span) > 0
        counts = present.sum(1)
        if bool((counts == high - low + 1).all()):
            # every value between each factor's min and max occurs: the ranks are the values
            return shifted.contiguous(), counts.tolist()
        rank = present.cumsum(1) - 1
        classes = rank.gather(1, shifted.T).T
        return classes.contiguous(), counts.tolist()
    columns, counts = [], []
    for k in range(labels.shape[1]):
        values, inverse = torch.unique(labels[:, k], return_inverse=True)
        columns.append(inverse)
        counts.append(values.numel())
    return torch.stack(columns, 1).contiguous(), counts


def conditional_wasserstein(z: torch.Tensor, labels: torch.Tensor,
                            reference: torch.Tensor | str | None = None, *,
                            reference_index: torch.Tensor | None = None,
                            generator: torch.Generator | Sequence[torch.Generator] | None = None,
                            scale_by_range: bool = False) -> torch.Tensor:
    """W1 between each column of ``z`` restricted to each label's rows and a reference sample.

    ``z`` (N, d) codes; ``labels`` (N,) or (N, K) integers (any values: the classes of factor k
    are its distinct values in increasing order). Returns ``W`` of shape (d, K, C) (or (d, C)
    for 1-D labels), C = the largest number of classes of a factor, with

    - ``reference=None``: ``W[j, k, c] = W1(z[rows, j], z[:, j])``, the whole column as the
      reference (the paper's eq. 12 read literally);
    - ``reference`` (N, d): ``W[j, k, c] = W1(z[rows, j], reference[rows, j])`` on the same rows
      (the authors' WDG, with ``reference`` the column-wise permuted codes);

    where ``rows`` are the rows whose factor k has its c-th value. Classes a factor does not have
    are NaN. ``reference_index`` (N, d) int64, a permutation of the rows per column, stands for
    ``reference = z.gather(0, reference_index)`` (what ``permute_dims(z, return_index=True)``
    gives) and saves the reference's sort: its sorted order is z's. ``reference="permuted"``
    stands for ``reference = permute_dims(z, generator=generator)`` (the same permutations from
    the same generator state), drawn inside the kernel without writing the permuted copy or its
    index. ``scale_by_range=True`` divides each column's distances by the column's range
    (max - min; a constant column is left unscaled), which equals dividing the column first.

    Every entry comes from one sort per column: walking a sorted column and placing each value at
    its label's running count splits it into sorted per-label samples, and one merge of two
    sorted samples gives a distance.

    R runs' codes in one call: ``z`` (R, N, d) sharing the labels (``reference`` and
    ``reference_index`` (R, N, d) too) gives W (R, d, K, C) (or (R, d, C)), ``W[r]`` equal to
    the call on ``z[r]``. With ``reference="permuted"``, ``generator`` may be a sequence of R
    generators: run r's permutation is then the one ``conditional_wasserstein(z[r], ...,
    generator=generator[r])`` draws; one generator (or None) draws the runs' permutations in turn,
    as R calls on z[0], z[1], ... with it would.
    """
    if not isinstance(z, torch.Tensor):
        raise TypeError("conditional_wasserstein: z must be a tensor")
    if z.dim() not in (2, 3):
        raise ValueError(f"conditional_wasserstein: expected z of shape (N, d), or (R, N, d) for "
                         f"R runs' codes, got {tuple(z.shape)}")
    _check_real(z, "z", "conditional_wasserstein")
    if z.device.type == "cpu" and z.shape[-2] > _MAX_ROW:
        # before the casts and the (N, K) int64 labels below
        raise ValueError(f"conditional_wasserstein: expected at most 2^31 - 1 rows in z on a "
                         f"CPU, got {z.shape[-2]}")
    if not z.dtype.is_floating_point:
        z = z.double()
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    one_factor = torch.as_tensor(labels).dim() == 1
    classes, counts = _as_labels(labels, z.shape[-2], z.device)
    permuted = isinstance(reference, str)
    if permuted:
        if reference != "permuted":
            raise ValueError(f"conditional_wasserstein: reference must be a tensor, None or "
                             f"'permuted', got {reference!r}")
        reference = None
    elif generator is not None:
        raise ValueError("conditional_wasserstein: generator is only used with "
                         "reference='permuted'")
    generators = None
    if generator is not None and not isinstance(generator, torch.Generator):
        if z.dim() != 3 or not isinstance(generator, Sequence) or not all(
                isinstance(g, torch.Generator) for g in generator):
            raise ValueError("conditional_wasserstein: generator must be a torch.Generator, or "
                             "for z (R, N, d) a sequence of R of them")
        if len(generator) != z.shape[0]:
            raise ValueError(f"conditional_wasserstein: expected one generator per run of z "
                             f"({z.shape[0]}), got {len(generator)}")
        generators, generator = list(generator), None
    if reference is not None:
        if isinstance(reference, torch.Tensor):
            _check_real(reference, "reference", "conditional_wasserstein")
            if reference.is_meta:
                _check_device(reference, "reference", z.device, "conditional_wasserstein", "z")
        reference = torch.as_tensor(reference, device=z.device).to(z.dtype)
    if reference_index is not None:
        if isinstance(reference_index, torch.Tensor) and reference_index.is_meta:
            _check_device(reference_index, "reference_index", z.device,
                          "conditional_wasserstein", "z")
        reference_index = torch.as_tensor(reference_index, device=z.device)
    out = torch.ops.wtc_ext.conditional_wasserstein.default(
        z, classes, reference, reference_index, max(counts, default=1) or 1, permuted,
        generator, bool(scale_by_range), generators)
    return out.select(-2, 0) if one_factor else out


@torch.library.register_fake("wtc_ext::conditional_wasserstein")
def _conditional_wasserstein_fake(z, labels, reference, reference_index, num_classes,
                                  permuted=False, generator=None, scale_by_range=False,
                                  generators=None):
    # The C++ checks that need no values (check_conditional_args), for fake tensors.
    if z.dim() not in (2, 3) or z.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"conditional_wasserstein: expected z (N, d) or (R, N, d) float32 or "
                         f"float64, got {z.dtype} {tuple(z.shape)}")
    if (labels.dim() != 2 or labels.shape[0] != z.shape[-2] or labels.dtype != torch.int64
            or labels.device != z.device):
        raise ValueError(f"conditional_wasserstein: expected int64 labels of shape (N, K) = "
                         f"({z.shape[-2]}, K) on z's device, got {labels.dtype} "
                         f"{tuple(labels.shape)} on {labels.device}")
    if generators is not None and (not permuted or generator is not None or z.dim() != 3
                                   or len(generators) != z.shape[0]):
        raise ValueError("conditional_wasserstein: generators (one per run of z (R, N, d)) "
                         "only with the permuted reference and without generator")
    for name, t in (("reference", reference), ("reference_index", reference_index)):
        if t is not None and (t.shape != z.shape or t.device != z.device):
            raise ValueError(f"conditional_wasserstein: {name} must match z's shape and device, "
                             f"got {tuple(t.shape)} on {t.device}")
    if num_classes < 1:
        raise ValueError("conditional_wasserstein: num_classes must be >= 1")
    return z.new_empty((*z.shape[:-2], z.shape[-1], labels.shape[1], num_classes))
