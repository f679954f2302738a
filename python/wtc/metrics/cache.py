"""Every image encoded once: the cached representation of an evaluation.

A ground-truth data set has finitely many images and the representation (the posterior mean) is
a deterministic function of the image, so when an evaluation draws more observations than the
data set holds (the paper protocol draws about a million per repeat, 50 repeats, from dSprites'
737,280 images) it is cheaper to encode every image once and look the codes up.

The metrics keep their interface - observations from ``dataset.sample_observations_from_factors
(factors, rng)``, codes from ``represent(observations)`` - through two stand-ins:
:class:`EncodedDataset` wraps the data set and returns the observations as their image indices
(:class:`ImageIndices`), and :class:`CachedRepresentation` maps those indices to the cached
codes (and still encodes real images, for a metric that loads its own with ``dataset.batch``).
The factor draws are the data set's own and the indices are those its images would come from,
so every sample, vote and score is the uncached one's, up to the float rounding of encoding the
images in other batches.

Only data sets whose observation of a factor row is one fixed image are cached: those that keep
:meth:`GroundTruthDataset.sample_observations_from_factors` (which consumes no random draws), or
that say which image they would draw by an ``observation_indices(factors, rng)`` method taking
the same draws from ``rng``. Others (SmallNORB picks one of several images per factor row;
observations that are not images) are evaluated uncached.
"""

from __future__ import annotations

import numpy as np
import torch

from wtc.data.base import GroundTruthDataset
from wtc.representation import encode_dataset, posterior_means

#: Images drawn per repeat by the metrics that draw their own, from the sample sizes n
#: (FactorVAE: the variance sample and 64 images a vote; BetaVAE: two batches of 64 a point).
#: A metric not listed draws only the shared train / test samples it declares.
OWN_DRAWS = {
    "factor_vae": lambda n: n["variance_samples"] + 64 * (n["votes_train"] + n["votes_eval"]),
    "beta_vae": lambda n: 2 * 64 * (n["votes_train"] + n["votes_eval"]),
}


class ImageIndices(np.ndarray):
    """Observations given as the data set's image indices (int64); slicing keeps the type."""


def observation_indices(dataset, factors, rng=None):
    """The image indices ``dataset.sample_observations_from_factors(factors, rng)`` would load,
    taking the same draws from ``rng``; None if the data set does not say (not cacheable)."""
    own = getattr(dataset, "observation_indices", None)
    if own is not None:
        return np.asarray(own(factors, rng), dtype=np.int64)
    if type(dataset).sample_observations_from_factors is \
            GroundTruthDataset.sample_observations_from_factors:
        return dataset.factors_to_index(factors)  # the base method: no random draws
    return None


def cacheable(dataset) -> bool:
    """Whether every observation of ``dataset`` is one image it can enumerate and encode."""
    if not isinstance(dataset, GroundTruthDataset) or not dataset.factor_sizes or len(dataset) < 1:
        return False
    return (getattr(dataset, "observation_indices", None) is not None
            or type(dataset).sample_observations_from_factors
            is GroundTruthDataset.sample_observations_from_factors)


def draws_per_repeat(metrics, n: dict) -> int:
    """How many images one repeat of :func:`wtc.metrics.evaluate` encodes for ``metrics``."""
    from wtc.metrics.registry import metric

    entries = [metric(m) for m in metrics]
    needs = set().union(*(e.needs for e in entries)) if entries else set()
    total = n["num_train"] if needs & {"train", "test"} else 0
    total += n["num_test"] if "test" in needs else 0
    return total + sum(OWN_DRAWS[e.name](n) for e in entries if e.name in OWN_DRAWS)


class EncodedDataset:
    """``dataset`` whose observations are image indices (:class:`ImageIndices`); everything
    else - factors, sampling, ``batch`` (real images), ``len`` - is the data set's."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getattr__(self, name):
        if name == "dataset":  # not yet set (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self):
        return len(self.dataset)

    def sample_observations_from_factors(self, factors, rng=None) -> ImageIndices:
        return observation_indices(self.dataset, factors, rng).view(ImageIndices)


class CachedRepresentation:
    """``observations -> codes`` over codes cached for every image: image indices are looked up,
    real images (a metric that loads its own) are encoded by the model."""

    def __init__(self, model, codes: torch.Tensor, batch_size: int = 512):
        self.model, self.codes, self.batch_size = model, codes, batch_size

    @classmethod
    def encode(cls, model, dataset, batch_size: int = 512, progress: bool = False):
        """Encode every image of ``dataset`` once (batched, on the model's device)."""
        return cls(model, encode_dataset(model, dataset, batch_size, progress), batch_size)

    def __call__(self, observations) -> torch.Tensor:
        if isinstance(observations, ImageIndices):
            return self.codes[torch.from_numpy(np.asarray(observations, dtype=np.int64))]
        return posterior_means(self.model, observations, self.batch_size)
