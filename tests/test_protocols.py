"""The evaluation protocols as the paper states them and as the WTC authors' code ran them, the
strength grids of the paper's table 4, its figures and the authors' scripts, the presets built
from them, and the report's statement of the setting its numbers come from."""

import json
import math

import numpy as np
import pytest
import torch
from wtc.data.base import GroundTruthDataset
from wtc.metrics import evaluate
from wtc.metrics.evaluate import (
    AUTHORS_ARGS,
    PROTOCOLS,
    authors_batch_sizes,
    authors_sizes,
    authors_votes_per_factor,
    drawn_sizes,
    protocol_settings,
)
from wtc.metrics.sampling import AuthorsSampler, NumpySampler

# -- the authors' loop arithmetic --------------------------------------------------------------


def test_batch_loop_compares_an_offset_with_a_batch_count():
    # --eval-batches 200 of 64: offsets 0, 64, 128, 192 pass the "offset < 200" check
    assert authors_batch_sizes(737_280, 64, 200) == [64] * 4
    # a short data set ends the loop first, with a short last batch
    assert authors_batch_sizes(100, 64, 200) == [64, 36]
    assert authors_batch_sizes(64 * 2001, 64, 2001) == [64] * 32  # ceil(2001 / 64)
    assert authors_batch_sizes(0, 64, 200) == []
    for items, bs, nb in [(10**6, 64, 1), (10**6, 64, 64), (10**6, 64, 65), (10**6, 32, 1667)]:
        assert len(authors_batch_sizes(items, bs, nb)) == math.ceil(nb / bs)


