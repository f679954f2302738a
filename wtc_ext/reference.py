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
