"""The paper's table 3 networks: the convolutional encoder and decoder every model shares, and
FactorVAE's discriminator (the critics are ``wtc_ext.nn.MLPCritic``).

Each network is built either for one run (``runs=None``: plain layers, inputs ``(B, ...)``) or
for R runs stacked (``runs=R``: every parameter gets a leading run dim, inputs and outputs a
leading ``R``), so R runs of a model train with one kernel launch per layer. A stacked network
has the same module tree and state-dict keys as the single one, each tensor with a leading R:
``stacked.state_dict()[k][r]`` is run r's ``state_dict()[k]``, which is how runs are stacked
(:func:`stack_state`) and taken apart again (:func:`unstack_state`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wtc_ext.nn import StackedLinear


class StackedConv2d(nn.Module):
    """R Conv2d layers applied as one grouped convolution. Weight (R, out, in, k, k), bias
    (R, out); input and output in the grouped layout (B, R * channels, H, W)."""

    def __init__(self, runs: int, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, transposed: bool = False):
        super().__init__()
        self.runs, self.stride, self.padding, self.transposed = runs, stride, padding, transposed
        k = kernel_size
        shape = (in_channels, out_channels, k, k) if transposed else (out_channels, in_channels,
                                                                      k, k)
        self.weight = nn.Parameter(torch.empty(runs, *shape))
        self.bias = nn.Parameter(torch.empty(runs, out_channels))
        layer = (nn.ConvTranspose2d if transposed else nn.Conv2d)
        with torch.no_grad():  # each run initialised as its single layer would be
            for r in range(runs):
                single = layer(in_channels, out_channels, k, stride, padding)
                self.weight[r].copy_(single.weight)
                self.bias[r].copy_(single.bias)

    def forward(self, x):
        w = self.weight.reshape(-1, *self.weight.shape[2:])
        b = self.bias.reshape(-1)
        if self.transposed:
            return F.conv_transpose2d(x, w, b, self.stride, self.padding, groups=self.runs)
        return F.conv2d(x, w, b, self.stride, self.padding, groups=self.runs)


def _linear(runs, n_in, n_out):
    return nn.Linear(n_in, n_out) if runs is None else StackedLinear(runs, n_in, n_out)


def _conv(runs, n_in, n_out, transposed=False):
    if runs is None:
        return (nn.ConvTranspose2d if transposed else nn.Conv2d)(n_in, n_out, 4, 2, 1)
    return StackedConv2d(runs, n_in, n_out, 4, 2, 1, transposed=transposed)


def _to_grouped(x):
    """(R, B, C, H, W) -> (B, R * C, H, W), the layout of the grouped convolutions."""
    r, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, r * c, h, w)


def _from_grouped(x, runs):
    """(B, R * C, H, W) -> (R, B, C, H, W)."""
    b, rc, h, w = x.shape
    return x.reshape(b, runs, rc // runs, h, w).transpose(0, 1)


class Encoder(nn.Module):
    """4x4 convolutions, stride 2, 32-32-64-64 channels, FC 256, FC 2 x latent."""

    def __init__(self, in_channels: int = 1, latent_dim: int = 10, runs: int | None = None):
        super().__init__()
        self.runs = runs
        self.net = nn.Sequential(
            _conv(runs, in_channels, 32), nn.ReLU(),
            _conv(runs, 32, 32), nn.ReLU(),
            _conv(runs, 32, 64), nn.ReLU(),
            _conv(runs, 64, 64), nn.ReLU(),
            nn.Flatten(), _linear(runs, 64 * 4 * 4, 256), nn.ReLU(),
            _linear(runs, 256, 2 * latent_dim),
        )

    def forward(self, x):
        if self.runs is None:
            mean, logvar = self.net(_cpu_channels_last(x)).chunk(2, dim=-1)
            return mean, logvar
        x = _cpu_channels_last(_to_grouped(x))
        for layer in self.net:
            if isinstance(layer, nn.Flatten):  # (B, R*64, 4, 4) -> (R, B, 64*4*4)
                x = x.reshape(x.shape[0], self.runs, -1).transpose(0, 1)
            else:
                x = layer(x)
        mean, logvar = x.chunk(2, dim=-1)
        return mean, logvar


class Decoder(nn.Module):
    """FC 256, FC 4x4x64, 4x4 transposed convolutions 64-32-32-C; pixel logits."""

    def __init__(self, out_channels: int = 1, latent_dim: int = 10, runs: int | None = None):
        super().__init__()
        self.runs = runs
        self.net = nn.Sequential(
            _linear(runs, latent_dim, 256), nn.ReLU(),
            _linear(runs, 256, 64 * 4 * 4), nn.ReLU(),
            nn.Unflatten(-1, (64, 4, 4)),
            _conv(runs, 64, 64, True), nn.ReLU(),
            _conv(runs, 64, 32, True), nn.ReLU(),
            _conv(runs, 32, 32, True), nn.ReLU(),
            _conv(runs, 32, out_channels, True),
        )

    def forward(self, z):
        for layer in self.net:
            z = layer(z)
            if isinstance(layer, nn.Unflatten):  # the transposed convolutions follow
                z = _cpu_channels_last(z if self.runs is None else _to_grouped(z))
        return z if self.runs is None else _from_grouped(z, self.runs)


def _cpu_channels_last(x):
    # oneDNN's CPU convolutions (the transposed ones above all) are faster in NHWC than in
    # NCHW; the values are the same up to rounding.
    if x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


class FactorDiscriminator(nn.Module):
    """FactorVAE's discriminator: 6 x 1000 LeakyReLU(0.2), 2 logits (joint, permuted)."""

    def __init__(self, latent_dim: int = 10, width: int = 1000, depth: int = 6,
                 runs: int | None = None):
        super().__init__()
        layers, d = [], latent_dim
        for _ in range(depth):
            layers += [_linear(runs, d, width), nn.LeakyReLU(0.2)]
            d = width
        layers.append(_linear(runs, d, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


def stack_state(states: list) -> dict:
    """R single-run state dicts -> the stacked network's (each tensor gets a leading R)."""
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def unstack_state(state: dict, r: int) -> dict:
    """Run r's single-run state dict from a stacked network's."""
    return {k: v[r].clone() for k, v in state.items()}
