"""nn building blocks of the paper's models that the fused ops recognise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
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


class StackedLinear(nn.Module):
    """R independent ``nn.Linear(in_features, out_features)`` layers, one per run, applied to R
    stacked inputs in one batched product: ``x (R, *, in) -> (R, *, out)`` with
    ``out[r] = x[r] @ weight[r].T + bias[r]``.

    ``weight`` is ``(R, out, in)`` and ``bias`` ``(R, out)`` (or None): run r's slices are exactly
    an ``nn.Linear``'s parameters, and each run is initialised as ``nn.Linear`` initialises
    itself, run after run, so under one seed ``StackedLinear(R, i, o)`` equals ``R`` Linears
    created one after another. :meth:`from_linears` and :meth:`unstack` convert both ways.
    """

    def __init__(self, runs: int, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("runs", runs), ("in_features", in_features),
                            ("out_features", out_features)):
            if int(value) < 1:
                raise ValueError(f"StackedLinear: {name} must be >= 1, got {value}")
        self.runs, self.in_features, self.out_features = int(runs), int(in_features), \
            int(out_features)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.runs, self.out_features, self.in_features,
                                               **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.runs, self.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for r in range(self.runs):
            self.reset_run(r)

    def reset_run(self, r: int) -> None:
        """Re-initialise run r as ``nn.Linear.reset_parameters`` does (the same draws)."""
        weight = self.weight[r]  # a contiguous (out, in) slice: the same values as a fresh one
        with torch.no_grad():
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias[r], -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[0] != self.runs or x.shape[-1] != self.in_features:
            raise ValueError(f"StackedLinear: expected input of shape (R, ..., in) = "
                             f"({self.runs}, ..., {self.in_features}), got {tuple(x.shape)}")
        flat = x.reshape(self.runs, -1, self.in_features)
        if self.bias is None:
            out = torch.bmm(flat, self.weight.transpose(1, 2))
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        return out.view(*x.shape[:-1], self.out_features)

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear]) -> StackedLinear:
        """One StackedLinear holding copies of ``linears``' parameters (same shapes, dtype and
        device, all with or all without bias)."""
        linears = list(linears)
        if not linears or any(not isinstance(m, nn.Linear) for m in linears):
            raise ValueError("StackedLinear.from_linears: expected a non-empty sequence of "
                             "nn.Linear")
        first = linears[0]
        has_bias = first.bias is not None
        for m in linears:
            if (m.weight.shape != first.weight.shape or (m.bias is not None) != has_bias
                    or m.weight.dtype != first.weight.dtype
                    or m.weight.device != first.weight.device):
                raise ValueError("StackedLinear.from_linears: every Linear must have the same "
                                 "shape, bias, dtype and device")
        stacked = cls.__new__(cls)
        nn.Module.__init__(stacked)
        stacked.runs, stacked.in_features, stacked.out_features = \
            len(linears), first.in_features, first.out_features
        with torch.no_grad():
            stacked.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))
            stacked.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in linears]))
                            if has_bias else None)
        return stacked

    def unstack(self, r: int) -> nn.Linear:
        """Run r as an ``nn.Linear`` (a copy of its parameters)."""
        if not -self.runs <= r < self.runs:
            raise IndexError(f"StackedLinear.unstack: run {r} out of range for {self.runs} runs")
        w = self.weight
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=w.device, dtype=w.dtype)
        with torch.no_grad():
            linear.weight.copy_(w[r])
            if self.bias is not None:
                linear.bias.copy_(self.bias[r])
        return linear

    def extra_repr(self) -> str:
        return (f"runs={self.runs}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class StackedMLPCritic(nn.Sequential):
    """R independent :class:`MLPCritic` s (one per run) as one module: an ``nn.Sequential`` of
    ``StackedLinear, ReLU, ..., StackedLinear(·, 1)``, ``forward`` (R, B, d) -> (R, B, 1).

    Its state_dict has MLPCritic's keys (``"0.weight"``, ``"0.bias"``, ...) with a leading run
    dim: ``stacked.state_dict()[k][r]`` is run r's critic's ``state_dict()[k]``. Under one seed,
    ``StackedMLPCritic(R, d)`` equals ``R`` ``MLPCritic(d)`` created one after another (each run
    is initialised in turn, layer by layer). :func:`wtc_ext.critic_loss` and
    :func:`wtc_ext.gradient_penalty` take their stacked fused path for it: every run's loss and
    gradients from one op call.
    """

    def __init__(self, runs: int, in_features: int, hidden: Sequence[int] = (256, 256, 256),
                 device=None, dtype=None):
        if int(runs) < 1:
            raise ValueError(f"StackedMLPCritic: runs must be >= 1, got {runs}")
        if in_features < 1:
            raise ValueError(f"StackedMLPCritic: in_features must be >= 1, got {in_features}")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise ValueError(f"StackedMLPCritic: hidden widths must be >= 1, got {hidden}")
        widths = (in_features, *hidden, 1)
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(_uninitialised_stacked_linear(int(runs), w_in, w_out, device, dtype))
        super().__init__(*layers)
        self.runs, self.in_features, self.hidden = int(runs), in_features, hidden
        # Run-major initialisation: run 0's layers, then run 1's, as R MLPCritics draw.
        linears = [m for m in self if isinstance(m, StackedLinear)]
        for r in range(self.runs):
            for m in linears:
                m.reset_run(r)

    @classmethod
    def from_critics(cls, critics: Sequence[MLPCritic]) -> StackedMLPCritic:
        """The R critics as one stacked critic (copies of their parameters). Every critic must be
        an MLPCritic-shaped Sequential (Linear, ReLU, ..., Linear(·, 1)) of the same widths."""
        critics = list(critics)
        if not critics:
            raise ValueError("StackedMLPCritic.from_critics: expected at least one critic")
        linears = []
        for c in critics:
            modules = list(c) if isinstance(c, nn.Sequential) else []
            ok = (len(modules) % 2 == 1 and all(type(m) is nn.ReLU for m in modules[1::2])
                  and all(type(m) is nn.Linear and m.bias is not None for m in modules[::2])
                  and modules[-1].out_features == 1)
            if not ok:
                raise ValueError("StackedMLPCritic.from_critics: expected MLPCritics (Linear, "
                                 f"ReLU, ..., Linear(., 1) with biases), got {c}")
            linears.append(modules[::2])
        shapes = [tuple(m.weight.shape for m in ls) for ls in linears]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"StackedMLPCritic.from_critics: every critic must have the same "
                             f"layer shapes, got {shapes[0]} and others")
        stacked = cls.__new__(cls)
        layers: list[nn.Module] = []
        for i in range(len(linears[0])):
            if i:
                layers.append(nn.ReLU())
            layers.append(StackedLinear.from_linears([ls[i] for ls in linears]))
        nn.Sequential.__init__(stacked, *layers)
        stacked.runs = len(critics)
        stacked.in_features = linears[0][0].in_features
        stacked.hidden = tuple(m.out_features for m in linears[0][:-1])
        return stacked

    def critic(self, r: int) -> MLPCritic:
        """Run r's critic as an :class:`MLPCritic` (a copy of its parameters)."""
        if not -self.runs <= r < self.runs:
            raise IndexError(f"StackedMLPCritic.critic: run {r} out of range for {self.runs} "
                             "runs")
        first = self[0].weight
        with torch.random.fork_rng(devices=[]):  # the copy's own init draws must not count
            critic = MLPCritic(self.in_features, self.hidden)
        critic = critic.to(device=first.device, dtype=first.dtype)
        critic.load_state_dict({k: v[r] for k, v in self.state_dict().items()})
        return critic


def _uninitialised_stacked_linear(runs, in_features, out_features, device, dtype):
    # The StackedLinear of a StackedMLPCritic, initialised afterwards in the critics' order.
    layer = StackedLinear.__new__(StackedLinear)
    nn.Module.__init__(layer)
    layer.runs, layer.in_features, layer.out_features = runs, in_features, out_features
    factory = {"device": device, "dtype": dtype}
    layer.weight = nn.Parameter(torch.empty(runs, out_features, in_features, **factory))
    layer.bias = nn.Parameter(torch.empty(runs, out_features, **factory))
    return layer
