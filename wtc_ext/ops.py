"""Public functions of the ops, and their fake (meta) kernels for torch.compile and export."""

from __future__ import annotations

import torch

from wtc_ext import _C  # noqa: F401  (loading it registers torch.ops.wtc_ext.*)

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
        out, index = _permute_dims(z, generator=generator)
    else:
        out, index = _C.permute_dims(z, generator=generator)
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
def _permute_dims_fake(z, *, generator=None):
    _check_permute_dims(z)
    return z.new_empty(z.shape), z.new_empty(z.shape, dtype=torch.int64)
