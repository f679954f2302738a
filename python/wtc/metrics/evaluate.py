"""Run any subset of the metrics on a model and a data set under a named protocol.

``paper`` (the WTC authors' code): posterior means; ``repeats`` evaluations (default 50) with
seeds seed + 73 i; 12,800 samples for MIG, Modularity and WDG; FactorVAE score with 10,000 / 5,000
votes of batch 64, variances from 12,800 samples, threshold 0.05, votes balanced over factors.
``dlib`` (disentanglement_lib's unsupervised study): one evaluation with seed 0; 10,000 samples
(train) and 5,000 (test); FactorVAE score with a random factor per vote and variances from
10,000 samples, and every draw disentanglement_lib's, in its order, from RandomState(seed) (see
wtc.metrics.sampling). Both use 20 histogram bins.
"""

from __future__ import annotations

import numpy as np

from wtc.metrics._utils import as_codes, discretize, mutual_information
from wtc.metrics.dci import dci
from wtc.metrics.factor_vae import _rngs, beta_vae_score, factor_vae_score
from wtc.metrics.mig import mig_from_mutual_information
from wtc.metrics.modularity import explicitness, modularity_score
from wtc.metrics.reconstruction import reconstruction_error
from wtc.metrics.sampling import dlib_factor_batches
from wtc.metrics.sap import sap
from wtc.metrics.wdg import wdg
from wtc.representation import representation_function

PROTOCOLS = {
    "paper": dict(repeats=50, seed_stride=73, num_train=12_800, num_test=5_000,
                  votes_train=10_000, votes_eval=5_000, variance_samples=12_800,
                  balanced_votes=True, sampling="numpy"),
    "dlib": dict(repeats=1, seed_stride=1, num_train=10_000, num_test=5_000,
                 votes_train=10_000, votes_eval=5_000, variance_samples=10_000,
                 balanced_votes=False, sampling="dlib"),
}
SIZE_NAMES = ("num_train", "num_test", "votes_train", "votes_eval", "variance_samples")
METRICS = ("reconstruction", "factor_vae", "beta_vae", "mig", "modularity", "explicitness",
           "dci", "sap", "wdg")


def protocol_settings(protocol: str, repeats: int | None = None, scale: float = 1.0,
                      sizes: dict | None = None) -> tuple[int, dict]:
    """(repeats, sample sizes) that :func:`evaluate` uses for these arguments."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}, got {protocol!r}")
    p = PROTOCOLS[protocol]
    repeats = p["repeats"] if repeats is None else int(repeats)
    n = {k: max(2, int(p[k] * scale)) for k in SIZE_NAMES}
    for k, v in (sizes or {}).items():
        if k not in SIZE_NAMES:
            raise ValueError(f"unknown sample size {k!r}; known: {', '.join(SIZE_NAMES)}")
        if int(v) < 2 or int(v) != v:
            raise ValueError(f"sample size {k} must be an integer >= 2, got {v!r}")
        n[k] = int(v)
    return repeats, n


TRAIN_METRICS = {"mig", "modularity", "explicitness", "dci", "sap", "wdg"}
TEST_METRICS = {"explicitness", "dci", "sap"}


def one_repeat(dataset, represent, metrics, n: dict, protocol: str, seed: int,
               model=None) -> dict:
    """One evaluation of ``metrics`` with the protocol's sampling, sample sizes ``n`` and
    ``seed``; ``represent`` maps observations to codes (``model`` is needed only for
    reconstruction). The code-based metrics share one train sample (and one test sample, drawn
    only for the metrics that use it), and MIG and Modularity one mutual information matrix."""
    p = PROTOCOLS[protocol]
    metrics = list(metrics)
    ztr = ytr = zte = yte = None
    if TRAIN_METRICS & set(metrics):
        # Every code-based metric of disentanglement_lib starts its own RandomState(seed) and
        # draws the same train and test sets: they are drawn once.
        draws, obs_rng = _rngs(seed, p["sampling"])

        def sample(size):
            if p["sampling"] == "dlib":
                y = dlib_factor_batches(dataset, size, draws)
            else:
                y = dataset.sample_factors(size, draws)
            z = represent(dataset.sample_observations_from_factors(y, obs_rng))
            return as_codes(z), y

        ztr, ytr = sample(n["num_train"])
        if TEST_METRICS & set(metrics):
            zte, yte = sample(n["num_test"])
    mi = None  # the train codes' MI with the factors, shared by MIG and Modularity

    def train_mi():
        nonlocal mi
        if mi is None:
            mi = mutual_information(discretize(ztr), ytr)
        return mi

    out = {}
    for m in metrics:
        if m == "reconstruction":
            v = reconstruction_error(model, dataset, num_samples=n["num_test"], seed=seed)
        elif m == "factor_vae":
            v = factor_vae_score(dataset, represent, num_train=n["votes_train"],
                                 num_eval=n["votes_eval"],
                                 num_variance_estimate=n["variance_samples"],
                                 balanced_votes=p["balanced_votes"], seed=seed,
                                 sampling=p["sampling"]).eval_accuracy
        elif m == "beta_vae":
            v = beta_vae_score(dataset, represent, num_train=n["votes_train"],
                               num_eval=n["votes_eval"], seed=seed,
                               sampling=p["sampling"]).eval_accuracy
        elif m == "mig":
            v = mig_from_mutual_information(train_mi(), ytr).score
        elif m == "modularity":
            v = modularity_score(train_mi()).mean()
        elif m == "explicitness":
            v = explicitness(ztr, ytr, zte, yte, seed=seed)[1]
        elif m == "dci":
            v = dci(ztr, ytr, zte, yte, seed=seed).disentanglement
        elif m == "sap":
            v = sap(ztr, ytr, zte, yte).score
        else:
            v = wdg(ztr, ytr, variant="paper", seed=seed).score
        out[m] = float(v)
    return out


def evaluate(model, dataset, metrics=("factor_vae", "mig", "modularity", "wdg", "reconstruction"),
             protocol: str = "paper", repeats: int | None = None, seed: int = 0,
             scale: float = 1.0, sizes: dict | None = None) -> dict:
    """{metric: {"mean", "std", "values"}} plus the settings used. ``scale`` multiplies every
    sample size (for quick looks; 1.0 is the protocol); ``sizes`` sets named ones outright
    (num_train, num_test, votes_train, votes_eval, variance_samples)."""
    repeats, n = protocol_settings(protocol, repeats, scale, sizes)  # checks protocol
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRICS)}")
    p = PROTOCOLS[protocol]
    represent = representation_function(model)
    values = {m: [] for m in metrics}
    seeds = [seed + p["seed_stride"] * i for i in range(repeats)]
    for s in seeds:
        for m, v in one_repeat(dataset, represent, metrics, n, protocol, s, model).items():
            values[m].append(v)
    out = {m: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v)), "values": v}
           for m, v in values.items()}
    return {"metrics": out, "protocol": protocol, "repeats": repeats, "seeds": seeds,
            "sample_sizes": n, "balanced_votes": p["balanced_votes"]}
