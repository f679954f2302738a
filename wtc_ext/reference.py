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


def stacked_mlp_critic_loss_reference(p: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor,
                                      weights, biases, w1_weight: float, gp_weight: float,
                                      center: float = 1.0):
    """The stacked op ``wtc_ext::stacked_mlp_critic_loss`` in eager autograd: R Linear/ReLU
    critics as batched products (p, q (R, B, d), alpha (R, B), weights[l] (R, out, in),
    biases[l] (R, out)), the input gradient by ``autograd.grad(create_graph=True)``.

    Returns (loss, w1, gp), each (R,); loss is differentiable in p, q and the parameters (double
    backward), so ``loss.sum().backward()`` gives every run's gradients."""

    def forward(x):
        for l, (w, b) in enumerate(zip(weights, biases)):
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            if l < len(weights) - 1:
                x = x.relu()
        return x  # (R, n, 1)

    x_hat = (alpha.unsqueeze(-1) * p + (1 - alpha.unsqueeze(-1)) * q).detach().requires_grad_(True)
    out = forward(x_hat)
    (grad,) = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out), create_graph=True)
    gp = (grad.norm(2, dim=2) - center).pow(2).mean(1)
    w1 = forward(p).mean((1, 2)) - forward(q).mean((1, 2))
    return gp_weight * gp - w1_weight * w1, w1.detach(), gp.detach()


def stacked_critic_loss_reference(critic, p: torch.Tensor, q: torch.Tensor, *, gp_weight: float,
                                  center: float = 1.0, generator=None):
    """(loss, w1) per run, shape (R,), of a stacked critic (``wtc_ext.nn.StackedMLPCritic``) in
    eager autograd through the module: what :func:`wtc_ext.critic_loss` computes for it, with
    the interpolation weights drawn the same way (one generator: ``torch.rand(R, B)``; a
    sequence: run r's ``torch.rand(B)`` from generator[r])."""
    R, B = p.shape[0], p.shape[1]
    if generator is None or isinstance(generator, torch.Generator):
        alpha = torch.rand(R, B, generator=generator, device=p.device, dtype=p.dtype)
    else:
        alpha = torch.stack([torch.rand(B, generator=g, device=p.device, dtype=p.dtype)
                             for g in generator])
    a = alpha.unsqueeze(-1)
    x_hat = (a * p + (1 - a) * q).detach().requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out), create_graph=True)
    gp = (grad.norm(2, dim=2) - center).pow(2).mean(1)
    w1 = critic(p).mean((1, 2)) - critic(q).mean((1, 2))
    return gp_weight * gp - w1, w1


def wasserstein_1d_reference(u: torch.Tensor, v: torch.Tensor, u_weights=None,
                             v_weights=None) -> torch.Tensor:
    """Pure-PyTorch W1 along the last dim (same leading shape for u and v), scipy's algorithm:
    sort the union of the samples, evaluate both CDFs there with searchsorted (or weighted
    cumulative sums), integrate |F - G|."""
    u_sorted, u_order = u.sort(-1)
    v_sorted, v_order = v.sort(-1)
    values = torch.cat([u, v], -1).sort(-1).values
    deltas = values.diff(dim=-1)
    at = values[..., :-1].contiguous()

    def cdf(sorted_x, order, weights):
        idx = torch.searchsorted(sorted_x.contiguous(), at, right=True)
        if weights is None:
            return idx.to(u.dtype) / sorted_x.shape[-1]
        cum = torch.cat([torch.zeros_like(weights[..., :1]),
                         weights.gather(-1, order).cumsum(-1)], -1)
        return cum.gather(-1, idx) / cum[..., -1:]

    F = cdf(u_sorted, u_order, u_weights)
    G = cdf(v_sorted, v_order, v_weights)
    return ((F - G).abs() * deltas).sum(-1)


def wasserstein_1d_padded(us: list, vs: list) -> torch.Tensor:
    """POT-style batching of unequal samples: pad every sample to the longest with +inf-free
    copies of its largest value, with zero weights, and run the weighted reference once."""
    n = max(x.numel() for x in us)
    m = max(x.numel() for x in vs)

    def pad(xs, size):
        values = torch.stack([torch.cat([x, x.max().expand(size - x.numel())]) for x in xs])
        weights = torch.stack([torch.cat([torch.ones_like(x), torch.zeros(size - x.numel(),
                                                                          dtype=x.dtype,
                                                                          device=x.device)])
                               for x in xs])
        return values, weights

    u, uw = pad(us, n)
    v, vw = pad(vs, m)
    return wasserstein_1d_reference(u, v, uw, vw)


def conditional_wasserstein_reference(z: torch.Tensor, labels: torch.Tensor,
                                      reference: torch.Tensor | None = None) -> torch.Tensor:
    """Pure-PyTorch sort-once conditional W1 (see wtc_ext.conditional_wasserstein): sort each
    column once, group it by label with a stable sort of the labels, and integrate the CDF
    difference per (column, label) segment with vectorised tensor ops. labels: (N, K) classes
    0..C-1. Returns (d, K, C), NaN for empty classes."""
    N, d = z.shape
    K = labels.shape[1]
    C = int(labels.max()) + 1
    out = torch.full((d, K, C), float("nan"), dtype=z.dtype, device=z.device)
    z_sorted, z_order = z.sort(0)
    if reference is not None:
        r_sorted, r_order = reference.sort(0)
    for k in range(K):
        lab = labels[:, k]
        counts = torch.bincount(lab, minlength=C)
        lab_sorted = lab[z_order]  # (N, d)
        perm = lab_sorted.sort(dim=0, stable=True).indices
        grouped = z_sorted.gather(0, perm)  # sorted within each label
        seg = lab_sorted.gather(0, perm)  # (N, d) label of each grouped entry
        present = counts > 0
        if reference is not None:
            r_lab = lab[r_order]
            r_grouped = r_sorted.gather(0, r_lab.sort(dim=0, stable=True).indices)
            # Equal sizes: W1 = mean |sorted a - sorted b| within each segment.
            diff = (grouped - r_grouped).abs()
            sums = torch.zeros(C, d, dtype=z.dtype, device=z.device).index_add_(
                0, seg[:, 0], diff) if d else None
            out[:, k, present] = (sums[present] / counts[present, None]).T
        else:
            # Against the whole column: F_c(x) at every column value by running counts.
            onehot = torch.nn.functional.one_hot(lab_sorted, C).to(z.dtype)  # (N, d, C)
            F = onehot.cumsum(0) / counts.clamp(min=1)  # label CDFs at sorted column values
            G = torch.arange(1, N + 1, dtype=z.dtype, device=z.device) / N
            gaps = z_sorted.diff(dim=0)  # (N-1, d)
            W = ((F[:-1] - G[:-1, None, None]).abs() * gaps[..., None]).sum(0)  # (d, C)
            out[:, k, present] = W[:, present]
    return out
