"""The random draws of the protocols, as one :class:`Sampler` per evaluation.

``numpy`` (the paper protocol, and the default): a ``numpy.random.Generator`` and vectorised
draws. ``authors`` (the WTC authors' protocol): the same, except that the shared samples and the
FactorVAE variance sample are distinct factor rows, as the authors' shuffled pass over the data
set gives them (their votes draw images with replacement, as ``numpy`` does). ``dlib``: disentanglement_lib's draws in its order from one legacy ``RandomState(seed)``,
so that with the same representation function every sample, vote and score is the one
disentanglement_lib computes: factors are drawn factor by factor with ``randint(size, size=n)``,
codes for the code-based metrics in batches of 16 (the train set, then the test set from the
same stream), FactorVAE votes one at a time (``randint(K)``, then 64 factor rows). The images
then come in large batches: their draws only depend on the factors, for every data set whose
observations are a function of its factors (all here but SmallNORB, whose image among those
sharing the factors is picked by its own generator).

``make_sampler(sampling, seed)`` gives the sampler every metric that samples uses: its factor
draws (``factors``, ``code_factors``, ``vote_factors``, ``beta_vae_factors``) and the generator of
the observations (``obs_rng``). The ``dlib_*`` functions are disentanglement_lib's loops.
"""

from __future__ import annotations

import abc
import math

import numpy as np


def check_sampling(sampling: str) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")


def dlib_sample_factors(dataset, n: int, random_state: np.random.RandomState) -> np.ndarray:
    """(n, K) factor classes as disentanglement_lib draws them: one ``randint`` per factor."""
    out = np.empty((n, dataset.num_factors), dtype=np.int64)
    for k, size in enumerate(dataset.factor_sizes):
        out[:, k] = random_state.randint(size, size=n)
    return out


def dlib_factor_batches(dataset, n: int, random_state: np.random.RandomState,
                        batch_size: int = 16) -> np.ndarray:
    """The factors of disentanglement_lib's ``generate_batch_factor_code``: n rows drawn in
    batches of ``batch_size`` (the stream depends on it)."""
    parts = [dlib_sample_factors(dataset, min(batch_size, n - i), random_state)
             for i in range(0, n, batch_size)]
    return np.concatenate(parts) if parts else np.empty((0, dataset.num_factors), np.int64)


