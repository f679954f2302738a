"""Run any subset of the metrics on a model and a data set under a named protocol.

``paper`` (the sizes the paper states in its appendix D): posterior means; ``repeats``
evaluations (default 50) with seeds seed + 73 i (seed 0 by default); 12,800 samples for MIG, Modularity and WDG;
FactorVAE score with 10,000 / 5,000 votes of batch 64, variances from 12,800 samples, threshold
0.05, votes balanced over factors.
``authors`` (what the WTC authors' code computed with their run_evaluation.sh): the same
repeats and metrics, seeds 1 + 73 i by default (their evaluate.py's), but the sizes their batch loop really yields (:func:`authors_sizes`):
256 samples for MIG, Modularity, WDG and reconstruction, 256 for the FactorVAE score's variances,
and K * ceil((10,000 // K + 1) / 64) training and K * ceil((5,000 // K + 1) / 64) evaluation
votes, exactly balanced over the K factors (27 / 14 a factor on dSprites with its colour factor
and on Shapes3D, 53 / 27 on Cars3D); the shared samples are distinct images, as their shuffled
pass over the data set gives.
``dlib`` (disentanglement_lib's unsupervised study): one evaluation with seed 0; 10,000 samples
(train) and 5,000 (test); FactorVAE score with a random factor per vote and variances from
10,000 samples, and every draw disentanglement_lib's, in its order, from RandomState(seed) (see
wtc.metrics.sampling). All use 20 histogram bins.

When an evaluation draws more images than the data set holds (the paper protocol on dSprites:
about 50 million draws of 737,280 images), every image is encoded once and the metrics look
their codes up (wtc.metrics.cache): the same draws and values, hours less.
"""

from __future__ import annotations

import math

import numpy as np

from wtc.metrics._utils import as_codes
from wtc.metrics.cache import (
    CachedRepresentation,
    EncodedDataset,
    cacheable,
    draws_per_repeat,
)
from wtc.metrics.registry import (
    METRICS,
    Repeat,
    default_metrics,
    metric,
    metrics_needing,
)
from wtc.metrics.sampling import make_sampler
from wtc.representation import representation_function

#: The WTC authors' evaluation (yjxiao/disentrepr_wtc): run_evaluation.sh passes
#: ``--eval-batches 200`` to MIG, Modularity, WDG and reconstruction and ``--train-batches 10000
#: --eval-batches 5000 --ve 200`` to the FactorVAE score; options.py's batch size is 64.
AUTHORS_ARGS = {"batch_size": 64, "eval_batches": 200, "variance_batches": 200,
                "train_vote_batches": 10_000, "eval_vote_batches": 5_000}


def authors_batch_sizes(num_items: int, batch_size: int, num_batches: int) -> list:
    """The sizes of the batches the WTC authors' ``data_utils.batch_sampler(indices, batch_size,
    num_batches)`` yields for ``num_items`` indices, by re-running its loop: the offset steps
    through range(0, num_items, batch_size) and the loop stops once the offset reaches
    ``num_batches``. The offset counts samples but is compared with a count of batches, so it
    yields ceil(num_batches / batch_size) batches, not num_batches (200 -> 4 batches of 64)."""
    sizes = []
    for offset in range(0, num_items, batch_size):
        if offset >= num_batches:
            break
        sizes.append(min(batch_size, num_items - offset))
    return sizes


def authors_votes_per_factor(requested: int, num_factors: int, batch_size: int = 64) -> int:
    """FactorVAE votes per factor in the authors' code for ``--train-batches`` (or
    ``--eval-batches``) ``requested``: their ``_gather_votes`` asks for requested // K + 1
    batches per factor, ``get_iterator_with_fixed_factor`` draws that many batches of indices and
    passes them, with the same batch count, through ``batch_sampler``; each batch it yields is
    one vote."""
    if num_factors < 1:
        raise ValueError(f"num_factors must be >= 1, got {num_factors!r}")
    per_factor = requested // num_factors + 1
    return len(authors_batch_sizes(per_factor * batch_size, batch_size, per_factor))


