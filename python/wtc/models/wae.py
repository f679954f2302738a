"""The WAE family: WAE and WTC-WAE (a critic's W1 between the codes and the prior instead of a
KL term; WTC-WAE adds the Wasserstein total correlation)."""

from __future__ import annotations

from typing import ClassVar

from wtc.models.base import (
    DisentanglingModel,
    critic_estimate,
    critic_step,
    make_critic,
    reconstruction_loss,
    register,
)


@register
class WAE(DisentanglingModel):
    """rec + beta * W1(q(z), p(z)), W1 from a critic g between codes and prior samples."""

    name = "wae"
    defaults: ClassVar[dict] = {"beta": 1.0}
    strength_help: ClassVar[dict] = {"beta": "weight of the W1 between the codes and the "
                                                  "prior (a critic)"}
    swept = "beta"
    paper_grid = (1.0, 4.0, 8.0, 16.0)

    def __init__(self, in_channels=1, latent_dim=10, runs=None, **strengths):
        super().__init__(in_channels, latent_dim, runs, **strengths)
        self.adversaries["critic"] = make_critic(latent_dim, runs)

    def adversary_losses(self, z, x=None):
        z = z.detach()
        return {"critic": critic_step(self.adversaries["critic"], z, self.normal_like(z),
                                      "critic_w1", "critic_gp", self.op_generator())}

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        w1 = critic_estimate(self.adversaries["critic"], z, self.normal_like(z))
        return {"loss": rec + self.strength("beta") * w1, "reconstruction": rec, "w1": w1}


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

    def __init__(self, in_channels=1, latent_dim=10, runs=None, **strengths):
        super().__init__(in_channels, latent_dim, runs, **strengths)
        self.adversaries["critic_f"] = make_critic(latent_dim, runs)
        self.adversaries["critic_g"] = make_critic(latent_dim, runs)

    def adversary_losses(self, z, x=None):
        z = z.detach()
        zp = self.permute_dims(z)
        gen = self.op_generator()
        return {"critic_f": critic_step(self.adversaries["critic_f"], z, zp, "critic_wtc",
                                        "critic_f_gp", gen),
                "critic_g": critic_step(self.adversaries["critic_g"], zp, self.normal_like(z),
                                        "critic_w1", "critic_g_gp", gen)}

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        zp = self.permute_dims(z)
        w1 = critic_estimate(self.adversaries["critic_g"], zp, self.normal_like(z))
        wtc = critic_estimate(self.adversaries["critic_f"], z, zp)
        loss = rec + self.strength("beta") * w1 + self.strength("gamma") * wtc
        return {"loss": loss, "reconstruction": rec, "w1": w1, "wtc": wtc}
