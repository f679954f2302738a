"""The VAE family: beta-VAE, FactorVAE, beta-TCVAE and WTC-VAE (a KL or KL-decomposition prior term,
plus a total-correlation penalty where the model has one)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from wtc.models.base import (
    DisentanglingModel,
    critic_estimate,
    critic_step,
    gaussian_log_density,
    kl_divergence,
    make_critic,
    reconstruction_loss,
    register,
)
from wtc.models.networks import FactorDiscriminator


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
        return {"loss": rec + self.strength("beta") * kl, "reconstruction": rec, "kl": kl}


@register
class FactorVAE(DisentanglingModel):
    name = "factor-vae"
    defaults: ClassVar[dict] = {"gamma": 10.0}
    strength_help: ClassVar[dict] = {"gamma": "weight of the total correlation (a discriminator's "
                                                   "estimate)"}
    swept = "gamma"
    paper_grid = (10.0, 20.0, 40.0, 80.0)

    def __init__(self, in_channels=1, latent_dim=10, runs=None, **strengths):
        super().__init__(in_channels, latent_dim, runs, **strengths)
        self.adversaries["discriminator"] = FactorDiscriminator(latent_dim, runs=runs)

    def adversary_losses(self, z, x=None):
        d = self.adversaries["discriminator"]
        z = z.detach()
        batch = z.shape[-2]
        logp = F.log_softmax(d(torch.cat([z, self.permute_dims(z)], dim=-2)), dim=-1)
        # cross-entropy with label 0 (joint) on the codes, 1 (permuted) on their shuffle
        loss = -torch.cat([logp[..., :batch, 0], logp[..., batch:, 1]], dim=-1).mean(-1)
        return {"discriminator": (loss, {"discriminator_loss": loss.detach()})}

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        kl = kl_divergence(mean, logvar)
        logits = self.adversaries["discriminator"](z)
        # log D/(1-D): the density-ratio TC estimate
        tc = (logits[..., 0] - logits[..., 1]).mean(-1)
        return {"loss": rec + kl + self.strength("gamma") * tc, "reconstruction": rec,
                "kl": kl, "tc": tc}


@register
class BetaTCVAE(DisentanglingModel):
    """beta-TCVAE, in either of two objective forms (``tcvae_objective``):

    - ``"chen"`` (Chen et al., "Isolating sources of disentanglement in VAEs"): rec + MI +
      beta * TC + dimension-wise KL, each term estimated from the batch;
    - ``"authors"`` (the WTC authors' code, disent/tasks/tc_vae.py): rec + KL + beta * TC with
      the analytic KL, so TC weighs 1 + beta in effect (KL = MI + TC + dimension-wise KL).

    log q(z) comes from the batch with one of three estimators (``estimator``): Chen et al.'s
    stratified (``"mss"``) or weighted (``"mws"``) sampling, both needing the data set size, or
    the authors' weighted sampling without its constant (``"mws-authors"``, weights 1: the TC
    estimate is shifted by a constant, its gradient is the same as ``"mws"``'s)."""

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

    def __init__(self, in_channels=1, latent_dim=10, runs=None, dataset_size: int = 737280,
                 estimator: str = "mss", tcvae_objective: str = "chen", **strengths):
        super().__init__(in_channels, latent_dim, runs, **strengths)
        if estimator not in self.ESTIMATORS:
            raise ValueError(f"beta-tcvae: estimator must be one of {', '.join(self.ESTIMATORS)}"
                             f", got {estimator!r}")
        if tcvae_objective not in self.OBJECTIVES:
            raise ValueError(f"beta-tcvae: tcvae_objective must be one of "
                             f"{', '.join(self.OBJECTIVES)}, got {tcvae_objective!r}")
        if dataset_size < 2:
            raise ValueError("beta-tcvae: dataset_size must be >= 2")
        self.estimator = estimator
        self.objective = tcvae_objective
        self.dataset_size = int(dataset_size)

    def constructor_options(self) -> dict:
        return {"dataset_size": self.dataset_size, "estimator": self.estimator,
                "tcvae_objective": self.objective}

    def log_importance_weights(self, batch: int, device, dtype):
        """log w[i, j]: the weight of q(z_i | x_j) in the estimate of q(z_i)."""
        N = self.dataset_size
        if self.estimator == "mws-authors":  # the authors' code omits the constant
            return torch.zeros((batch, batch), device=device, dtype=dtype)
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
        B = z.shape[-2]
        log_qz_x = gaussian_log_density(z, mean, logvar).sum(-1)  # log q(z_i | x_i)
        log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(-1)
        # log q(z_i | x_j) per dim: (..., B, B, d)
        pair = gaussian_log_density(z.unsqueeze(-2), mean.unsqueeze(-3), logvar.unsqueeze(-3))
        logw = self.log_importance_weights(B, z.device, z.dtype)
        log_qz = torch.logsumexp(pair.sum(-1) + logw, dim=-1)
        log_prod_qzj = torch.logsumexp(pair + logw[..., None], dim=-2).sum(-1)
        mi = (log_qz_x - log_qz).mean(-1)
        tc = (log_qz - log_prod_qzj).mean(-1)
        dim_kl = (log_prod_qzj - log_pz).mean(-1)
        beta = self.strength("beta")
        if self.objective == "authors":
            kl = kl_divergence(mean, logvar)
            return {"loss": rec + kl + beta * tc, "reconstruction": rec, "kl": kl, "mi": mi,
                    "tc": tc, "dim_kl": dim_kl}
        loss = rec + mi + beta * tc + dim_kl
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

    def __init__(self, in_channels=1, latent_dim=10, runs=None, **strengths):
        super().__init__(in_channels, latent_dim, runs, **strengths)
        self.adversaries["critic"] = make_critic(latent_dim, runs)

    def adversary_losses(self, z, x=None):
        z = z.detach()
        return {"critic": critic_step(self.adversaries["critic"], z, self.permute_dims(z),
                                      "critic_wtc", "critic_gp", self.op_generator())}

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        kl = kl_divergence(mean, logvar)
        # permute_dims is differentiable: the encoder gets gradients through both terms.
        wtc = critic_estimate(self.adversaries["critic"], z, self.permute_dims(z))
        return {"loss": rec + kl + self.strength("gamma") * wtc, "reconstruction": rec,
                "kl": kl, "wtc": wtc}