def authors_sizes(num_factors: int, num_images: int | None = None, args: dict | None = None
                  ) -> dict:
    """The sample sizes the authors' evaluation draws on a data set of ``num_factors`` factors
    and ``num_images`` images (None: more than any loop reaches), derived from their arguments
    (``AUTHORS_ARGS``): their loops over a shuffled pass of the data set for the shared samples
    and the variances, over fixed-factor batches for the votes."""
    a = {**AUTHORS_ARGS, **(args or {})}
    bs = a["batch_size"]

    def samples(num_batches):
        items = num_batches * bs if num_images is None else num_images
        return sum(authors_batch_sizes(items, bs, num_batches))

    shared = samples(a["eval_batches"])
    out = {"num_train": shared, "num_test": shared,
           "variance_samples": samples(a["variance_batches"])}
    for key, arg in (("votes_train", "train_vote_batches"), ("votes_eval", "eval_vote_batches")):
        out[key] = num_factors * authors_votes_per_factor(a[arg], num_factors, bs)
    return out


_AUTHORS_SHARED = authors_sizes(1)  # the sizes that do not depend on the data set: 256 each

# seed: the first repeat's seed when none is given. The authors' evaluate.py takes options.py's
# --seed default, 1 (run_evaluation.sh sets seed="1" but passes nothing on), so their repeats
# are seeded 1, 74, 147, ...; the paper states no seed, and disentanglement_lib's study uses 0.
PROTOCOLS = {
    "paper": dict(repeats=50, seed=0, seed_stride=73, num_train=12_800, num_test=5_000,
                  votes_train=10_000, votes_eval=5_000, variance_samples=12_800,
                  balanced_votes=True, sampling="numpy"),
    # votes_train / votes_eval are the vote batches the authors ask for (--train-batches,
    # --eval-batches): the votes drawn depend on the data set's factors (drawn_sizes).
    # num_test: the authors have no metric with a test sample; reconstruction (ours takes
    # num_test images) and any test-set metric get the 256 their --eval-batches 200 yields.
    "authors": dict(repeats=50, seed=1, seed_stride=73, num_train=_AUTHORS_SHARED["num_train"],
                    num_test=_AUTHORS_SHARED["num_test"],
                    votes_train=AUTHORS_ARGS["train_vote_batches"],
                    votes_eval=AUTHORS_ARGS["eval_vote_batches"],
                    variance_samples=_AUTHORS_SHARED["variance_samples"],
                    balanced_votes=True, sampling="authors", votes="authors"),
    "dlib": dict(repeats=1, seed=0, seed_stride=1, num_train=10_000, num_test=5_000,
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
    # refused here rather than evaluated into a table of NaN
    if repeats is not None and (isinstance(repeats, bool) or int(repeats) != repeats
                                or repeats < 1):
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    try:
        scale_ok = math.isfinite(float(scale)) and float(scale) > 0
    except (TypeError, ValueError):
        scale_ok = False
    if not scale_ok:
        raise ValueError(f"scale must be a number > 0, got {scale!r}")
    repeats = p["repeats"] if repeats is None else int(repeats)
    n = {k: max(2, int(p[k] * scale)) for k in SIZE_NAMES}
    for k, v in (sizes or {}).items():
        if k not in SIZE_NAMES:
            raise ValueError(f"unknown sample size {k!r}; known: {', '.join(SIZE_NAMES)}")
        if int(v) < 2 or int(v) != v:
            raise ValueError(f"sample size {k} must be an integer >= 2, got {v!r}")
        n[k] = int(v)
    return repeats, n


def drawn_sizes(protocol: str, n: dict, dataset) -> dict:
    """The sample sizes an evaluation under ``protocol`` draws on ``dataset`` for the sizes
    ``n`` of :func:`protocol_settings`: ``n`` itself, except under ``authors``, whose
    votes_train / votes_eval are the vote batches asked for and become K *
    :func:`authors_votes_per_factor` votes, and whose shared samples and variance sample (one
    shuffled pass over the images) hold at most the data set's images."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}, got {protocol!r}")
    out = dict(n)
    if PROTOCOLS[protocol].get("votes") != "authors":
        return out
    K = dataset.num_factors
    if K:
        for key in ("votes_train", "votes_eval"):
            out[key] = K * authors_votes_per_factor(n[key], K, AUTHORS_ARGS["batch_size"])
    num_images = len(dataset)
    if num_images:
        for key in ("num_train", "num_test", "variance_samples"):
            out[key] = min(n[key], num_images)
    return out


def __getattr__(name):
    # the metrics using the shared train / test samples, from the registry at the time of asking
    if name == "TRAIN_METRICS":
        return metrics_needing("train")
    if name == "TEST_METRICS":
        return metrics_needing("test")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def one_repeat(dataset, represent, metrics, n: dict, protocol: str, seed: int,
               model=None, progress: bool = False) -> dict:
    """One evaluation of ``metrics`` with the protocol's sampling, sample sizes ``n`` and
    ``seed``; ``represent`` maps observations to codes (``model`` is needed only by metrics
    that need it, such as reconstruction); ``n`` are :func:`protocol_settings`' sizes, drawn as
    :func:`drawn_sizes` says. The code-based metrics share one train sample (and
    one test sample, drawn only for the metrics that use it), and MIG and Modularity one mutual
    information matrix (:class:`wtc.metrics.registry.Repeat`). ``progress``: a bar over the
    samples and the metrics, naming the one running."""
    entries = [metric(m) for m in metrics]
    needs = set().union(*(e.needs for e in entries))
    n = drawn_sizes(protocol, n, dataset)
    if "model" in needs and model is None:
        raise ValueError("metrics " + ", ".join(e.name for e in entries if "model" in e.needs)
                         + " need the model")
    r = Repeat(dataset, represent, n, PROTOCOLS[protocol], seed, model)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(entries) + bool(needs & {"train", "test"}), leave=False,
                   desc=f"seed {seed}", unit="step", dynamic_ncols=True)
        bar.set_postfix_str("samples" if needs & {"train", "test"} else entries[0].name)
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
        if bar is not None:
            bar.update()
    out = {}
    try:
        for e in entries:
            if bar is not None:
                bar.set_postfix_str(e.name)
            out[e.name] = float(e.function(r))
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return out


def use_cache(dataset, metrics, n: dict, repeats: int, cache="auto") -> bool:
    """Whether :func:`evaluate` encodes every image once: ``cache`` True / False, or "auto":
    when the evaluation would encode more images than the data set holds; a
    :class:`CachedRepresentation` is used as it is."""
    if isinstance(cache, CachedRepresentation):
        if not cacheable(dataset):
            raise ValueError("cache: a CachedRepresentation needs a data set whose observation "
                             "of a factor row is one image; pass cache=False for this one")
        return True
    if cache not in ("auto", True, False):
        raise ValueError(f"cache must be 'auto', True, False or a CachedRepresentation, got "
                         f"{cache!r}")
    if not cache or not cacheable(dataset):
        return False
    return cache is True or repeats * draws_per_repeat(metrics, n) > len(dataset)


def evaluate(model, dataset, metrics=None, protocol: str = "paper", repeats: int | None = None,
             seed: int | None = None, scale: float = 1.0, sizes: dict | None = None, cache="auto",
             progress: bool = False) -> dict:
    """{metric: {"mean", "std", "values"}} plus the settings used. ``scale`` multiplies every
    sample size (for quick looks; 1.0 is the protocol); ``sizes`` sets named ones outright
    (num_train, num_test, votes_train, votes_eval, variance_samples). ``seed``: the first
    repeat's (repeat i gets seed + stride i); default the protocol's (``authors``: 1, as their
    evaluate.py; else 0). ``metrics``: names in
    ``METRICS``; default: the registry's default set. ``cache``: encode every image once and
    look codes up ("auto": when the draws exceed the data set's size; :func:`use_cache`), or a
    :class:`~wtc.metrics.cache.CachedRepresentation` of ``model`` on ``dataset`` to reuse; the
    values are the uncached ones up to float rounding. ``progress``: tqdm bars for the
    encoding, the repeats and each repeat's metrics. The result's ``sample_sizes`` are the
    protocol's (what a sweep checks), ``drawn_sizes`` what was drawn on this data set (they
    differ under ``authors``, whose vote counts depend on the factors)."""
    repeats, n = protocol_settings(protocol, repeats, scale, sizes)  # checks protocol
    if seed is None:
        seed = PROTOCOLS[protocol]["seed"]
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    metrics = default_metrics() if metrics is None else list(metrics)
    if not metrics:
        raise ValueError("metrics: give at least one")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRICS)}")
    p = PROTOCOLS[protocol]
    drawn = drawn_sizes(protocol, n, dataset)
    cached = use_cache(dataset, metrics, drawn, repeats, cache)
    if cached:
        # a given encoding is reused: one model's codes evaluated under several protocols
        represent = (cache if isinstance(cache, CachedRepresentation) else
                     CachedRepresentation.encode(model, dataset, progress=progress))
        observed = EncodedDataset(dataset)
    else:
        represent, observed = representation_function(model), dataset
    values = {m: [] for m in metrics}
    seeds = [seed + p["seed_stride"] * i for i in range(repeats)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seeds), desc=f"{protocol} repeats", unit="repeat",
                   dynamic_ncols=True)
    try:
        for s in seeds:
            for m, v in one_repeat(observed, represent, metrics, n, protocol, s, model,
                                   progress=progress).items():
                values[m].append(v)
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    out = {m: {"mean": _nan_stat(np.nanmean, v), "std": _nan_stat(np.nanstd, v), "values": v}
           for m, v in values.items()}
    return {"metrics": out, "protocol": protocol, "repeats": repeats, "seeds": seeds,
            "sample_sizes": n, "drawn_sizes": drawn, "balanced_votes": p["balanced_votes"],
            "cached_codes": cached}


def _nan_stat(stat, values) -> float:
    # a metric undefined in every repeat is NaN, without numpy's "mean of empty slice" warning
    v = np.asarray(values, dtype=np.float64)
    return float(stat(v)) if not np.isnan(v).all() else float("nan")


def check_result(result: dict) -> list:
    """What is wrong with an evaluation result (``evaluate``'s, or a read ``eval.json``): a list
    of problems, empty when it is complete - repeats >= 1, every metric with one finite-or-NaN
    value a repeat. Metrics whose mean is NaN are listed apart by :func:`nan_metrics`."""
    problems = []
    if not isinstance(result, dict):
        return ["not a JSON object"]
    repeats, metrics = result.get("repeats"), result.get("metrics")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        problems.append(f"repeats is {repeats!r}, not an integer >= 1")
    if not isinstance(metrics, dict) or not metrics:
        problems.append("no metrics")
        return problems
    for name, v in metrics.items():
        if not isinstance(v, dict) or not {"mean", "std", "values"} <= set(v):
            problems.append(f"metric {name} lacks mean, std or values")
        elif not isinstance(v["values"], list) or len(v["values"]) != repeats:
            problems.append(f"metric {name} does not have one value for each of {repeats} "
                            "repeat(s)")
    return problems


def nan_metrics(result: dict) -> list:
    """The metrics of a well-formed result whose mean is NaN (undefined in every repeat)."""
    return [m for m, v in result["metrics"].items()
            if not isinstance(v.get("mean"), (int, float)) or not math.isfinite(v["mean"])]
