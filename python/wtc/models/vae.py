"""The VAE family: beta-VAE, FactorVAE, beta-TCVAE and WTC-VAE (a KL or KL-decomposition prior term,
plus a total-correlation penalty where the model has one)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

import wtc_ext
from wtc.models.base import (
    DisentanglingModel,
    critic_estimate,
    critic_step,
    gaussian_log_density,
    kl_divergence,
    reconstruction_loss,
    register,
)
from wtc.models.networks import FactorDiscriminator
from wtc_ext.nn import MLPCritic


@register
class BetaVAE(DisentanglingModel):
    name = "beta-vae"
    defaults: ClassVar[dict] = {"beta": 4.0}
    strength_help: ClassVar[dict] = {"beta": "weight of the KL term KL(q(z|x) || p(z))"}
    swept = "beta"
    paper_grid = (1.0, 4.0, 8.0, 16.0)

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        kl = kl_divergence(mean, logvar)
        return {"loss": rec + self.strengths["beta"] * kl, "reconstruction": rec, "kl": kl}


@register
class FactorVAE(DisentanglingModel):
    name = "factor-vae"
    defaults: ClassVar[dict] = {"gamma": 10.0}
    strength_help: ClassVar[dict] = {"gamma": "weight of the total correlation (a discriminator's "
                                                   "estimate)"}
    swept = "gamma"
    paper_grid = (10.0, 20.0, 40.0, 80.0)

    def __init__(self, in_channels=1, latent_dim=10, **strengths):
        super().__init__(in_channels, latent_dim, **strengths)
        self.adversaries["discriminator"] = FactorDiscriminator(latent_dim)

    def adversary_losses(self, z, x=None):
        d = self.adversaries["discriminator"]
        z = z.detach()
        logits = d(torch.cat([z, wtc_ext.permute_dims(z)]))
        labels = torch.cat([torch.zeros(len(z)), torch.ones(len(z))]).long().to(z.device)
        loss = F.cross_entropy(logits, labels)
        return {"discriminator": (loss, {"discriminator_loss": loss.detach()})}

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        kl = kl_divergence(mean, logvar)
        logits = self.adversaries["discriminator"](z)
        tc = (logits[:, 0] - logits[:, 1]).mean()  # log D/(1-D): the density-ratio TC estimate
        return {"loss": rec + kl + self.strengths["gamma"] * tc, "reconstruction": rec,
                "kl": kl, "tc": tc}


@register
class BetaTCVAE(DisentanglingModel):
    """beta-TCVAE (Chen et al.): rec + MI + beta * TC + dimension-wise KL, with log q(z) from the
    batch by minibatch weighted (``estimator="mws"``) or stratified (``"mss"``) sampling; both need
    the data set size."""

    name = "beta-tcvae"
    defaults: ClassVar[dict] = {"beta": 4.0}
    strength_help: ClassVar[dict] = {"beta": "weight of the total correlation (minibatch "
                                                  "estimate of log q(z))"}
    swept = "beta"
    paper_grid = (1.0, 4.0, 8.0, 16.0)
    config_options = ("estimator", "tcvae_objective")
    ESTIMATORS = ("mss", "mws", "mws-authors")
    OBJECTIVES = ("chen", "authors")

    @classmethod
    def options_from_dataset(cls, dataset) -> dict:
        return {"dataset_size": len(dataset)}  # the importance weights' N

    def __init__(self, in_channels=1, latent_dim=10, dataset_size: int = 737280,
                 estimator: str = "mss", **strengths):
        super().__init__(in_channels, latent_dim, **strengths)
        if estimator not in self.ESTIMATORS:
            raise ValueError(f"beta-tcvae: estimator must be 'mws' or 'mss', got {estimator!r}")
        if dataset_size < 2:
            raise ValueError("beta-tcvae: dataset_size must be >= 2")
        self.estimator = estimator
        self.dataset_size = int(dataset_size)

    def log_importance_weights(self, batch: int, device, dtype):
        """log w[i, j]: the weight of q(z_i | x_j) in the estimate of q(z_i)."""
        N = self.dataset_size
        if self.estimator == "mws":
            return torch.full((batch, batch), -math.log(N * batch), device=device, dtype=dtype)
        # Stratified sampling (Chen et al., appendix C.2): the sample's own x weighs 1/N, one
        # other (N - M) / (N M), the remaining M - 1 others 1 / M, with M = batch - 1.
        M = batch - 1
        if M < 1:
            return torch.zeros((batch, batch), device=device, dtype=dtype)
        w = torch.full((batch, batch), 1.0 / M, device=device, dtype=torch.float64)
        idx = torch.arange(batch, device=device)
        w[idx, idx] = 1.0 / N
        w[idx, (idx + 1) % batch] = (N - M) / (N * M)
        return w.log().to(dtype)

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        B = z.shape[0]
        log_qz_x = gaussian_log_density(z, mean, logvar).sum(1)  # log q(z_i | x_i)
        log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
        pair = gaussian_log_density(z[:, None, :], mean[None], logvar[None])  # (B, B, d)
        logw = self.log_importance_weights(B, z.device, z.dtype)
        log_qz = torch.logsumexp(pair.sum(2) + logw, dim=1)
        log_prod_qzj = torch.logsumexp(pair + logw[..., None], dim=1).sum(1)
        mi = (log_qz_x - log_qz).mean()
        tc = (log_qz - log_prod_qzj).mean()
        dim_kl = (log_prod_qzj - log_pz).mean()
        loss = rec + mi + self.strengths["beta"] * tc + dim_kl
        return {"loss": loss, "reconstruction": rec, "mi": mi, "tc": tc, "dim_kl": dim_kl}


@register
class WTCVAE(DisentanglingModel):
    """rec + KL + gamma * WTC, WTC = mean f(z) - mean f(permute_dims(z)) (paper eq. 8)."""

    name = "wtc-vae"
    defaults: ClassVar[dict] = {"gamma": 10.0}
    strength_help: ClassVar[dict] = {"gamma": "weight of the Wasserstein total correlation "
                                                   "(a critic's W1 to the shuffled codes)"}
    swept = "gamma"
    paper_grid = (10.0, 20.0, 40.0, 80.0)
    figure_grid = (1.0, 4.0, 10.0, 20.0, 40.0, 80.0)  # paper section 5.4, figures 3 and 7
    authors_grid = (1.0, 4.0, 8.0, 16.0)  # run_training.sh: "wtc" gamma values="1 4 8 16"

    def __init__(self, in_channels=1, latent_dim=10, **strengths):
        super().__init__(in_channels, latent_dim, **strengths)
        self.adversaries["critic"] = MLPCritic(latent_dim)

    def adversary_losses(self, z, x=None):
        z = z.detach()
        return {"critic": critic_step(self.adversaries["critic"], z, wtc_ext.permute_dims(z),
                                      "critic_wtc", "critic_gp")}

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        kl = kl_divergence(mean, logvar)
        # permute_dims is differentiable: the encoder gets gradients through both terms.
        wtc = critic_estimate(self.adversaries["critic"], z, wtc_ext.permute_dims(z))
        return {"loss": rec + kl + self.strengths["gamma"] * wtc, "reconstruction": rec,
                "kl": kl, "wtc": wtc}
