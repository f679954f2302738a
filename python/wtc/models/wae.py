"""The WAE family: WAE and WTC-WAE (a critic's W1 between the codes and the prior instead of a
KL term; WTC-WAE adds the Wasserstein total correlation)."""

from __future__ import annotations

from typing import ClassVar

import torch

import wtc_ext
from wtc.models.base import (
    DisentanglingModel,
    critic_estimate,
    critic_step,
    reconstruction_loss,
    register,
)
from wtc_ext.nn import MLPCritic


@register
class WAE(DisentanglingModel):
    """rec + beta * W1(q(z), p(z)), W1 from a critic g between codes and prior samples."""

    name = "wae"
    defaults: ClassVar[dict] = {"beta": 1.0}
    strength_help: ClassVar[dict] = {"beta": "weight of the W1 between the codes and the "
                                                  "prior (a critic)"}
    swept = "beta"
    paper_grid = (1.0, 4.0, 8.0, 16.0)

    def __init__(self, in_channels=1, latent_dim=10, **strengths):
        super().__init__(in_channels, latent_dim, **strengths)
        self.adversaries["critic"] = MLPCritic(latent_dim)

    def adversary_losses(self, z, x=None):
        z = z.detach()
        return {"critic": critic_step(self.adversaries["critic"], z, torch.randn_like(z),
                                      "critic_w1", "critic_gp")}

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        w1 = critic_estimate(self.adversaries["critic"], z, torch.randn_like(z))
        return {"loss": rec + self.strengths["beta"] * w1, "reconstruction": rec, "w1": w1}


@register
class WTCWAE(DisentanglingModel):
    """rec + beta * [g(permute_dims(z)) - g(z_prior)] + gamma * [f(z) - f(permute_dims(z))]."""

    name = "wtc-wae"
    defaults: ClassVar[dict] = {"beta": 1.0, "gamma": 10.0}
    strength_help: ClassVar[dict] = {"beta": "weight of the W1 between the shuffled codes "
                                                  "and the prior",
                                         "gamma": "weight of the Wasserstein total "
                                                  "correlation"}
    swept = "gamma"
    paper_grid = (10.0, 20.0, 40.0, 80.0)
    # run_training.sh: "wtc_wae" beta values="1 4 8 16", and their --beta weighs the WTC term
    authors_grid = (1.0, 4.0, 8.0, 16.0)

    def __init__(self, in_channels=1, latent_dim=10, **strengths):
        super().__init__(in_channels, latent_dim, **strengths)
        self.adversaries["critic_f"] = MLPCritic(latent_dim)
        self.adversaries["critic_g"] = MLPCritic(latent_dim)

    def adversary_losses(self, z, x=None):
        z = z.detach()
        zp = wtc_ext.permute_dims(z)
        return {"critic_f": critic_step(self.adversaries["critic_f"], z, zp, "critic_wtc",
                                        "critic_f_gp"),
                "critic_g": critic_step(self.adversaries["critic_g"], zp, torch.randn_like(z),
                                        "critic_w1", "critic_g_gp")}

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        zp = wtc_ext.permute_dims(z)
        w1 = critic_estimate(self.adversaries["critic_g"], zp, torch.randn_like(z))
        wtc = critic_estimate(self.adversaries["critic_f"], z, zp)
        loss = rec + self.strengths["beta"] * w1 + self.strengths["gamma"] * wtc
        return {"loss": loss, "reconstruction": rec, "w1": w1, "wtc": wtc}