@pytest.mark.parametrize("K, train, evaluation", [
    (6, 27, 14),  # dSprites with its colour factor, Shapes3D
    (5, 32, 16),  # dSprites without colour
    (3, 53, 27),  # Cars3D
    (4, 40, 20),
])
def test_votes_per_factor(K, train, evaluation):
    assert authors_votes_per_factor(10_000, K) == train
    assert authors_votes_per_factor(5_000, K) == evaluation
    # the closed form of the loop: ceil((requested // K + 1) / 64)
    for requested in (10_000, 5_000, 1, 63, 64 * K, 12_345):
        assert authors_votes_per_factor(requested, K) == math.ceil((requested // K + 1) / 64)
    sizes = authors_sizes(K)
    assert sizes == {"num_train": 256, "num_test": 256, "variance_samples": 256,
                     "votes_train": K * train, "votes_eval": K * evaluation}


def test_authors_sizes_read_their_arguments_and_the_data_set_size():
    assert AUTHORS_ARGS == {"batch_size": 64, "eval_batches": 200, "variance_batches": 200,
                            "train_vote_batches": 10_000, "eval_vote_batches": 5_000}
    assert authors_sizes(6, num_images=17_568)["num_train"] == 256
    assert authors_sizes(6, num_images=100)["num_train"] == 100
    assert authors_sizes(6, args={"eval_batches": 12_800})["num_train"] == 64 * 200
    with pytest.raises(ValueError, match="num_factors must be >= 1"):
        authors_votes_per_factor(10_000, 0)


def test_protocol_settings_of_the_three_protocols():
    assert set(PROTOCOLS) == {"paper", "authors", "dlib"}
    assert protocol_settings("paper") == (50, {
        "num_train": 12_800, "num_test": 5_000, "votes_train": 10_000, "votes_eval": 5_000,
        "variance_samples": 12_800})
    # the authors': sizes that do not depend on the data set, votes as the batches asked for
    assert protocol_settings("authors") == (50, {
        "num_train": 256, "num_test": 256, "votes_train": 10_000, "votes_eval": 5_000,
        "variance_samples": 256})
    assert PROTOCOLS["authors"]["seed_stride"] == 73 and PROTOCOLS["authors"]["balanced_votes"]
    with pytest.raises(ValueError, match="protocol must be one of"):
        protocol_settings("author")


class Grid(GroundTruthDataset):
    """Observations are the factor classes scaled to [0, 1]; counts what is asked of it."""

    name = "grid"
    factor_names = ("a", "b", "c", "d", "e", "f")
    factor_sizes = (2, 3, 4, 5, 6, 7)  # K = 6, 5,040 images

    def __init__(self, factor_sizes=None):
        if factor_sizes is not None:
            self.factor_sizes = factor_sizes
            self.factor_names = self.factor_names[:len(factor_sizes)]
        self.observed = 0  # factor rows turned into observations (codes)
        self.loaded = 0  # images loaded by index (the reconstruction error)

    def _scaled(self, factors):
        return torch.as_tensor(factors / (np.asarray(self.factor_sizes) - 1).clip(1),
                               dtype=torch.float32)

    def sample_observations_from_factors(self, factors, rng=None):
        factors = self.check_factors(factors)
        self.observed += len(factors)
        return self._scaled(factors)

    def batch(self, indices):
        indices = np.asarray(indices)
        self.loaded += len(indices)
        return self._scaled(self.index_to_factors(indices))


class Echo(torch.nn.Module):
    """Codes are the observations, logits the codes: a model for counting, not for scores."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the model's device is read from it
        self.encoded = 0

    def represent(self, x):
        self.encoded += len(x)
        return x.float()

    def decoder(self, z):
        return z


@pytest.fixture
def spy_sampler(monkeypatch):
    """Record every draw the protocols' samplers make: (method, rows or votes, balanced)."""
    calls = []
    for cls in (NumpySampler, AuthorsSampler):
        for name in ("code_factors", "vote_factors"):
            original = cls.__dict__.get(name) or getattr(cls, name)

            def spy(self, dataset, n, *args, _original=original, _name=name, _cls=cls, **kw):
                if type(self) is _cls:
                    out = _original(self, dataset, n, *args, **kw)
                    if _name == "vote_factors":
                        calls.append((_name, n, np.bincount(out[1], minlength=dataset.num_factors)
                                      .tolist()))
                    else:
                        calls.append((_name, n))
                    return out
                return _original(self, dataset, n, *args, **kw)

            monkeypatch.setattr(cls, name, spy)
    return calls


@pytest.mark.parametrize("sizes", [(2, 3, 4, 5, 6, 7), (3, 24, 183)])
def test_an_authors_evaluation_draws_the_derived_samples_and_votes(sizes, spy_sampler):
    ds, model = Grid(sizes), Echo()
    K = len(sizes)
    want = authors_sizes(K, len(ds))
    metrics = ["mig", "modularity", "wdg", "factor_vae", "reconstruction"]
    result = evaluate(model, ds, metrics=metrics, protocol="authors", repeats=2, cache=False)
    assert result["seeds"] == [1, 74]  # their evaluate.py's default seed, 1, stepping by 73
    assert result["sample_sizes"] == protocol_settings("authors")[1]
    assert result["drawn_sizes"] == want
    per_factor_train = authors_votes_per_factor(10_000, K)
    per_factor_eval = authors_votes_per_factor(5_000, K)
    # per repeat: one shared sample of 256 rows, then the train and evaluation votes, each
    # exactly balanced over the factors
    assert spy_sampler == 2 * [("code_factors", 256),
                               ("vote_factors", K * per_factor_train, [per_factor_train] * K),
                               ("vote_factors", K * per_factor_eval, [per_factor_eval] * K)]
    # every observation encoded: shared sample + variance sample + 64 images a vote
    per_repeat = 256 + 256 + 64 * K * (per_factor_train + per_factor_eval)
    assert ds.observed == 2 * per_repeat
    assert ds.loaded == 2 * 256  # the reconstruction error's images
    assert model.encoded == ds.observed + ds.loaded
    assert all(len(v["values"]) == 2 for v in result["metrics"].values())
    assert result["metrics"]["factor_vae"]["mean"] == 1.0  # codes are the factors


def test_the_paper_protocol_draws_its_stated_sizes(spy_sampler):
    ds, model = Grid(), Echo()
    result = evaluate(model, ds, metrics=["mig", "factor_vae", "reconstruction"],
                      protocol="paper", repeats=1, scale=0.1, cache=False)
    n = protocol_settings("paper", scale=0.1)[1]
    assert result["drawn_sizes"] == result["sample_sizes"] == n
    assert [c[:2] for c in spy_sampler] == [("code_factors", n["num_train"]),
                                            ("vote_factors", n["votes_train"]),
                                            ("vote_factors", n["votes_eval"])]
    assert ds.observed == (n["num_train"] + n["variance_samples"]
                           + 64 * (n["votes_train"] + n["votes_eval"]))
    assert ds.loaded == n["num_test"]


def test_authors_samples_are_distinct_images_and_only_they_change():
    ds = Grid()
    rows = AuthorsSampler(3).code_factors(ds, 256)
    assert len(np.unique(ds.factors_to_index(rows))) == 256
    # more rows than the grid: whole passes, each distinct
    small = Grid((2, 3))
    rows = AuthorsSampler(3).factors(small, 14)
    idx = small.factors_to_index(rows)
    assert sorted(idx[:6]) == list(range(6)) and sorted(idx[6:12]) == list(range(6))
    # the votes are the numpy sampler's, draw for draw
    a = AuthorsSampler(5).vote_factors(ds, 12, 64, balanced=True)
    b = NumpySampler(5).vote_factors(ds, 12, 64, balanced=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_drawn_sizes_of_other_protocols_are_the_sizes():
    ds = Grid((2, 3))
    for protocol in ("paper", "dlib"):
        n = protocol_settings(protocol)[1]
        assert drawn_sizes(protocol, n, ds) == n
    with pytest.raises(ValueError, match="protocol must be one of"):
        drawn_sizes("nope", {}, ds)


def test_wtc_eval_takes_the_authors_protocol():
    from wtc.cli import build_parser

    args = build_parser().parse_args(["eval", "run", "--protocol", "authors"])
    assert args.protocol == "authors"
    json.dumps(PROTOCOLS["authors"])  # eval.json and sweep.json record it as JSON


# -- strength grids ------------------------------------------------------------------------------

TABLE4 = {"beta-vae": [1.0, 4.0, 8.0, 16.0], "factor-vae": [10.0, 20.0, 40.0, 80.0],
          "beta-tcvae": [1.0, 4.0, 8.0, 16.0], "wtc-vae": [10.0, 20.0, 40.0, 80.0],
          "wae": [1.0, 4.0, 8.0, 16.0], "wtc-wae": [10.0, 20.0, 40.0, 80.0]}


def test_grids_of_the_paper_its_figures_and_the_authors_scripts():
    from wtc.models import PAPER_STRENGTHS
    from wtc.models.base import AUTHORS_STRENGTHS, FIGURE_STRENGTHS

    paper = {m: PAPER_STRENGTHS[m] for m in TABLE4}
    figure = {m: FIGURE_STRENGTHS[m] for m in TABLE4}
    authors = {m: AUTHORS_STRENGTHS[m] for m in TABLE4}
    assert paper == TABLE4
    # section 5.4 and figures 3 and 7 sweep WTC-VAE alone over six values
    assert figure == {**TABLE4, "wtc-vae": [1.0, 4.0, 10.0, 20.0, 40.0, 80.0]}
    # run_training.sh: "wtc" gamma and "wtc_wae" beta (the WTC term's weight) in 1 4 8 16
    assert authors == {**TABLE4, "wtc-vae": [1.0, 4.0, 8.0, 16.0],
                       "wtc-wae": [1.0, 4.0, 8.0, 16.0]}


def test_register_checks_the_declared_grids():
    from wtc import models

    class Base(models.BetaVAE):
        defaults = {"beta": 2.0}  # noqa: RUF012
        swept = "beta"
        paper_grid = (1.0, 2.0)

    try:
        plain = models.register(type("PlainVAE", (Base,), {"name": "plain-vae"}))
        from wtc.models.base import AUTHORS_STRENGTHS, FIGURE_STRENGTHS

        assert FIGURE_STRENGTHS["plain-vae"] == AUTHORS_STRENGTHS["plain-vae"] == [1.0, 2.0]
        assert plain.figure_grid is None  # paper_grid stands in
        for bad in ((), (1.0, float("nan")), (-1.0,), ("4",), (True,)):
            with pytest.raises(ValueError, match="figure_grid must be a non-empty tuple"):
                models.register(type("BadVAE", (Base,), {"name": "bad-vae", "figure_grid": bad}))
        with pytest.raises(ValueError, match="authors_grid must be"):
            models.register(type("BadVAE", (Base,), {"name": "bad-vae", "authors_grid": ()}))
    finally:
        models.unregister("plain-vae")
        models.unregister("bad-vae")


# -- presets -------------------------------------------------------------------------------------

def test_paper_preset_is_the_papers_figures_and_table():
    from wtc.experiments import load_spec
    from wtc.experiments.sweep import expand

    spec = load_spec("paper")
    assert {m: spec.strength_values(m) for m in spec.models} == {
        **TABLE4, "wtc-vae": [1.0, 4.0, 10.0, 20.0, 40.0, 80.0]}
    assert spec.table1_strengths == {"wtc-vae": TABLE4["wtc-vae"]}
    assert spec.data == ["dsprites", "shapes3d", "cars3d"] and spec.seeds == [1, 11, 42, 73, 89]
    assert (spec.steps, spec.batch_size, spec.lr) == (300_000, 64, 1e-4)
    # beta-TCVAE as the authors' code (behind the paper's numbers) trained it
    assert spec.train == {"tcvae_objective": "authors", "estimator": "mws-authors"}
    assert spec.eval.protocol == "paper" and spec.eval.repeats is None
    assert len(expand(spec)) == 3 * 5 * (5 * 4 + 6)


def test_authors_preset_is_their_scripts():
    from wtc.experiments import load_spec
    from wtc.experiments.sweep import expand, run_config

    spec = load_spec("authors")
    assert spec.data == ["dsprites", "cars3d", "shapes3d"]
    assert {m: spec.strength_values(m) for m in spec.models} == {
        **TABLE4, "wtc-vae": [1.0, 4.0, 8.0, 16.0], "wtc-wae": [1.0, 4.0, 8.0, 16.0]}
    assert spec.table1_strengths == {}
    assert (spec.steps, spec.batch_size, spec.lr) == (300_000, 64, 1e-4)
    assert spec.eval.protocol == "authors"
    config = run_config(spec, next(r for r in expand(spec) if r.model == "beta-tcvae"))
    assert (config.tcvae_objective, config.estimator, config.update_order, config.train_split,
            config.data_order) == ("authors", "mws-authors", "authors", 0.9, "epochs")
    assert config.adam_betas == (0.9, 0.999) and config.latent_dim == 10
    wtc_wae = run_config(spec, next(r for r in expand(spec) if r.model == "wtc-wae"))
    from wtc.models import MODELS

    # the WTC term's weight swept; the other term at the model's 1 (their --gamma's default)
    assert wtc_wae.gamma in (1.0, 4.0, 8.0, 16.0) and wtc_wae.beta is None
    assert MODELS["wtc-wae"]["beta"] == 1.0
    assert len(expand(spec)) == 3 * 6 * 4 * 5


def test_celeba_preset_is_figure_4():
    from wtc.experiments import load_spec
    from wtc.experiments.sweep import expand, run_config

    spec = load_spec("celeba")
    (run,) = expand(spec)
    config = run_config(spec, run)
    assert (config.data, config.model, config.gamma, config.latent_dim) == (
        "celeba", "wtc-vae", 40.0, 20)
    assert (config.steps, config.batch_size, config.lr) == (300_000, 64, 1e-4)
    # no factors on CelebA: the reconstruction error picks the run the report traverses
    assert spec.eval.metrics == ["reconstruction"] and spec.eval.repeats == 1


def test_table1_strengths_follow_a_files_strengths():
    from wtc.experiments.spec import SpecError, from_dict

    spec = from_dict({"preset": "paper", "strengths": {"wtc-vae": [10, 40]}})
    assert spec.table1_strengths == {}  # picks among the file's values
    spec = from_dict({"preset": "paper", "models": ["beta-vae"]})
    assert spec.table1_strengths == {}
    with pytest.raises(SpecError, match="table1_strengths.wtc-vae must be a non-empty list"):
        from_dict({"preset": "paper", "table1_strengths": {"wtc-vae": [7]}})
    with pytest.raises(SpecError, match="unknown model in"):
        from_dict({"preset": "mini", "models": ["wae"], "table1_strengths": {"wtc-vae": [10]}})


# -- the report's statement of its setting ------------------------------------------------------

def _fake_sweep_with_configs(root, spec, score):
    """sweep.json, and per run the config.json the sweep writes, result.json and eval.json."""
    from wtc.experiments.sweep import FORMAT, expand, expected_eval, run_config

    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps({"format": FORMAT, "spec": spec.to_json()}))
    expected = expected_eval(spec)
    for run in expand(spec):
        d = root / run.id
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(run_config(spec, run).to_json()))
        (d / "result.json").write_text(json.dumps({"steps": spec.steps}))
        values = score(run)
        metrics = {m: {"mean": float(np.mean(v)), "std": 0.0, "values": v}
                   for m, v in values.items()}
        # what evaluate records on dSprites' grid (6 factors with colour)
        drawn = drawn_sizes(expected["protocol"], expected["sample_sizes"],
                            Grid((1, 3, 6, 40, 32, 32)))
        (d / "eval.json").write_text(json.dumps({**expected, "drawn_sizes": drawn,
                                                 "metrics": metrics}))


def _score(run):
    # WTC-VAE's gamma = 1 (a figure value, not table 4's) scores best by far
    good = 0.99 if run.value == 1.0 else 0.5 + run.value / 1000
    return {m: [good] for m in ("factor_vae", "wdg", "modularity", "mig")} | {
        "reconstruction": [100.0 - good]}


def test_report_of_the_papers_setting_marks_nothing(tmp_path):
    from wtc.experiments import make_report
    from wtc.experiments.spec import from_dict

    spec = from_dict({"preset": "paper", "data": ["dsprites"],
                      "models": ["beta-vae", "beta-tcvae", "wtc-vae"]})
    _fake_sweep_with_configs(tmp_path / "sweep", spec, _score)
    report = make_report(tmp_path / "sweep", tmp_path / "report", echo=lambda *a: None)
    lines = {ln.name: ln for ln in report["setting"]}
    assert not [ln.name for ln in report["setting"] if ln.differs]
    assert lines["beta-tcvae tcvae_objective"].ours == "authors"
    assert lines["evaluation protocol"].ours == "paper"
    assert lines["steps"].ours == "300,000" and lines["lr"].ours == "0.0001"
    assert lines["wtc-vae grid"].ours == ("gamma in (1, 4, 10, 20, 40, 80), table 1 from "
                                          "(10, 20, 40, 80)")
    assert lines["beta-tcvae estimator"].ours == "mws-authors"
    # table 1 picks WTC-VAE's best among table 4's values; the figures show all six
    rows = {r["model"]: r for r in report["table"]}
    assert rows["wtc-vae"]["value"] == 80.0
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.index("## Setting") < md.index("## Table 1")
    assert "Every setting is the paper's." in md
    assert "<h2>Setting</h2>" in (tmp_path / "report" / "index.html").read_text()


def test_report_marks_every_deviation_of_the_authors_setting(tmp_path):
    from wtc.experiments import make_report
    from wtc.experiments.spec import from_dict

    spec = from_dict({"preset": "authors", "data": ["dsprites-procedural"],
                      "models": ["beta-tcvae", "wtc-vae"], "seeds": [1, 2], "steps": 10,
                      "eval": {"repeats": 1}})
    _fake_sweep_with_configs(tmp_path / "sweep", spec, _score)
    echoed = []
    report = make_report(tmp_path / "sweep", tmp_path / "report", echo=echoed.append)
    lines = {ln.name: ln for ln in report["setting"]}
    differs = {name for name, ln in lines.items() if ln.differs}
    assert differs == {"data sets", "evaluation protocol", "evaluation repeats", "sample sizes",
                       "samples and votes drawn", "steps", "update_order", "train_split",
                       "data_order", "seeds per setting",
                       "wtc-vae grid"}
    assert lines["evaluation protocol"].ours == "authors"
    assert lines["evaluation protocol"].paper == "paper (appendix D)"
    assert lines["beta-tcvae estimator"].ours == "mws-authors" and not lines[
        "beta-tcvae estimator"].differs
    assert lines["wtc-vae grid"].ours == "gamma in (1, 4, 8, 16)"
    assert lines["beta-tcvae grid"].ours == "beta in (1, 4, 8, 16)"
    assert lines["seeds per setting"].ours == "2"
    assert lines["steps"].ours == "10" and lines["steps"].paper == "300,000 (table 4(b))"
    md = (tmp_path / "report" / "report.md").read_text()
    assert "11 setting(s) differ from what the paper states" in md
    assert "| train_split | 0.9 | 1 (section 5.1: the whole data sets) | **differs** |" in md
    assert echoed[0].startswith("Differs from the paper's setting: data sets")
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {s["name"] for s in saved["setting"] if s["differs"]} == differs


def test_report_of_a_reconstruction_only_sweep_selects_by_it(tmp_path):
    from wtc.experiments import make_report
    from wtc.experiments.spec import from_dict

    spec = from_dict({"preset": "celeba", "data": ["dsprites-procedural"],
                      "strengths": {"wtc-vae": [1, 40]}, "steps": 10})
    _fake_sweep_with_configs(tmp_path / "sweep", spec,
                             lambda run: {"reconstruction": [50.0 - run.value]})
    report = make_report(tmp_path / "sweep", tmp_path / "report", echo=lambda *a: None)
    assert [r["value"] for r in report["table"]] == [40.0]  # the lowest reconstruction
    assert "by Reconstruction" in (tmp_path / "report" / "table1.md").read_text()


def test_one_encoding_serves_several_evaluations(monkeypatch):
    from wtc.metrics.cache import CachedRepresentation

    class Images(Grid):
        # the base class's observations: one image per factor row (cacheable)
        sample_observations_from_factors = GroundTruthDataset.sample_observations_from_factors

    ds, model = Images((2, 3, 4)), Echo()
    codes = CachedRepresentation.encode(model, ds)
    assert model.encoded == len(ds) == 24
    first = evaluate(model, ds, metrics=["mig", "factor_vae"], protocol="authors", repeats=2,
                     cache=codes)
    again = evaluate(model, ds, metrics=["mig", "factor_vae"], protocol="authors", repeats=2,
                     cache=True)
    assert model.encoded == 2 * 24  # the second evaluation encoded the images itself
    assert first["cached_codes"] and first["metrics"] == again["metrics"]
    with pytest.raises(ValueError, match="cache: a CachedRepresentation needs"):
        evaluate(model, Grid((2, 3)), metrics=["mig"], cache=codes)
    with pytest.raises(ValueError, match="cache must be 'auto', True, False or"):
        evaluate(model, ds, metrics=["mig"], cache="yes")
