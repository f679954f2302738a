"""FactorVAE score (Kim & Mnih 2018) and BetaVAE score (Higgins et al. 2017): the metrics that
sample from a ground-truth data set and a representation function."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from wtc.metrics.registry import register_metric
from wtc.metrics.sampling import make_sampler


class FactorVAEResult(NamedTuple):
    train_accuracy: float
    eval_accuracy: float  #: the score
    num_active_dims: int


class BetaVAEResult(NamedTuple):
    train_accuracy: float
    eval_accuracy: float  #: the score


NON_FINITE = "represent returned NaN or infinite codes"


def _represent_chunks(dataset, represent, factors: np.ndarray, rng, batch_size=4096,
                      check=True):
    """Codes of observations of the given factor rows, chunk by chunk: (start, (n, d) float64).
    Consumers reduce each chunk while it is in cache instead of concatenating every code; with
    check=False they check their reductions for NaN instead (a NaN code propagates)."""
    for start in range(0, len(factors), batch_size):
        x = dataset.sample_observations_from_factors(factors[start:start + batch_size], rng)
        codes = represent(x)
        codes = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else codes
        codes = np.asarray(codes, dtype=np.float64)
        if check and not np.isfinite(codes).all():
            raise ValueError(NON_FINITE)
        yield start, codes


def _represent_batches(dataset, represent, factors: np.ndarray, rng, batch_size=4096):
    """Codes (n, d) of observations of the given factor rows, embedded in batches."""
    return np.concatenate([c for _, c in _represent_chunks(dataset, represent, factors, rng,
                                                           batch_size)])


def factor_vae_score(dataset, represent, *, batch_size: int = 64, num_train: int = 10_000,
                     num_eval: int = 5_000, num_variance_estimate: int = 10_000,
                     prune_threshold: float = 0.05, balanced_votes: bool = False,
                     seed: int = 0, sampling: str = "numpy") -> FactorVAEResult:
    """Each vote fixes one factor over a batch, and votes (factor, the active code dim with the
    least variance relative to its global variance (ddof 1)); the classifier maps each dim to its
    majority factor. Accuracy on the training votes and on fresh evaluation votes (the score).
    Active dims have global std >= prune_threshold; none active gives 0. Reports the real number
    of active dims (the reference reports the mask length). ``sampling="dlib"`` draws every
    sample as disentanglement_lib does (:mod:`wtc.metrics.sampling`; votes not balanced)."""
    sampler = make_sampler(sampling, seed)
    sampler.check_votes(balanced_votes)  # before any work
    obs_rng = sampler.obs_rng
    variance_factors = sampler.factors(dataset, num_variance_estimate)
    K = dataset.num_factors
    codes = _represent_batches(dataset, represent, variance_factors, obs_rng)
    variance = codes.var(axis=0, ddof=1)
    active = np.sqrt(variance) >= prune_threshold
    if not active.any():
        return FactorVAEResult(0.0, 0.0, 0)
    d = codes.shape[1]

    active_dims = np.flatnonzero(active)
    active_variance = variance[active]
    # whole votes per chunk, so each chunk's variances are complete
    chunk = batch_size * max(1, 4096 // batch_size)

    def votes(n):
        factors, ks = sampler.vote_factors(dataset, n, batch_size, balanced_votes)
        dims = np.empty(n, dtype=np.int64)
        for start, z in _represent_chunks(dataset, represent, factors, obs_rng, chunk,
                                          check=False):
            z = z.reshape(-1, batch_size, d)
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite codes: raised below
                # einsum's sums over the middle axis are 4x faster than ndarray.mean's
                centred = z - (np.einsum("vbj->vj", z) / batch_size)[:, None, :]
                batch_var = np.einsum("vbj,vbj->vj", centred, centred) / (batch_size - 1)
            if not np.isfinite(batch_var).all():  # a non-finite code makes its variance so
                raise ValueError(NON_FINITE)
            first = start // batch_size
            ratio = batch_var[:, active] / active_variance
            dims[first:first + len(z)] = active_dims[ratio.argmin(1)]
        return dims, ks

    train_dims, train_ks = votes(num_train)
    counts = np.zeros((d, K), dtype=np.int64)
    np.add.at(counts, (train_dims, train_ks), 1)
    classifier = counts.argmax(axis=1)
    train_accuracy = counts.max(axis=1).sum() / num_train
    eval_dims, eval_ks = votes(num_eval)
    eval_accuracy = float(np.mean(classifier[eval_dims] == eval_ks))
    return FactorVAEResult(float(train_accuracy), eval_accuracy, int(active.sum()))


def beta_vae_score(dataset, represent, *, batch_size: int = 64, num_train: int = 10_000,
                   num_eval: int = 5_000, seed: int = 0, sampling: str = "numpy"
                   ) -> BetaVAEResult:
    """Each point fixes a factor k across two batches; its feature is mean |code1 - code2| over
    the batch, its label k; a default LogisticRegression's accuracy on train and eval points.
    ``sampling="dlib"`` draws every point as disentanglement_lib does."""
    from sklearn.linear_model import LogisticRegression

    sampler = make_sampler(sampling, seed)
    obs_rng = sampler.obs_rng

    def points(n):
        f1, f2, ks = sampler.beta_vae_factors(dataset, n, batch_size)
        z1 = _represent_batches(dataset, represent, f1, obs_rng)
        z2 = _represent_batches(dataset, represent, f2, obs_rng)
        features = np.abs(z1 - z2).reshape(n, batch_size, -1).mean(axis=1)
        return features, ks

    xtr, ytr = points(num_train)
    xte, yte = points(num_eval)
    clf = LogisticRegression(random_state=seed, max_iter=1000).fit(xtr, ytr)
    return BetaVAEResult(float(clf.score(xtr, ytr)), float(clf.score(xte, yte)))


# -- in evaluate: votes and points drawn by the protocol's sampler from the data set -----------

@register_metric("factor_vae", display="FactorVAE score", needs=("dataset",), default=True)
def _factor_vae_in_evaluate(r) -> float:
    n = r.sizes
    return factor_vae_score(r.dataset, r.represent, num_train=n["votes_train"],
                            num_eval=n["votes_eval"], num_variance_estimate=n["variance_samples"],
                            balanced_votes=r.protocol["balanced_votes"], seed=r.seed,
                            sampling=r.sampling).eval_accuracy


# not in the paper's table 1: a column only on request
@register_metric("beta_vae", display="BetaVAE score", needs=("dataset",), column=False)
def _beta_vae_in_evaluate(r) -> float:
    return beta_vae_score(r.dataset, r.represent, num_train=r.sizes["votes_train"],
                          num_eval=r.sizes["votes_eval"], seed=r.seed,
                          sampling=r.sampling).eval_accuracy
