"""The metric registry (every list of metrics derived from it, a metric registered from outside
the package run through evaluate, wtc eval and the report) and the protocols' Sampler (the same
draws as the code it replaced)."""

import json
import sys

import numpy as np
import pytest
from test_experiments import _fake_sweep, _synthetic_score
from test_metrics import FactorObservations, _entangled
from wtc.experiments import collect, make_report, table1
from wtc.experiments.spec import from_dict
from wtc.metrics import (
    METRICS,
    default_metrics,
    make_sampler,
    register_metric,
    unregister_metric,
)
from wtc.metrics.sampling import (
    dlib_beta_vae_factors,
    dlib_factor_batches,
    dlib_sample_factors,
    dlib_vote_factors,
)

# The lists as they were written out before the registry (evaluate.METRICS, TRAIN_METRICS,
# TEST_METRICS, report.COLUMNS / LOWER_IS_BETTER / _digits, spec.DEFAULT_METRICS).
OLD_METRICS = {"reconstruction", "factor_vae", "beta_vae", "mig", "modularity", "explicitness",
               "dci", "sap", "wdg"}
OLD_TRAIN = {"mig", "modularity", "explicitness", "dci", "sap", "wdg"}
OLD_TEST = {"explicitness", "dci", "sap"}
OLD_COLUMNS = {"factor_vae": "FactorVAE score", "wdg": "WDG", "modularity": "Modularity",
               "mig": "MIG", "reconstruction": "Reconstruction"}
OLD_DEFAULT = ["factor_vae", "wdg", "modularity", "mig", "reconstruction"]


def test_registry_derived_lists_are_the_old_ones():
    from wtc.cli import build_parser
    from wtc.experiments import report
    from wtc.experiments.spec import DEFAULT_METRICS

    evaluate_module = sys.modules["wtc.metrics.evaluate"]
    assert set(METRICS) == OLD_METRICS and list(METRICS) == list(evaluate_module.METRICS)
    assert evaluate_module.TRAIN_METRICS == OLD_TRAIN
    assert evaluate_module.TEST_METRICS == OLD_TEST
    assert report.COLUMNS == OLD_COLUMNS and list(report.COLUMNS) == list(OLD_COLUMNS)
    assert report.LOWER_IS_BETTER == {"reconstruction"}
    assert {m: report._digits(m) for m in OLD_COLUMNS} == {
        m: 1 if m == "reconstruction" else 3 for m in OLD_COLUMNS}
    assert default_metrics() == OLD_DEFAULT == DEFAULT_METRICS
    args = build_parser().parse_args(["eval", "run"])
    assert args.metrics == OLD_DEFAULT


@pytest.fixture
def code_spread():
    """A metric registered from outside the package: the mean std of the train codes."""

    @register_metric("code_spread", display="Code spread", needs=("train",),
                     lower_is_better=True, digits=2)
    def spread(r):
        return r.train_codes.std(0).mean()

    yield spread
    unregister_metric("code_spread")


def test_a_registered_metric_runs_through_evaluate_and_wtc_eval(code_spread, tmp_path,
                                                               monkeypatch, capsys):
    from wtc.cli import main as wtc_main
    from wtc.metrics import evaluate
    from wtc.metrics.evaluate import one_repeat, protocol_settings
    from wtc.train import TrainConfig, load_run, train

    # one_repeat: the metric sees the shared train sample (the one MIG sees)
    ds = FactorObservations()
    _, n = protocol_settings("paper", scale=0.05)
    got = one_repeat(ds, _entangled, ["code_spread", "mig"], n, "paper", seed=5)
    ytr = ds.sample_factors(n["num_train"], np.random.default_rng(5))
    assert got["code_spread"] == float(_entangled(ytr).numpy().std(0).mean())

    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    train(TrainConfig(model="beta-vae", data="dsprites-procedural",
                      data_options={"grid_step": (1, 1, 2, 8, 4, 4)}, steps=2, batch_size=8,
                      progress=False, device="cpu", eval_samples=32), run)
    model, _, dataset = load_run(run, device="cpu")
    result = evaluate(model, dataset, metrics=["code_spread", "mig"], repeats=2, scale=0.02)
    assert len(result["metrics"]["code_spread"]["values"]) == 2
    assert wtc_main(["eval", str(run), "--metrics", "code_spread", "--scale", "0.02",
                     "--repeats", "1", "--device", "cpu"]) == 0
    assert "code_spread" in json.loads((run / "eval.json").read_text())["metrics"]
    assert "code_spread" in capsys.readouterr().out


def test_a_registered_metric_is_a_report_column(code_spread, tmp_path):
    spec = from_dict({"name": "synthetic", "data": ["dsprites-procedural"],
                      "models": ["beta-vae", "wae"], "seeds": [1, 2],
                      "strengths": {"beta-vae": [1.0, 4.0], "wae": [1.0, 8.0]},
                      "eval": {"repeats": 2, "metrics": ["factor_vae", "code_spread",
                                                         "reconstruction"]}})

    def score(run):
        s = _synthetic_score(run)
        spread = {"beta-vae": 0.5, "wae": 0.25}[run.model] + 0.001 * run.seed
        return {"factor_vae": s["factor_vae"], "reconstruction": s["reconstruction"],
                "code_spread": [spread, spread]}

    _fake_sweep(tmp_path / "sweep", spec, score)
    c = collect(tmp_path / "sweep")
    assert c.metrics == ["factor_vae", "reconstruction", "code_spread"]  # registration order
    rows = {r["model"]: r for r in table1(c, select_by="code_spread")}
    # lower is better: wae (0.2515) first, beta-vae second
    assert rows["wae"]["code_spread_rank"] == 0 and rows["beta-vae"]["code_spread_rank"] == 1
    make_report(tmp_path / "sweep", tmp_path / "report", select_by="code_spread",
                echo=lambda *a: None)
    md = (tmp_path / "report" / "table1.md").read_text()
    assert "| Code spread |" in md and "Code spread lower" in md
    assert "**0.25 (0.00)**" in md and "<u>0.50 (0.00)</u>" in md  # 2 digits
    html = (tmp_path / "report" / "index.html").read_text()
    assert "<th>Code spread</th>" in html and "<b>0.25 (0.00)</b>" in html


