"""wtc_ext: fused PyTorch ops for Wasserstein total correlation (CPU and CUDA kernels).

Every op is a registered torch.library op under ``torch.ops.wtc_ext`` (schema, CPU and CUDA
kernels, autograd, fake kernel), exposed here as a plain function. Pure-PyTorch references of
each op live in :mod:`wtc_ext.reference`.
"""

from wtc_ext import nn
from wtc_ext.nn import MLPCritic, StackedLinear, StackedMLPCritic
from wtc_ext.ops import (
    CriticLoss,
    build_info,
    conditional_wasserstein,
    critic_loss,
    gradient_penalty,
    permute_dims,
    wasserstein_1d,
)

__all__ = ["CriticLoss", "MLPCritic", "StackedLinear", "StackedMLPCritic", "build_info",
           "conditional_wasserstein", "critic_loss", "gradient_penalty", "nn", "permute_dims",
           "wasserstein_1d"]
__version__ = "0.1.0"
