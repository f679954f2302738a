"""The evaluation's code cache (every image encoded once, the metrics look codes up: the same
values as encoding every draw) and ``wtc eval``'s refusals of bad options and bad results."""

import json
import math

import numpy as np
import pytest
import torch
from wtc.data.base import GroundTruthDataset
from wtc.metrics import evaluate
from wtc.metrics.cache import CachedRepresentation, EncodedDataset, cacheable, draws_per_repeat
from wtc.metrics.evaluate import check_result, nan_metrics, protocol_settings, use_cache

# small samples: the uncached evaluation encodes every draw (a few thousand a repeat)
SMALL = dict(num_train=200, num_test=100, votes_train=20, votes_eval=10, variance_samples=200)
# every way a metric gets codes: its own draws (FactorVAE, BetaVAE), the shared train sample
# (WDG, MIG, Modularity), train and test (SAP; DCI and explicitness too, left out: slow to fit)
# and real images (reconstruction)
ALL = ["factor_vae", "beta_vae", "wdg", "modularity", "mig", "reconstruction", "sap"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A random beta-VAE and a 720-image procedural dSprites grid."""
    import os

    from wtc.data import load
    from wtc.models import build

    old = os.environ.get("WTC_CACHE")
    os.environ["WTC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        dataset = load("dsprites-procedural", grid_step=(1, 1, 2, 8, 8, 8))
        dataset.batch([0])  # render now, inside the temporary cache
    finally:
        if old is None:
            os.environ.pop("WTC_CACHE")
        else:
            os.environ["WTC_CACHE"] = old
    torch.manual_seed(0)
    model = build("beta-vae").eval()
    return model, dataset


@pytest.mark.parametrize("protocol", ["paper", "dlib"])
def test_cached_evaluation_is_the_uncached_one(small, protocol):
    model, dataset = small
    kw = dict(metrics=ALL, protocol=protocol, repeats=2, sizes=SMALL, seed=3)
    assert len(dataset) == 720 and use_cache(dataset, ALL, protocol_settings(
        protocol, 2, sizes=SMALL)[1], 2)  # the draws exceed the data set: "auto" caches
    plain = evaluate(model, dataset, cache=False, **kw)
    cached = evaluate(model, dataset, cache=True, **kw)
    assert not plain["cached_codes"] and cached["cached_codes"]
    for m in ALL:
        a, b = plain["metrics"][m]["values"], cached["metrics"][m]["values"]
        assert len(a) == len(b) == 2
        # float rounding only: the images are encoded in other batches, and float32 codes that
        # agree to ~1e-7 give W1 distances (differences of codes) that agree to ~1e-7 absolute
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6), m
    assert evaluate(model, dataset, **kw)["cached_codes"]  # auto


def test_the_cache_encodes_each_image_once(small, monkeypatch):
    model, dataset = small
    loaded, encoded = [], [0]
    batch, represent = dataset.batch, model.represent

    def counting_batch(indices):
        loaded.append(np.asarray(indices).copy())
        return batch(indices)

    def counting_represent(x):
        encoded[0] += len(x)
        return represent(x)

    monkeypatch.setattr(dataset, "batch", counting_batch)
    monkeypatch.setattr(model, "represent", counting_represent)
    metrics = [m for m in ALL if m != "reconstruction"]  # which loads and encodes its own
    result = evaluate(model, dataset, metrics=metrics, repeats=3, sizes=SMALL, cache=True)
    assert result["cached_codes"]
    assert encoded[0] == len(dataset)
    assert np.array_equal(np.sort(np.concatenate(loaded)), np.arange(len(dataset)))


def test_cached_representation_looks_up_indices_and_encodes_images(small):
    model, dataset = small
    codes = CachedRepresentation.encode(model, dataset, batch_size=100)
    assert codes.codes.shape == (len(dataset), 10) and codes.codes.dtype == torch.float32
    wrapped = EncodedDataset(dataset)
    factors = dataset.index_to_factors([5, 700, 5])
    obs = wrapped.sample_observations_from_factors(factors, np.random.default_rng(0))
    assert np.array_equal(obs, [5, 700, 5]) and obs[1:].__class__ is obs.__class__
    from wtc.representation import posterior_means

    direct = posterior_means(model, dataset.batch([5, 700, 5]))
    torch.testing.assert_close(codes(obs), direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(codes(dataset.batch([5])), direct[:1])  # real images: encoded
    assert len(wrapped) == len(dataset) and wrapped.factor_sizes == dataset.factor_sizes


class Instances(GroundTruthDataset):
    """Two images per factor row, picked with the generator's draws (like SmallNORB)."""

    name = "instances"
    factor_names = ("a", "b")
    factor_sizes = (3, 4)

    def __len__(self):
        return 24

    def observation_indices(self, factors, rng=None):
        rng = np.random.default_rng(rng)
        return 2 * self.factors_to_index(factors) + rng.integers(0, 2, len(factors))

    def sample_observations_from_factors(self, factors, rng=None):
        return self.batch(self.observation_indices(factors, rng))

    def images_uint8(self, indices):
        out = np.zeros((len(indices), 8, 8), np.uint8)
        out[np.arange(len(indices)), indices // 3, indices % 8] = 255
        return out


def test_datasets_that_draw_images_are_cached_only_when_they_say_how():
    assert cacheable(Instances())
    # an observation drawn by a method the cache cannot reproduce is encoded every time
    assert not cacheable(type("Opaque", (GroundTruthDataset,), {
        "factor_sizes": (2,), "__len__": lambda self: 2,
        "sample_observations_from_factors": lambda self, f, rng=None: torch.zeros(len(f), 1)})())
    # the hook's draws are taken from the same generator: the same indices, the same stream
    rng1, rng2 = np.random.default_rng(4), np.random.default_rng(4)
    ds = Instances()
    f = ds.sample_factors(50, np.random.default_rng(1))
    direct = ds.observation_indices(f, rng1)
    assert np.array_equal(EncodedDataset(ds).sample_observations_from_factors(f, rng2), direct)
    assert rng1.random() == rng2.random()


def test_draws_per_repeat_counts_the_protocols_samples():
    _, n = protocol_settings("paper")
    assert draws_per_repeat(["wdg", "mig"], n) == 12_800
    assert draws_per_repeat(["sap"], n) == 12_800 + 5_000
    assert draws_per_repeat(["factor_vae", "reconstruction"], n) == 12_800 + 64 * 15_000
    # the default evaluation of dSprites: about a million draws a repeat, 50 repeats
    assert 50 * draws_per_repeat(["factor_vae", "wdg", "modularity", "mig"], n) > 49e6


@pytest.mark.parametrize("kwargs, match", [
    (dict(repeats=0), "repeats"), (dict(repeats=-3), "repeats"), (dict(repeats=1.5), "repeats"),
    (dict(scale=-1), "scale"), (dict(scale=0), "scale"), (dict(scale=math.nan), "scale"),
    (dict(seed=-1), "seed"), (dict(metrics=[]), "metrics"), (dict(cache="yes"), "cache")])
def test_evaluate_refuses_bad_settings(small, kwargs, match):
    model, dataset = small
    with pytest.raises(ValueError, match=match):
        evaluate(model, dataset, **kwargs)


GOOD = {"metrics": {"mig": {"mean": 0.2, "std": 0.01, "values": [0.19, 0.21]}},
        "protocol": "paper", "repeats": 2}


@pytest.mark.parametrize("argv, option", [
    (["--repeats", "0"], "--repeats"), (["--repeats", "-3"], "--repeats"),
    (["--scale", "-1"], "--scale"), (["--scale", "0"], "--scale"), (["--scale", "nan"], "--scale"),
    (["--seed", "-1"], "--seed"), (["--size", "num_train=1"], "--size"),
    (["--size", "votes=5"], "--size"), (["--size", "num_train=-3"], "--size")])
def test_wtc_eval_refuses_bad_options_before_anything_runs(tmp_path, monkeypatch, capsys, argv,
                                                           option):
    import wtc.train
    from wtc.cli import main as wtc_main

    def never(*a, **k):
        raise AssertionError("the run was loaded")

    monkeypatch.setattr(wtc.train, "load_run", never)
    (tmp_path / "eval.json").write_text(json.dumps(GOOD))
    assert wtc_main(["eval", str(tmp_path), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err and "wtc eval" in err
    assert json.loads((tmp_path / "eval.json").read_text()) == GOOD


def _fake_run(monkeypatch, result):
    import wtc.metrics
    import wtc.train

    class Config:
        model, data = "beta-vae", "dsprites-procedural"

    monkeypatch.setattr(wtc.train, "load_run", lambda run, device=None: (None, Config, None))
    monkeypatch.setattr(wtc.metrics, "evaluate", lambda *a, **k: json.loads(json.dumps(result)))


def test_wtc_eval_keeps_a_complete_result_over_a_nan_one(tmp_path, monkeypatch, capsys):
    from wtc.cli import main as wtc_main

    nan = {**GOOD, "metrics": {"mig": {"mean": math.nan, "std": math.nan,
                                       "values": [math.nan, math.nan]}}}
    _fake_run(monkeypatch, nan)
    (tmp_path / "eval.json").write_text(json.dumps(GOOD))
    assert wtc_main(["eval", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "kept" in err and "eval.nan.json" in err
    assert json.loads((tmp_path / "eval.json").read_text()) == GOOD
    assert nan_metrics(json.loads((tmp_path / "eval.nan.json").read_text())) == ["mig"]
    # without a complete result to keep, the NaN result is the run's eval.json
    (tmp_path / "eval.json").unlink()
    assert wtc_main(["eval", str(tmp_path), "--quiet"]) == 0
    assert nan_metrics(json.loads((tmp_path / "eval.json").read_text())) == ["mig"]


def test_wtc_eval_never_writes_a_malformed_result(tmp_path, monkeypatch, capsys):
    from wtc.cli import main as wtc_main

    short = {**GOOD, "metrics": {"mig": {"mean": 0.1, "std": 0.0, "values": [0.1]}}}
    assert check_result(short) and not check_result(GOOD)
    assert check_result({**GOOD, "repeats": 0}) and check_result({**GOOD, "metrics": {}})
    _fake_run(monkeypatch, short)
    (tmp_path / "eval.json").write_text(json.dumps(GOOD))
    assert wtc_main(["eval", str(tmp_path), "--quiet"]) == 1
    assert "malformed" in capsys.readouterr().err
    assert json.loads((tmp_path / "eval.json").read_text()) == GOOD


def test_wtc_eval_shows_progress_unless_quiet(small, tmp_path, monkeypatch, capsys):
    import wtc.train
    from wtc.cli import main as wtc_main

    model, dataset = small

    class Config:
        model, data = "beta-vae", "dsprites-procedural"

    monkeypatch.setattr(wtc.train, "load_run", lambda run, device=None: (model, Config, dataset))
    args = ["eval", str(tmp_path), "--metrics", "mig", "factor_vae", "--repeats", "2",
            "--scale", "0.01"]
    assert wtc_main(args) == 0
    err = capsys.readouterr().err
    assert "encoding" in err and "repeats" in err and "factor_vae" in err
    assert json.loads((tmp_path / "eval.json").read_text())["cached_codes"]
    assert wtc_main(args + ["--quiet"]) == 0
    assert capsys.readouterr().err == ""
