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

from wtc.metrics._utils import as_codes
from wtc.metrics.registry import (
    METRICS,
    Repeat,
    default_metrics,
    metric,
    metrics_needing,
)
from wtc.metrics.sampling import make_sampler
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


def __getattr__(name):
    # the metrics using the shared train / test samples, from the registry at the time of asking
    if name == "TRAIN_METRICS":
        return metrics_needing("train")
    if name == "TEST_METRICS":
        return metrics_needing("test")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def one_repeat(dataset, represent, metrics, n: dict, protocol: str, seed: int,
               model=None) -> dict:
    """One evaluation of ``metrics`` with the protocol's sampling, sample sizes ``n`` and
    ``seed``; ``represent`` maps observations to codes (``model`` is needed only by metrics
    that need it, such as reconstruction). The code-based metrics share one train sample (and
    one test sample, drawn only for the metrics that use it), and MIG and Modularity one mutual
    information matrix (:class:`wtc.metrics.registry.Repeat`)."""
    entries = [metric(m) for m in metrics]
    needs = set().union(*(e.needs for e in entries))
    if "model" in needs and model is None:
        raise ValueError("metrics " + ", ".join(e.name for e in entries if "model" in e.needs)
                         + " need the model")
    r = Repeat(dataset, represent, n, PROTOCOLS[protocol], seed, model)
    if needs & {"train", "test"}:
        # Every code-based metric of disentanglement_lib starts its own RandomState(seed) and
        # draws the same train and test sets: they are drawn once.
        sampler = make_sampler(r.sampling, seed)

        def sample(size):
            y = sampler.code_factors(dataset, size)
            z = represent(dataset.sample_observations_from_factors(y, sampler.obs_rng))
            return as_codes(z), y

        r.train_codes, r.train_factors = sample(n["num_train"])
        if "test" in needs:
            r.test_codes, r.test_factors = sample(n["num_test"])
    return {e.name: float(e.function(r)) for e in entries}


def evaluate(model, dataset, metrics=None, protocol: str = "paper", repeats: int | None = None,
             seed: int = 0, scale: float = 1.0, sizes: dict | None = None) -> dict:
    """{metric: {"mean", "std", "values"}} plus the settings used. ``scale`` multiplies every
    sample size (for quick looks; 1.0 is the protocol); ``sizes`` sets named ones outright
    (num_train, num_test, votes_train, votes_eval, variance_samples). ``metrics``: names in
    ``METRICS``; default: the registry's default set."""
    repeats, n = protocol_settings(protocol, repeats, scale, sizes)  # checks protocol
    metrics = default_metrics() if metrics is None else list(metrics)
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
