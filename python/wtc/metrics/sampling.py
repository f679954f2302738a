"""The random draws of the two protocols.

``numpy`` (the paper protocol, and the default): a ``numpy.random.Generator`` and vectorised
draws. ``dlib``: disentanglement_lib's draws in its order from one legacy ``RandomState(seed)``,
so that with the same representation function every sample, vote and score is the one
disentanglement_lib computes: factors are drawn factor by factor with ``randint(size, size=n)``,
codes for the code-based metrics in batches of 16 (the train set, then the test set from the
same stream), FactorVAE votes one at a time (``randint(K)``, then 64 factor rows). The images
then come in large batches: their draws only depend on the factors, for every data set whose
observations are a function of its factors (all here but SmallNORB, whose image among those
sharing the factors is picked by its own generator).
"""

from __future__ import annotations

import numpy as np

SAMPLINGS = ("numpy", "dlib")


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
