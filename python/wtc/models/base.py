"""What every model shares: the registry, :class:`DisentanglingModel` and the loss terms.

A model is a :class:`DisentanglingModel` subclass that declares, beside its code, everything the
rest of wtc needs to know about it, and is registered by name::

    @wtc.models.register
    class MyVAE(DisentanglingModel):
        name = "my-vae"
        defaults = {"beta": 4.0}          # the strengths it takes and their defaults
        swept = "beta"                    # the strength a sweep varies
        paper_grid = (1.0, 4.0, 8.0, 16.0)  # the sweep's default values (the paper's table 4)
        figure_grid = ...   # optional: the values the paper's figures show (default paper_grid)
        authors_grid = ...  # optional: the authors' run_training.sh values (default paper_grid)
        config_options = ()               # TrainConfig fields its constructor takes
        ...

        @classmethod
        def options_from_dataset(cls, dataset) -> dict:   # what it needs from the data set
            return {}

Every list of models (``MODELS``, the sweep's ``SWEPT`` and ``PAPER_STRENGTHS``, the command
line's help) is a view of the registry, so a model registered from outside the package shows up
everywhere.

Training is split the way the trainer needs it: :meth:`DisentanglingModel.adversary_losses` on
detached codes (one loss per critic or discriminator), then :meth:`DisentanglingModel.main_terms`
for the encoder and decoder, whose adversaries are frozen while it runs, so no adversary loss
ever reaches the encoder.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

import wtc_ext
from wtc.models.networks import Decoder, Encoder

GP_WEIGHT = 4.0  # the authors' gradient-penalty weight for every critic

REGISTRY: dict = {}  # name -> model class, in registration order


def register(cls=None, *, replace: bool = False):
    """Register a :class:`DisentanglingModel` subclass under its ``name`` (a class decorator,
    or ``register(cls)``). Its declarations are checked here, so a mistake fails at import."""

    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, DisentanglingModel)):
            raise TypeError(f"register takes a DisentanglingModel subclass, got {cls!r}")
        name = cls.__dict__.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} must declare its name (a non-empty string)")
        if name in REGISTRY and REGISTRY[name] is not cls and not replace:
            raise ValueError(f"a model named {name!r} is registered already "
                             f"({REGISTRY[name].__qualname__}); pass replace=True to replace it")
        defaults = cls.defaults
        if not isinstance(defaults, dict) or not all(isinstance(k, str) and k.isidentifier()
                                                     for k in defaults):
            raise ValueError(f"{name}: defaults must map strength names to numbers")
        if defaults and cls.swept not in defaults:
            raise ValueError(f"{name}: swept must be one of its strengths "
                             f"({', '.join(defaults)}), got {cls.swept!r}")
        if defaults and not cls.paper_grid:
            raise ValueError(f"{name}: paper_grid must list the swept strength's values")
        for kind in GRIDS:
            grid = getattr(cls, f"{kind}_grid")
            if grid is None and kind != "paper":
                continue  # paper_grid stands in
            if defaults and (not isinstance(grid, (tuple, list)) or not grid or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and v >= 0 for v in grid)):
                raise ValueError(f"{name}: {kind}_grid must be a non-empty tuple of finite "
                                 f"numbers >= 0 (values of {cls.swept}), got {grid!r}")
        REGISTRY[name] = cls
        return cls

    return add if cls is None else add(cls)


def unregister(name: str) -> None:
    """Remove a registered model (tests that register their own clean up with this)."""
    REGISTRY.pop(name, None)


def model_class(name: str) -> type:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(REGISTRY)}")
    return REGISTRY[name]


class RegistryView(Mapping):
    """A read-only name -> ``value(model class)`` mapping that follows the registry, so a model
    registered after import (from outside the package) is in it too."""

    def __init__(self, value):
        self._value = value

    def __getitem__(self, name):
        return self._value(REGISTRY[name])

    def __iter__(self):
        return iter(list(REGISTRY))

    def __len__(self):
        return len(REGISTRY)

    def __repr__(self):
        return repr(dict(self))


# name -> {strength: default}
MODELS = RegistryView(lambda cls: dict(cls.defaults))
# name -> the strength its sweep varies (the others stay at their defaults)
SWEPT = RegistryView(lambda cls: cls.swept)
#: The strength grids a model declares: ``paper`` (the paper's table 4), ``figure`` (what the
#: paper's figures show: section 5.4 and figures 3 and 7 sweep WTC-VAE over six values) and
#: ``authors`` (the authors' run_training.sh). The last two default to the paper's.
GRIDS = ("paper", "figure", "authors")


def strength_grid(cls, kind: str = "paper") -> list:
    """A model class's ``kind`` grid (one of ``GRIDS``) as floats."""
    if kind not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {kind!r}")
    grid = getattr(cls, f"{kind}_grid")
    return [float(v) for v in (cls.paper_grid if grid is None else grid)]


# name -> the swept strength's values in the paper's grid (table 4)
PAPER_STRENGTHS = RegistryView(lambda cls: strength_grid(cls, "paper"))
# name -> the values the paper's figures show (section 5.4, figures 3 and 7)
FIGURE_STRENGTHS = RegistryView(lambda cls: strength_grid(cls, "figure"))
# name -> the values the authors' run_training.sh sweeps
AUTHORS_STRENGTHS = RegistryView(lambda cls: strength_grid(cls, "authors"))


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

    # The declarations :func:`register` reads (see the module's docstring).
    name = ""
    defaults: ClassVar[dict] = {}  # strength name -> default value
    # strength name -> what it weighs, in a few words (wtc train --help shows it per model)
    strength_help: ClassVar[dict] = {}
    swept = ""  # the strength a sweep varies
    paper_grid: tuple = ()  # the swept strength's values in the paper's table 4
    figure_grid: tuple | None = None  # the values the paper's figures show; None: paper_grid
    authors_grid: tuple | None = None  # the authors' run_training.sh values; None: paper_grid
    config_options: tuple = ()  # TrainConfig fields passed to the constructor

    @classmethod
    def options_from_dataset(cls, dataset) -> dict:
        """Constructor options taken from the training data set (beta-TCVAE: its size)."""
        return {}

    def __init__(self, in_channels=1, latent_dim=10, **strengths):
        super().__init__()
        allowed = dict(self.defaults)
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


def build(name: str, *, in_channels: int = 1, latent_dim: int = 10, **hparams) -> DisentanglingModel:
    """A registered model by name (beta-vae, factor-vae, beta-tcvae, wtc-vae, wae, wtc-wae, and
    any registered since) with its strengths (beta and/or gamma; the defaults are the paper's
    grid's) and options (beta-tcvae: dataset_size, estimator="mss"|"mws")."""
    cls = model_class(name)
    hparams = {k: v for k, v in hparams.items() if v is not None}
    return cls(in_channels=in_channels, latent_dim=latent_dim, **hparams)