# -- the Sampler gives the draws of the code it replaced -------------------------------------
# The old code, transcribed: the generators of factor_vae._rngs, evaluate.one_repeat's sample,
# factor_vae._vote_factors and beta_vae_score's numpy points; the dlib draws were (and are) the
# dlib_* functions on RandomState(seed).

def _old_rngs(seed, sampling):
    if sampling == "dlib":
        return np.random.RandomState(seed), np.random.default_rng(seed)
    rng = np.random.default_rng(seed)
    return rng, rng


def _old_vote_factors(dataset, num_votes, batch_size, rng, balanced):
    K = dataset.num_factors
    if balanced:
        ks = np.resize(np.arange(K), num_votes)
        rng.shuffle(ks)
    else:
        ks = rng.integers(0, K, num_votes)
    factors = dataset.sample_factors(num_votes * batch_size, rng).reshape(num_votes, batch_size, K)
    votes = np.arange(num_votes)
    factors[votes, :, ks] = factors[votes, 0, ks][:, None]
    return factors.reshape(-1, K), ks


def _old_draws(ds, sampling, seed, balanced):
    rng, obs_rng = _old_rngs(seed, sampling)
    K, out = ds.num_factors, []
    dlib = sampling == "dlib"
    out.append(dlib_sample_factors(ds, 50, rng) if dlib else ds.sample_factors(50, rng))
    for size in (37, 21):  # the code-based metrics' train then test sample
        out.append(dlib_factor_batches(ds, size, rng) if dlib else ds.sample_factors(size, rng))
    out += (dlib_vote_factors(ds, 9, 8, rng) if dlib
            else _old_vote_factors(ds, 9, 8, rng, balanced))
    if dlib:
        out += dlib_beta_vae_factors(ds, 7, 4, rng)
    else:
        ks = rng.integers(0, K, 7)
        f1 = ds.sample_factors(7 * 4, rng).reshape(7, 4, K)
        f2 = ds.sample_factors(7 * 4, rng).reshape(7, 4, K)
        f2[np.arange(7), :, ks] = f1[np.arange(7), :, ks]
        out += [f1.reshape(-1, K), f2.reshape(-1, K), ks]
    out.append(obs_rng.random(3))  # the observations' stream, where the draws left it
    return out


def _new_draws(ds, sampling, seed, balanced):
    s = make_sampler(sampling, seed)
    out = [s.factors(ds, 50), s.code_factors(ds, 37), s.code_factors(ds, 21)]
    out += s.vote_factors(ds, 9, 8, balanced)
    out += s.beta_vae_factors(ds, 7, 4)
    out.append(s.obs_rng.random(3))
    return out


@pytest.mark.parametrize("sampling,balanced", [("numpy", False), ("numpy", True),
                                               ("dlib", False)])
def test_sampler_draws_are_the_old_codes(sampling, balanced):
    ds = FactorObservations()
    for seed in (0, 5):
        old, new = _old_draws(ds, sampling, seed, balanced), _new_draws(ds, sampling, seed,
                                                                         balanced)
        assert len(old) == len(new)
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, b)


def test_dlib_sampler_refuses_balanced_votes():
    from wtc.metrics import factor_vae_score

    with pytest.raises(ValueError, match="balanced_votes"):
        factor_vae_score(FactorObservations(), _entangled, balanced_votes=True, sampling="dlib")
    with pytest.raises(ValueError, match="sampling must be one of"):
        make_sampler("torch", 0)


# one_repeat's values before the registry and the Sampler (computed with the old code, seed 5,
# scale 0.03): the metrics without a fitted classifier, whose values do not depend on
# scikit-learn's solvers
OLD_VALUES = {
    "paper": {"factor_vae": 0.66, "mig": 0.12665994840832517, "modularity": 0.7996581244840357,
              "sap": 0.09333333333333332, "wdg": 0.07226358973275547},
    "dlib": {"factor_vae": 0.72, "mig": 0.10117264967244056, "modularity": 0.7759249044882782,
             "sap": 0.05166666666666667, "wdg": 0.07803156850670365},
}


@pytest.mark.parametrize("protocol", ["paper", "dlib"])
def test_one_repeat_values_are_the_old_codes(protocol):
    from wtc.metrics.evaluate import one_repeat, protocol_settings

    _, n = protocol_settings(protocol, scale=0.03)
    got = one_repeat(FactorObservations(), _entangled, list(OLD_VALUES[protocol]), n, protocol,
                     seed=5)
    assert got == pytest.approx(OLD_VALUES[protocol], rel=1e-12)
