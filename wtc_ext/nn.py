"""nn building blocks of the paper's models that the fused ops recognise."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLPCritic(nn.Sequential):
    """Linear/ReLU critic with one output: the paper's table 3 critic is
    ``MLPCritic(10, hidden=(256, 256, 256))``.

    It is an ``nn.Sequential`` of ``Linear, ReLU, ..., Linear(·, 1)``, so
    :func:`wtc_ext.gradient_penalty` and :func:`wtc_ext.critic_loss` take their fused path for it
    (as for any user Sequential of that shape). ``forward`` returns shape ``(B, 1)``.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 256, 256)):
        if in_features < 1:
            raise ValueError(f"MLPCritic: in_features must be >= 1, got {in_features}")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"MLPCritic: hidden widths must be >= 1, got {hidden}")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)
        self.in_features = in_features
        self.hidden = hidden


# -- LEAD TEMP: replaced by the ops helper's versions at merge ---------------------------------
import torch as _torch


class StackedLinear(nn.Module):
    def __init__(self, runs: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(_torch.empty(runs, out_features, in_features))
        self.bias = nn.Parameter(_torch.empty(runs, out_features))
        with _torch.no_grad():
            for r in range(runs):
                single = nn.Linear(in_features, out_features)
                self.weight[r].copy_(single.weight)
                self.bias[r].copy_(single.bias)

    def forward(self, x):
        return _torch.baddbmm(self.bias.unsqueeze(-2), x, self.weight.transpose(-1, -2))


class StackedMLPCritic(nn.Sequential):
    def __init__(self, runs: int, in_features: int, hidden: Sequence[int] = (256, 256, 256)):
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [StackedLinear(runs, width, h), nn.ReLU()]
            width = h
        layers.append(StackedLinear(runs, width, 1))
        super().__init__(*layers)
        self.runs = runs
        self.in_features = in_features
        self.hidden = tuple(hidden)
