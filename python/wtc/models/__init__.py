"""The paper's six models, built by name: ``wtc.models.build("wtc-vae", gamma=10)``.

Every model has the encoder and decoder of the paper's table 3, a Gaussian posterior and a
Bernoulli decoder, and exposes its loss terms by name. Training is split the way the trainer
needs it: :meth:`DisentanglingModel.adversary_losses` on detached codes (one loss per critic or
discriminator), then :meth:`DisentanglingModel.main_terms` for the encoder and decoder, whose
adversaries are frozen while it runs, so no adversary loss ever reaches the encoder.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import nn

import wtc_ext
from wtc_ext.nn import MLPCritic

GP_WEIGHT = 4.0  # the authors' gradient-penalty weight for every critic

# name -> (strength names it takes, their defaults)
MODELS = {
    "beta-vae": {"beta": 4.0},
    "factor-vae": {"gamma": 10.0},
    "beta-tcvae": {"beta": 4.0},
    "wtc-vae": {"gamma": 10.0},
    "wae": {"beta": 1.0},
    "wtc-wae": {"beta": 1.0, "gamma": 10.0},
}


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


def reconstruction_loss(logits, x):
    """Bernoulli negative log-likelihood summed over pixels, averaged over the batch."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def kl_divergence(mean, logvar):
    """KL(q(z|x) || N(0, I)) summed over dims, averaged over the batch."""
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(1).mean()


def gaussian_log_density(z, mean, logvar):
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean).pow(2) * torch.exp(-logvar))


def critic_step(critic: nn.Module, p: torch.Tensor, q: torch.Tensor, estimate: str,
                gp_name: str) -> tuple:
    """A critic's adversary step between samples p and q: (its WGAN-GP loss, the logged terms
    {estimate: mean f(p) - mean f(q), gp_name: its gradient penalty})."""
    out = wtc_ext.critic_loss(critic, p, q, gp_weight=GP_WEIGHT)
    return out.loss, {estimate: out.w1, gp_name: out.gradient_penalty}


def critic_estimate(critic: nn.Module, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """mean f(p) - mean f(q): the critic's W1 estimate in a main objective (differentiable in
    p and q, so the encoder gets its gradient)."""
    return critic(p).mean() - critic(q).mean()


class DisentanglingModel(nn.Module, abc.ABC):
    """Encoder, decoder and the model's adversaries (critics or discriminator). Subclasses
    define :meth:`main_terms` and, when they have adversaries, :meth:`adversary_losses`."""

    name = ""

    def __init__(self, in_channels=1, latent_dim=10, **strengths):
        super().__init__()
        allowed = MODELS[self.name]
        unknown = set(strengths) - set(allowed)
        if unknown:
            raise ValueError(f"{self.name} takes {', '.join(allowed) or 'no strength'}, not "
                             f"{', '.join(sorted(unknown))}")
        self.strengths = {**allowed, **{k: float(v) for k, v in strengths.items()}}
        for k, v in self.strengths.items():
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{self.name}: {k} must be a finite number >= 0, got {v}")
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        self.encoder = Encoder(in_channels, latent_dim)
        self.decoder = Decoder(in_channels, latent_dim)
        self.adversaries = nn.ModuleDict()

    # -- shared pieces ------------------------------------------------------------------------
    def encode(self, x):
        mean, logvar = self.encoder(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return mean, logvar, z

    @torch.no_grad()
    def represent(self, x):
        """Posterior means: the representation the metrics evaluate."""
        return self.encoder(x)[0]

    def main_parameters(self):
        return list(self.encoder.parameters()) + list(self.decoder.parameters())

    def adversary_losses(self, z: torch.Tensor, x: torch.Tensor | None = None) -> dict:
        """name -> (loss, logged terms) for each adversary, from detached codes."""
        return {}

    @abc.abstractmethod
    def main_terms(self, x, mean, logvar, z) -> dict:
        """Named loss terms; 'loss' is the objective minimised by the encoder and decoder."""


class BetaVAE(DisentanglingModel):
    name = "beta-vae"

    def main_terms(self, x, mean, logvar, z):
        rec = reconstruction_loss(self.decoder(z), x)
        kl = kl_divergence(mean, logvar)
        return {"loss": rec + self.strengths["beta"] * kl, "reconstruction": rec, "kl": kl}


class FactorVAE(DisentanglingModel):
    name = "factor-vae"

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


class BetaTCVAE(DisentanglingModel):
    """beta-TCVAE (Chen et al.): rec + MI + beta * TC + dimension-wise KL, with log q(z) from the
    batch by minibatch weighted (``estimator="mws"``) or stratified (``"mss"``) sampling; both need
    the data set size."""

    name = "beta-tcvae"

    def __init__(self, in_channels=1, latent_dim=10, dataset_size: int = 737280,
                 estimator: str = "mss", **strengths):
        super().__init__(in_channels, latent_dim, **strengths)
        if estimator not in ("mws", "mss"):
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


class WTCVAE(DisentanglingModel):
    """rec + KL + gamma * WTC, WTC = mean f(z) - mean f(permute_dims(z)) (paper eq. 8)."""

    name = "wtc-vae"

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


class WAE(DisentanglingModel):
    """rec + beta * W1(q(z), p(z)), W1 from a critic g between codes and prior samples."""

    name = "wae"

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


class WTCWAE(DisentanglingModel):
    """rec + beta * [g(permute_dims(z)) - g(z_prior)] + gamma * [f(z) - f(permute_dims(z))]."""

    name = "wtc-wae"

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


_CLASSES = {cls.name: cls for cls in (BetaVAE, FactorVAE, BetaTCVAE, WTCVAE, WAE, WTCWAE)}


def build(name: str, *, in_channels: int = 1, latent_dim: int = 10, **hparams) -> DisentanglingModel:
    """A model by name (beta-vae, factor-vae, beta-tcvae, wtc-vae, wae, wtc-wae) with its
    strengths (beta and/or gamma; the defaults are the paper's grid's) and options
    (beta-tcvae: dataset_size, estimator="mss"|"mws")."""
    if name not in _CLASSES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(_CLASSES)}")
    hparams = {k: v for k, v in hparams.items() if v is not None}
    return _CLASSES[name](in_channels=in_channels, latent_dim=latent_dim, **hparams)
