"""Pure-PyTorch references of the ops: the baselines that tests and benchmarks compare with."""

from __future__ import annotations

import torch


def permute_dims_reference(z: torch.Tensor, *, generator: torch.Generator | None = None,
                           return_index: bool = False):
    """Vectorised permute_dims: random keys, argsort along the rows, gather.

    The best pure-PyTorch form: three kernels whatever the batch shape. Same contract as
    :func:`wtc_ext.permute_dims` (a different random stream).
    """
    keys = torch.rand(z.shape, generator=generator, device=z.device)
    index = keys.argsort(dim=-2)
    out = z.gather(-2, index)
    return (out, index) if return_index else out


def permute_dims_loop(z: torch.Tensor) -> torch.Tensor:
    """permute_dims as public FactorVAE code writes it: one ``randperm`` per column of one (B, d)
    batch, then a concatenation. Leading dims are looped over too."""
    if z.dim() > 2:
        return torch.stack([permute_dims_loop(batch) for batch in z.unbind(0)])
    B = z.shape[0]
    columns = [z[torch.randperm(B, device=z.device), j] for j in range(z.shape[1])]
    return torch.stack(columns, dim=1)


def gradient_penalty_reference(critic, real: torch.Tensor, fake: torch.Tensor, *,
                               center: float = 1.0,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP penalty the way public code writes it: interpolate, forward, autograd.grad with
    create_graph=True, norm, mean. Draws the interpolation weights exactly as
    :func:`wtc_ext.gradient_penalty` does, so equal generator states give equal results."""
    alpha = torch.rand(real.shape[0], generator=generator, device=real.device, dtype=real.dtype)
    alpha = alpha.view(-1, *([1] * (real.dim() - 1)))
    x_hat = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out), create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - center).pow(2).mean()


def critic_loss_reference(critic, p: torch.Tensor, q: torch.Tensor, *, gp_weight: float,
                          center: float = 1.0, generator: torch.Generator | None = None):
    """(loss, w1) of the WGAN-GP critic objective in eager autograd (double backward)."""
    gp = gradient_penalty_reference(critic, p, q, center=center, generator=generator)
    w1 = critic(p).mean() - critic(q).mean()
    return gp_weight * gp - w1, w1