def dlib_vote_factors(dataset, num_votes: int, batch_size: int,
                      random_state: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """FactorVAE votes as disentanglement_lib draws them: per vote ``randint(K)`` then
    ``batch_size`` factor rows with that factor set to the first row's value.
    Returns (num_votes * batch_size, K) rows and the (num_votes,) fixed factors."""
    K = dataset.num_factors
    factors = np.empty((num_votes, batch_size, K), dtype=np.int64)
    ks = np.empty(num_votes, dtype=np.int64)
    for v in range(num_votes):
        k = random_state.randint(K)
        f = dlib_sample_factors(dataset, batch_size, random_state)
        f[:, k] = f[0, k]
        factors[v], ks[v] = f, k
    return factors.reshape(-1, K), ks


def dlib_beta_vae_factors(dataset, num_points: int, batch_size: int,
                          random_state: np.random.RandomState):
    """BetaVAE points as disentanglement_lib draws them: per point ``randint(K)``, then two
    batches of factor rows, the second taking the first's value of that factor.
    Returns factors1, factors2 (num_points * batch_size, K) and the (num_points,) factors."""
    K = dataset.num_factors
    f1 = np.empty((num_points, batch_size, K), dtype=np.int64)
    f2 = np.empty_like(f1)
    ks = np.empty(num_points, dtype=np.int64)
    for i in range(num_points):
        k = random_state.randint(K)
        a = dlib_sample_factors(dataset, batch_size, random_state)
        b = dlib_sample_factors(dataset, batch_size, random_state)
        b[:, k] = a[:, k]
        f1[i], f2[i], ks[i] = a, b, k
    return f1.reshape(-1, K), f2.reshape(-1, K), ks


class Sampler(abc.ABC):
    """The draws of one evaluation from ``seed``. Subclasses draw the factor rows; the
    observations of those rows come from ``obs_rng``. Every method advances the same streams,
    so the order of the calls is part of the result."""

    name = ""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def check_votes(self, balanced: bool) -> None:
        """Raise ValueError if :meth:`vote_factors` cannot draw votes so (balanced or not)."""

    @abc.abstractmethod
    def factors(self, dataset, n: int) -> np.ndarray:
        """(n, K) factor rows (FactorVAE's variance sample)."""

    def code_factors(self, dataset, n: int) -> np.ndarray:
        """(n, K) factor rows of the code-based metrics' train or test sample."""
        return self.factors(dataset, n)

    @abc.abstractmethod
    def vote_factors(self, dataset, num_votes: int, batch_size: int, balanced: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
        """FactorVAE votes: (num_votes * batch_size, K) rows with one factor fixed per vote, and
        the (num_votes,) fixed factors."""

    @abc.abstractmethod
    def beta_vae_factors(self, dataset, num_points: int, batch_size: int):
        """BetaVAE points: factors1, factors2 (num_points * batch_size, K), the second taking
        the first's value of the point's factor, and the (num_points,) factors."""


class NumpySampler(Sampler):
    """Vectorised draws from one ``numpy.random.Generator`` that the observations share."""

    name = "numpy"

    def __init__(self, seed: int):
        super().__init__(seed)
        self.rng = self.obs_rng = np.random.default_rng(self.seed)

    def factors(self, dataset, n):
        return dataset.sample_factors(n, self.rng)

    def vote_factors(self, dataset, num_votes, batch_size, balanced=False):
        rng, K = self.rng, dataset.num_factors
        if balanced:  # votes spread evenly over the factors (the WTC authors' code)
            ks = np.resize(np.arange(K), num_votes)
            rng.shuffle(ks)
        else:  # a random factor per vote (disentanglement_lib)
            ks = rng.integers(0, K, num_votes)
        factors = dataset.sample_factors(num_votes * batch_size, rng)
        factors = factors.reshape(num_votes, batch_size, K)
        votes = np.arange(num_votes)
        factors[votes, :, ks] = factors[votes, 0, ks][:, None]
        return factors.reshape(-1, K), ks

    def beta_vae_factors(self, dataset, num_points, batch_size):
        rng, K = self.rng, dataset.num_factors
        ks = rng.integers(0, K, num_points)
        f1 = dataset.sample_factors(num_points * batch_size, rng)
        f1 = f1.reshape(num_points, batch_size, K)
        f2 = dataset.sample_factors(num_points * batch_size, rng)
        f2 = f2.reshape(num_points, batch_size, K)
        rows = np.arange(num_points)
        f2[rows, :, ks] = f1[rows, :, ks]
        return f1.reshape(-1, K), f2.reshape(-1, K), ks


class AuthorsSampler(NumpySampler):
    """:class:`NumpySampler` whose shared and variance samples are distinct factor rows: the
    authors take them from a shuffled pass over the data set (``ordered_indices`` of a data set
    built with shuffle=True), so no image repeats within a sample."""

    name = "authors"

    def factors(self, dataset, n):
        grid = math.prod(dataset.factor_sizes)
        if not grid:
            raise ValueError(f"{getattr(dataset, 'name', 'the data set')} has no ground-truth "
                             "factors")
        # Beyond one pass (only when asked for more rows than the grid holds; the authors' loop
        # stops at the data set's end) further passes follow, each distinct within itself.
        passes = [self.rng.choice(grid, size=min(grid, n - start), replace=False)
                  for start in range(0, n, grid)]
        rows = np.concatenate(passes) if passes else np.empty(0, np.int64)
        return np.stack(np.unravel_index(rows, dataset.factor_sizes), axis=-1).astype(np.int64)


class DlibSampler(Sampler):
    """disentanglement_lib's loops on one legacy ``RandomState(seed)``. The observations get
    their own generator: their draws depend only on the factors (module docstring), so they
    must not consume the factors' stream."""

    name = "dlib"

    def __init__(self, seed: int):
        super().__init__(seed)
        self.rng = np.random.RandomState(self.seed)
        self.obs_rng = np.random.default_rng(self.seed)

    def factors(self, dataset, n):
        return dlib_sample_factors(dataset, n, self.rng)

    def code_factors(self, dataset, n):
        return dlib_factor_batches(dataset, n, self.rng)

    def check_votes(self, balanced):
        if balanced:  # disentanglement_lib draws a random factor per vote
            raise ValueError("balanced_votes: disentanglement_lib's sampling draws a random "
                             "factor per vote; pass balanced_votes=False with sampling='dlib'")

    def vote_factors(self, dataset, num_votes, batch_size, balanced=False):
        self.check_votes(balanced)
        return dlib_vote_factors(dataset, num_votes, batch_size, self.rng)

    def beta_vae_factors(self, dataset, num_points, batch_size):
        return dlib_beta_vae_factors(dataset, num_points, batch_size, self.rng)


SAMPLERS = {"numpy": NumpySampler, "authors": AuthorsSampler, "dlib": DlibSampler}
SAMPLINGS = tuple(SAMPLERS)


def make_sampler(sampling: str, seed: int) -> Sampler:
    """The sampler of ``sampling`` (one of ``SAMPLINGS``) seeded with ``seed``."""
    check_sampling(sampling)
    return SAMPLERS[sampling](seed)
