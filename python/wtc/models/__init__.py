"""The paper's six models, built by name: ``wtc.models.build("wtc-vae", gamma=10)``.

Every model has the encoder and decoder of the paper's table 3, a Gaussian posterior and a
Bernoulli decoder, and exposes its loss terms by name.

    base.py      the registry (register, MODELS, SWEPT, PAPER_STRENGTHS, build),
                 DisentanglingModel and the shared loss terms
    networks.py  Encoder, Decoder, FactorDiscriminator (table 3)
    vae.py       BetaVAE, FactorVAE, BetaTCVAE, WTCVAE
    wae.py       WAE, WTCWAE

A new model subclasses :class:`DisentanglingModel`, declares its name, strengths, swept strength
and grid, and is registered with ``@wtc.models.register`` (see :mod:`wtc.models.base`).
"""

from wtc.models.base import (
    GP_WEIGHT,
    MODELS,
    PAPER_STRENGTHS,
    REGISTRY,
    SWEPT,
    DisentanglingModel,
    RunGenerators,
    build,
    critic_estimate,
    critic_step,
    gaussian_log_density,
    kl_divergence,
    model_class,
    reconstruction_loss,
    register,
    stack,
    unregister,
)
from wtc.models.networks import Decoder, Encoder, FactorDiscriminator
from wtc.models.vae import (  # importing registers them
    WTCVAE,
    BetaTCVAE,
    BetaVAE,
    FactorVAE,
)
from wtc.models.wae import WAE, WTCWAE

_CLASSES = REGISTRY  # name -> class (the registry itself; kept for older imports)

__all__ = [
    "GP_WEIGHT",
    "MODELS",
    "PAPER_STRENGTHS",
    "REGISTRY",
    "SWEPT",
    "WAE",
    "WTCVAE",
    "WTCWAE",
    "BetaTCVAE",
    "BetaVAE",
    "Decoder",
    "DisentanglingModel",
    "Encoder",
    "FactorDiscriminator",
    "FactorVAE",
    "RunGenerators",
    "build",
    "critic_estimate",
    "critic_step",
    "gaussian_log_density",
    "kl_divergence",
    "model_class",
    "reconstruction_loss",
    "register",
    "stack",
    "unregister",
]
