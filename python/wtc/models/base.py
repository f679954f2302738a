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
from wtc.models.networks import Decoder, Encoder, stack_state, unstack_state
from wtc_ext.nn import MLPCritic, StackedMLPCritic

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


# The loss terms take tensors with any leading dims before the batch dim (a stacked model's run
# dim): images (..., B, C, H, W), codes (..., B, d); each returns one value per leading index.

def reconstruction_loss(logits, x):
    """Bernoulli negative log-likelihood summed over pixels, averaged over the batch."""
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return nll.sum((-3, -2, -1)).mean(-1)


def kl_divergence(mean, logvar):
    """KL(q(z|x) || N(0, I)) summed over dims, averaged over the batch."""
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(-1).mean(-1)


def gaussian_log_density(z, mean, logvar):
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean).pow(2) * torch.exp(-logvar))


class RunGenerators:
    """Where a model's random numbers come from while it trains: one ``torch.Generator`` per
    run, so each run of a stack draws exactly what it would draw trained alone (the trainer seeds
    them). ``stacked`` says whether tensors carry a leading run dim; without one there is a
    single generator."""

    def __init__(self, generators, stacked: bool):
        self.generators = list(generators)
        self.stacked = stacked
        if not stacked and len(self.generators) != 1:
            raise ValueError("RunGenerators: a model without a run dim takes one generator")

    def normal_like(self, t: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            return torch.randn(t.shape, generator=self.generators[0], device=t.device,
                               dtype=t.dtype)
        return torch.stack([torch.randn(t.shape[1:], generator=g, device=t.device, dtype=t.dtype)
                            for g in self.generators])

    def permute_dims(self, z: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            return wtc_ext.permute_dims(z, generator=self.generators[0])
        return torch.stack([wtc_ext.permute_dims(z[r], generator=g)
                            for r, g in enumerate(self.generators)])

    def for_op(self):
        """The ``generator`` argument of a wtc_ext op: one generator, or one per run."""
        return self.generators if self.stacked else self.generators[0]


def critic_step(critic: nn.Module, p: torch.Tensor, q: torch.Tensor, estimate: str,
                gp_name: str, generator=None) -> tuple:
    """A critic's adversary step between samples p and q: (its WGAN-GP loss, the logged terms
    {estimate: mean f(p) - mean f(q), gp_name: its gradient penalty}), one value per run."""
    out = wtc_ext.critic_loss(critic, p, q, gp_weight=GP_WEIGHT, generator=generator)
    return out.loss, {estimate: out.w1, gp_name: out.gradient_penalty}


def make_critic(latent_dim: int, runs: int | None):
    """The paper's table 3 critic (10-256-256-256-1, ReLU), for one run or R stacked."""
    if runs is None:
        return MLPCritic(latent_dim)
    return StackedMLPCritic(runs, latent_dim)


def critic_estimate(critic: nn.Module, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """mean f(p) - mean f(q): the critic's W1 estimate in a main objective (differentiable in
    p and q, so the encoder gets its gradient)."""
    return critic(p).mean((-2, -1)) - critic(q).mean((-2, -1))


class DisentanglingModel(nn.Module, abc.ABC):
    """Encoder, decoder and the model's adversaries (critics or discriminator). Subclasses
    define :meth:`main_terms` and, when they have adversaries, :meth:`adversary_losses`, written
    for tensors with any leading dims before the batch dim, and draw their random numbers with
    :meth:`normal_like` and :meth:`permute_dims` (and pass :meth:`op_generator` to the ops),
    so that one class trains one run (``runs=None``) or R runs stacked (``runs=R``: every
    parameter and input gets a leading run dim, each strength one value per run)."""

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

    def __init__(self, in_channels=1, latent_dim=10, runs: int | None = None, **strengths):
        super().__init__()
        allowed = dict(self.defaults)
        unknown = set(strengths) - set(allowed)
        if unknown:
            raise ValueError(f"{self.name} takes {', '.join(allowed) or 'no strength'}, not "
                             f"{', '.join(sorted(unknown))}")
        if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int)
                                 or runs < 1):
            raise ValueError(f"{self.name}: runs must be an integer >= 1 or None, got {runs!r}")
        self.runs = runs
        self.rng: RunGenerators | None = None  # None: the global generators
        self.strengths = {}
        for k, default in allowed.items():
            v = strengths.get(k, default)
            values = list(v) if isinstance(v, (list, tuple)) else None
            if values is not None and (runs is None or len(values) != runs):
                raise ValueError(f"{self.name}: {k} takes one number"
                                 + (f" or {runs} (one per run)" if runs else "") + f", got {v!r}")
            for x in values if values is not None else [v]:
                if not math.isfinite(float(x)) or float(x) < 0:
                    raise ValueError(f"{self.name}: {k} must be a finite number >= 0, got {x}")
            if runs is None:
                self.strengths[k] = float(v)
            else:
                values = [float(x) for x in values] if values is not None else [float(v)] * runs
                self.strengths[k] = values
                # a per-run tensor (follows .to(); not in the state dict: config.json holds it)
                self.register_buffer(f"strength_{k}", torch.tensor(values), persistent=False)
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        self.encoder = Encoder(in_channels, latent_dim, runs=runs)
        self.decoder = Decoder(in_channels, latent_dim, runs=runs)
        self.adversaries = nn.ModuleDict()

    # -- shared pieces ------------------------------------------------------------------------
    def strength(self, name: str):
        """Strength ``name``: a number, or for a stacked model a tensor with one value per run
        (shape (R,), broadcasting against per-run terms)."""
        return self.strengths[name] if self.runs is None else getattr(self, f"strength_{name}")

    def normal_like(self, t: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(t) if self.rng is None else self.rng.normal_like(t)

    def permute_dims(self, z: torch.Tensor) -> torch.Tensor:
        """permute_dims of each run's codes (differentiable)."""
        return wtc_ext.permute_dims(z) if self.rng is None else self.rng.permute_dims(z)

    def op_generator(self):
        return None if self.rng is None else self.rng.for_op()

    def encode(self, x):
        mean, logvar = self.encoder(x)
        z = mean + self.normal_like(mean) * (0.5 * logvar).exp()
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

    # -- runs ----------------------------------------------------------------------------------
    def constructor_options(self) -> dict:
        """The keyword arguments (besides channels, latent size, runs and strengths) that build
        a model like this one; subclasses with options extend it."""
        return {}

    def unstack(self, r: int) -> DisentanglingModel:
        """Run r of a stacked model as a single-run model (a copy, on the same device)."""
        if self.runs is None:
            raise ValueError(f"{self.name}: unstack needs a stacked model (runs=R)")
        single = type(self)(self.in_channels, self.latent_dim, None,
                            **{k: v[r] for k, v in self.strengths.items()},
                            **self.constructor_options())
        single.load_state_dict(unstack_state(self.state_dict(), r))
        return single.to(next(self.parameters()).device)


def stack(models_: list) -> DisentanglingModel:
    """R single-run models of one class and shape as one stacked model (their parameters
    copied, each strength one value per run)."""
    first = models_[0]
    if first.runs is not None or any(type(m) is not type(first) for m in models_):
        raise ValueError("stack takes single-run models (runs=None) of one class")
    options = first.constructor_options()
    stacked = type(first)(first.in_channels, first.latent_dim, len(models_),
                          **{k: [m.strengths[k] for m in models_] for k in first.strengths},
                          **options)
    stacked.load_state_dict(stack_state([m.state_dict() for m in models_]))
    return stacked.to(next(first.parameters()).device)


def build(name: str, *, in_channels: int = 1, latent_dim: int = 10, runs: int | None = None,
          **hparams) -> DisentanglingModel:
    """A registered model by name (beta-vae, factor-vae, beta-tcvae, wtc-vae, wae, wtc-wae, and
    any registered since) with its strengths (beta and/or gamma; the defaults are the paper's
    grid's), options (beta-tcvae: dataset_size, estimator, tcvae_objective) and ``runs`` (R for
    R runs stacked, each strength then a number or R numbers)."""
    cls = model_class(name)
    hparams = {k: v for k, v in hparams.items() if v is not None}
    if runs is not None:  # (a model registered from outside may predate runs)
        hparams["runs"] = runs
    return cls(in_channels=in_channels, latent_dim=latent_dim, **hparams)
