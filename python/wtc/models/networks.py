"""The paper's table 3 networks: the convolutional encoder and decoder every model shares, and
FactorVAE's discriminator (the critics are ``wtc_ext.nn.MLPCritic``)."""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """4x4 convolutions, stride 2, 32-32-64-64 channels, FC 256, FC 2 x latent."""

    def __init__(self, in_channels: int = 1, latent_dim: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(),
            nn.Linear(256, 2 * latent_dim),
        )

    def forward(self, x):
        mean, logvar = self.net(_cpu_channels_last(x)).chunk(2, dim=1)
        return mean, logvar


class Decoder(nn.Module):
    """FC 256, FC 4x4x64, 4x4 transposed convolutions 64-32-32-C; pixel logits."""

    def __init__(self, out_channels: int = 1, latent_dim: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(),
            nn.Linear(256, 64 * 4 * 4), nn.ReLU(),
            nn.Unflatten(1, (64, 4, 4)),
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 4, 2, 1),
        )

    def forward(self, z):
        for layer in self.net:
            z = layer(z)
            if isinstance(layer, nn.Unflatten):  # the transposed convolutions follow
                z = _cpu_channels_last(z)
        return z


def _cpu_channels_last(x):
    # oneDNN's CPU convolutions (the transposed ones above all) are faster in NHWC than in
    # NCHW; the values are the same up to rounding.
    if x.device.type == "cpu":
        return x.contiguous(memory_format=torch.channels_last)
    return x


class FactorDiscriminator(nn.Module):
    """FactorVAE's discriminator: 6 x 1000 LeakyReLU(0.2), 2 logits (joint, permuted)."""

    def __init__(self, latent_dim: int = 10, width: int = 1000, depth: int = 6):
        super().__init__()
        layers, d = [], latent_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.LeakyReLU(0.2)]
            d = width
        layers.append(nn.Linear(d, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)
