"""Sweep specs, the sweep runner (killed and restarted), and the report's aggregation."""

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from wtc.cli import main as cli
from wtc.experiments import (
    SpecError,
    SweepError,
    SweepSpec,
    collect,
    expand,
    load_spec,
    make_report,
    table1,
)
from wtc.experiments.report import rank_correlations
from wtc.experiments.spec import from_dict, override
from wtc.experiments.sweep import FORMAT, expected_eval, prepare, run_state



# -- specs ------------------------------------------------------------------------------------

def test_presets_have_the_papers_study_and_a_small_one():
    paper = load_spec("paper")
    # table 1's 360 runs and figures 3 and 7's WTC-VAE at gamma 1 and 4: 390
    assert len(expand(paper)) == (5 * 4 + 6) * 5 * 3
    assert paper.steps == 300_000 and paper.seeds == [1, 11, 42, 73, 89]
    assert paper.strength_values("wtc-vae") == [1, 4, 10, 20, 40, 80]
    assert paper.table1_strengths == {"wtc-vae": [10, 20, 40, 80]}
    assert paper.strength_values("beta-vae") == [1, 4, 8, 16]
    assert expected_eval(paper)["repeats"] == 50
    mini = load_spec("mini")
    runs = expand(mini)
    assert len(runs) == 6 * 2 * 2 and {r.data for r in runs} == {"dsprites-procedural"}
    assert len({r.id for r in runs}) == len(runs)


def test_toml_spec_starts_from_a_preset_and_overrides(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('preset = "mini"\nmodels = ["wtc-wae"]\nseeds = [3]\nsteps = 7\n'
                    '[strengths]\nwtc-wae = [5, 6]\n[fixed]\nwtc-wae = {beta = 2.0}\n'
                    '[eval]\nrepeats = 4\n')
    spec = load_spec(path)
    assert spec.name == "mini" and spec.steps == 7 and spec.eval.repeats == 4
    assert spec.eval.sizes == load_spec("mini").eval.sizes  # kept from the preset
    runs = expand(spec)
    assert [r.id for r in runs] == ["dsprites-procedural/wtc-wae/gamma=5/seed=3",
                                    "dsprites-procedural/wtc-wae/gamma=6/seed=3"]
    assert runs[0].strengths == {"beta": 2.0, "gamma": 5.0}


@pytest.mark.parametrize("raw, message", [
    ({"modles": ["wae"]}, "unknown key 'modles'"),
    ({"models": ["wae", "vae"]}, "unknown model 'vae'"),
    ({"data": ["dsprite"]}, "unknown data set 'dsprite'"),
    ({"models": ["wae"], "strengths": {"wtc-vae": [1.0]}}, "not in models"),
    ({"models": ["wae"], "strengths": {"wae": []}}, "strengths.wae"),
    ({"models": ["wtc-wae"], "fixed": {"wtc-wae": {"gamma": 1.0}}}, "sweep varies"),
    ({"models": ["wae"], "fixed": {"wae": {"gamma": 1.0}}}, "wae takes beta, not gamma"),
    ({"seeds": [1, 1]}, "seeds lists a value twice"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"eval": {"protocl": "paper"}}, "unknown key 'protocl' in [eval]"),
    ({"eval": {"protocol": "mine"}}, "eval.protocol"),
    ({"eval": {"sizes": {"votes": 3}}}, "unknown sample size in eval.sizes 'votes'"),
    ({"eval": {"metrics": ["fvae"]}}, "unknown metric in eval.metrics 'fvae'"),
    ({"preset": "huge"}, "unknown preset 'huge'"),
    ({"data": ["dsprites-procedural"], "data_options": {"dsprites-procedural": {"cache": 1}}},
     "unknown option in [data_options.dsprites-procedural] 'cache'"),
    ({"data": ["dsprites-procedural"], "data_options": {"dsprites-procedural": 4}},
     "data_options.dsprites-procedural must be a table"),
])
def test_bad_specs_name_the_problem(raw, message):
    with pytest.raises(SpecError) as err:
        from_dict(raw)
    assert message in str(err.value)


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match="neither a preset"):
        load_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("models = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"models": [')
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(bad_json)
    other = tmp_path / "spec.yaml"
    other.write_text("models: []")
    with pytest.raises(SpecError, match=".toml or .json"):
        load_spec(other)


def test_command_line_overrides_drop_strengths_of_removed_models():
    spec = override(load_spec("mini"), models=["wae"], seeds=[5], steps=3)
    assert spec.models == ["wae"] and list(spec.strengths) == ["wae"] and spec.seeds == [5]


def test_bad_spec_fails_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('models = ["beta-vae", "gan"]\n')
    out = tmp_path / "sweep"
    assert cli(["sweep", str(path), "--out", str(out)]) == 2
    assert "unknown model 'gan'" in capsys.readouterr().err
    assert not out.exists()


def test_missing_data_set_file_fails_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("WTC_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = from_dict({"data": ["dsprites"], "models": ["wae"], "data_root": str(tmp_path)})
    with pytest.raises(SweepError, match="data set dsprites"):
        prepare(spec, tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "sweep.json").exists()


def test_a_sweep_folder_never_mixes_two_specs(tmp_path):
    spec = from_dict({"preset": "mini", "models": ["wae"]})
    prepare(spec, tmp_path)
    prepare(spec, tmp_path)  # the same spec again: fine
    other = from_dict({"preset": "mini", "models": ["wae"], "steps": 99})
    with pytest.raises(SweepError, match="another spec .*steps"):
        prepare(other, tmp_path)


# -- aggregation on synthetic evaluations ------------------------------------------------------

def _fake_sweep(root: Path, spec: SweepSpec, score, skip=()):
    """Write sweep.json and, for each run not in ``skip``, result.json and an eval.json whose
    repeats are given by ``score(run)`` (metric -> list of repeat values)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps({"format": FORMAT, "spec": spec.to_json()}))
    expected = expected_eval(spec)
    for run in expand(spec):
        if run.id in skip:
            continue
        d = root / run.id
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"steps": spec.steps}))
        metrics = {m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
                   for m, v in score(run).items()}
        (d / "eval.json").write_text(json.dumps({**expected, "metrics": metrics}))


def _synthetic_spec():
    return from_dict({"name": "synthetic", "data": ["dsprites-procedural"],
                      "models": ["beta-vae", "wtc-vae", "wae"], "seeds": [1, 2, 3],
                      "strengths": {"beta-vae": [1.0, 4.0], "wtc-vae": [10.0, 40.0],
                                    "wae": [1.0, 8.0]},
                      "eval": {"repeats": 2}})


def _synthetic_score(run):
    # Known per-run means: base + seed offset; each run's two repeats straddle its mean.
    base = {"beta-vae": 0.5, "wtc-vae": 0.7, "wae": 0.3}[run.model]
    bump = 0.1 if run.value in (4.0, 40.0) else 0.0  # the stronger setting is better
    mean = base + bump + 0.01 * run.seed
    rec = 20.0 + 10 * run.value / 40 + run.seed
    return {"factor_vae": [mean - 0.02, mean + 0.02], "wdg": [mean / 10] * 2,
            "modularity": [1 - mean / 2] * 2, "mig": [mean / 5, mean / 5],
            "reconstruction": [rec - 1, rec + 1]}


def test_report_keeps_runs_of_different_axis_values_apart(tmp_path):
    """Runs that differ only in an [axes] value are different settings: each has its own
    cell, its own label and its own CSV row, never an average over the axis."""
    spec = from_dict({"name": "axes", "data": ["dsprites-procedural"], "models": ["beta-vae"],
                      "seeds": [1, 2], "strengths": {"beta-vae": [4.0]},
                      "axes": {"lr": [1e-4, 5e-4]}, "eval": {"repeats": 1}})

    def score(run):
        good = 0.9 if dict(run.axes)["lr"] == 5e-4 else 0.1
        return {m: [good + 0.01 * run.seed] for m in
                ("factor_vae", "wdg", "modularity", "mig", "reconstruction")}

    _fake_sweep(tmp_path / "sweep", spec, score)
    c = collect(tmp_path / "sweep")
    assert len(c.settings) == 2 and all(len(s.seeds) == 2 for s in c.settings)
    (row,) = table1(c)
    assert dict(row["axes"]) == {"lr": 5e-4}
    np.testing.assert_allclose(row["factor_vae"][0], 0.915)
    make_report(tmp_path / "sweep", tmp_path / "report", echo=lambda *a: None)
    assert "beta=4, lr=0.0005" in (tmp_path / "report" / "table1.md").read_text()
    lines = (tmp_path / "report" / "settings.csv").read_text().splitlines()
    assert lines[0].startswith("data,model,strength,value,lr,seeds")
    assert {line.split(",")[4] for line in lines[1:]} == {"0.0001", "0.0005"}


def test_report_aggregates_known_means_and_stds(tmp_path):
    spec = _synthetic_spec()
    _fake_sweep(tmp_path / "sweep", spec, _synthetic_score)
    c = collect(tmp_path / "sweep")
    assert not c.missing and len(c.runs) == 18
    rows = {r["model"]: r for r in table1(c)}
    # beta-vae's best FactorVAE strength is 4: per-seed means 0.61, 0.62, 0.63
    r = rows["beta-vae"]
    assert (r["strength"], r["value"], r["seeds"]) == ("beta", 4.0, 3)
    np.testing.assert_allclose(r["factor_vae"], (0.62, np.std([0.61, 0.62, 0.63])))
    np.testing.assert_allclose(r["reconstruction"][0], 20 + 10 * 4 / 40 + 2)
    np.testing.assert_allclose(r["modularity"][0], np.mean([1 - m / 2 for m in
                                                            (0.61, 0.62, 0.63)]))
    assert rows["wtc-vae"]["value"] == 40.0 and rows["wae"]["value"] == 1.0
    # ranks: FactorVAE wtc-vae (0.82) > beta-vae (0.62) > wae (0.32); reconstruction is
    # lower-better: wae at beta=1 (22.25) < beta-vae at 4 (23) < wtc-vae at 40 (32)
    assert [rows[m]["factor_vae_rank"] for m in ("wtc-vae", "beta-vae", "wae")] == [0, 1, None]
    assert [rows[m]["reconstruction_rank"] for m in ("wae", "beta-vae", "wtc-vae")] == [0, 1,
                                                                                        None]
    # selecting by reconstruction picks the weaker strengths instead
    by_rec = {r["model"]: r for r in table1(c, select_by="reconstruction")}
    assert by_rec["beta-vae"]["value"] == 1.0 and by_rec["wtc-vae"]["value"] == 10.0

    report = make_report(tmp_path / "sweep", tmp_path / "report", echo=lambda *a: None)
    out = tmp_path / "report"
    md = (out / "table1.md").read_text()
    assert "**0.820 (0.008)**" in md and "<u>0.620 (0.008)</u>" in md
    with open(out / "table1.csv") as f:
        table = {row["model"]: row for row in csv.DictReader(f)}
    assert float(table["wtc-vae"]["factor_vae_mean"]) == pytest.approx(0.82)
    assert float(table["wae"]["reconstruction_mean"]) == pytest.approx(22.25)
    with open(out / "settings.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    for name in ("figure2_factor_vae_vs_reconstruction.png", "figure3_wdg_violins.png",
                 "figure5_rank_correlation.png", "figure6_wdg_vs_reconstruction.png",
                 "figure7_factor_vae_violins.png"):
        assert (out / name).stat().st_size > 5000 and name in report["figures"]
        assert name in (out / "index.html").read_text()
    # no checkpoints in a synthetic sweep: the traversals are reported missing, not faked
    assert "No traversals for dsprites-procedural" in (out / "report.md").read_text()


def test_rank_correlation_follows_the_runs():
    spec = _synthetic_spec()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        _fake_sweep(Path(d), spec, _synthetic_score)
        names, matrix = rank_correlations(collect(d))["dsprites-procedural"]
    i = {m: k for k, m in enumerate(names)}
    # wdg and mig are increasing functions of the FactorVAE mean, modularity a decreasing one
    assert matrix[i["factor_vae"], i["wdg"]] == pytest.approx(1.0)
    assert matrix[i["factor_vae"], i["mig"]] == pytest.approx(1.0)
    assert matrix[i["factor_vae"], i["modularity"]] == pytest.approx(-1.0)


def test_report_names_runs_without_evaluation_instead_of_averaging_fewer(tmp_path):
    spec = _synthetic_spec()
    lost = "dsprites-procedural/beta-vae/beta=4/seed=2"
    _fake_sweep(tmp_path / "sweep", spec, _synthetic_score, skip={lost})
    other = tmp_path / "sweep" / "dsprites-procedural/wae/beta=1/seed=3" / "eval.json"
    stale = json.loads(other.read_text())
    stale["repeats"] = 1  # evaluated with settings other than the spec's
    other.write_text(json.dumps(stale))
    c = collect(tmp_path / "sweep")
    assert c.missing == {lost: "not trained",
                         "dsprites-procedural/wae/beta=1/seed=3":
                         "evaluated with other settings than the spec's"}
    rows = {r["model"]: r for r in table1(c)}
    assert rows["beta-vae"]["seeds"] == 2 and rows["beta-vae"]["expected_seeds"] == 3
    np.testing.assert_allclose(rows["beta-vae"]["factor_vae"][0], np.mean([0.61, 0.63]))
    make_report(tmp_path / "sweep", tmp_path / "report", echo=lambda *a: None)
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"- {lost}: not trained" in md and "†(2/3 seeds)" in md
    assert lost in (tmp_path / "report" / "index.html").read_text()


def test_report_of_an_unevaluated_sweep_says_so(tmp_path):
    spec = _synthetic_spec()
    _fake_sweep(tmp_path, spec, _synthetic_score, skip={r.id for r in expand(spec)})
    with pytest.raises(ValueError, match="no run .* has a complete evaluation"):
        make_report(tmp_path, tmp_path / "report", echo=lambda *a: None)


# -- a real sweep, killed and restarted --------------------------------------------------------

TINY = """
name = "tiny"
data = ["dsprites-procedural"]
models = ["beta-vae", "wtc-vae"]
seeds = [1, 2]
steps = 40
checkpoint_every = 10
lr = 5e-4
[strengths]
beta-vae = [4]
wtc-vae = [10]
[data_options.dsprites-procedural]
grid_step = 4
[eval]
repeats = 2
metrics = ["factor_vae", "wdg", "modularity", "mig", "reconstruction"]
sizes = {num_train = 600, num_test = 200, votes_train = 20, votes_eval = 10, variance_samples = 600}
"""


def _sweep_process(spec_path, out, jobs=1):
    return subprocess.Popen([sys.executable, "-m", "wtc", "sweep", str(spec_path), "--out",
                             str(out), "--jobs", str(jobs)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, timeout=240.0):
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting for the sweep")
        time.sleep(0.05)


def _lock_is_free(run_dir: Path) -> bool:
    fd = os.open(run_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_sweep_killed_and_restarted_loses_nothing_and_reports(tmp_path):
    spec_path = tmp_path / "tiny.toml"
    spec_path.write_text(TINY)
    spec = load_spec(spec_path)
    out = tmp_path / "sweep"
    first, second, *_ = [out / r.id for r in expand(spec)]

    # 1. SIGKILL the sweep alone while the second run trains: its child is orphaned and goes
    #    on holding the run's lock; a restarted sweep must wait for it, not race it.
    proc = _sweep_process(spec_path, out)
    _wait_for(lambda: run_state(spec, first) == "done"
              and (second / "checkpoint.pt").exists() or proc.poll() is not None)
    first_eval = (first / "eval.json").stat().st_mtime_ns
    proc.kill()
    proc.wait()
    interrupted = run_state(spec, second)

    # 2. restart: the finished run is skipped, the rest complete
    proc = _sweep_process(spec_path, out)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert f"done before: {first.relative_to(out)}" in output
    assert (first / "eval.json").stat().st_mtime_ns == first_eval  # not redone
    for run in expand(spec):
        assert run_state(spec, out / run.id) == "done", run.id
    if interrupted in ("resume", "evaluate"):  # the orphan was still at work
        assert "being worked on by another process" in output
    steps = [json.loads(line)["step"] for line in (second / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == spec.steps  # no step trained twice

    # 3. SIGTERM stops the sweep and its children; the next start resumes the run
    (second / "eval.json").unlink()
    for name in ("result.json", "eval.json"):
        (out / expand(spec)[-1].id / name).unlink()
    proc = _sweep_process(spec_path, out)
    last = out / expand(spec)[-1].id
    _wait_for(lambda: (second / "eval.json").exists() or proc.poll() is not None)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == (130 if still_running else 0), output
    assert _lock_is_free(last), "a child of the stopped sweep is still running"
    proc = _sweep_process(spec_path, out)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert all(run_state(spec, out / r.id) == "done" for r in expand(spec))

    # 4. the report has every table cell and every figure
    report = make_report(out, tmp_path / "report", echo=lambda *a: None)
    assert not report["missing"]
    for row in report["table"]:
        for m in ("factor_vae", "wdg", "modularity", "mig", "reconstruction"):
            assert np.isfinite(row[m][0]) and np.isfinite(row[m][1]), (row["model"], m)
    figures = set(report["figures"])
    assert figures == {"figure2_factor_vae_vs_reconstruction.png", "figure3_wdg_violins.png",
                       "figure4_traversals_dsprites-procedural.png",
                       "figure5_rank_correlation.png", "figure6_wdg_vs_reconstruction.png",
                       "figure7_factor_vae_violins.png"}
    html_text = (tmp_path / "report" / "index.html").read_text()
    assert all(f in html_text for f in figures)


def test_a_failed_run_is_reported_and_the_others_go_on(tmp_path):
    from wtc.experiments import run_sweep

    spec = from_dict({"name": "fail", "data": ["dsprites-procedural"],
                      "data_options": {"dsprites-procedural": {"grid_step": 4}},
                      "models": ["wae"], "seeds": [1, 2], "steps": 2, "checkpoint_every": 1,
                      "strengths": {"wae": [1.0]},
                      "eval": {"repeats": 1, "metrics": ["wdg"],
                               "sizes": {"num_train": 300, "num_test": 100}}})
    out = tmp_path / "sweep"
    broken = out / expand(spec)[0].id
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")  # resume fails clearly
    lines = []
    result = run_sweep(spec, out, jobs=1, echo=lines.append)
    assert list(result.failed) == [expand(spec)[0].id]
    assert "corrupt" in result.failed[expand(spec)[0].id]
    assert result.finished == [expand(spec)[1].id]
    assert any(line.startswith("  FAILED") for line in lines)


def test_a_checkout_imports_cleanly_from_its_root():
    """From the repository root the checkout's uncompiled wtc_ext/ folder comes first on
    sys.path; it must still find the compiled module (a top-level name no folder holds)."""
    root = Path(__file__).resolve().parents[1]
    code = ("import torch, wtc_ext; z = torch.randn(5, 3);"
            "print('permuted', torch.allclose(wtc_ext.permute_dims(z).sum(0), z.sum(0)))")
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "permuted True" in run.stdout
    run = subprocess.run([sys.executable, "-m", "wtc", "--help"], cwd=root, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "usage: wtc" in run.stdout


# -- [train] and [axes]: any TrainConfig field, per spec and per axis ---------------------------

def test_train_table_and_axes_expand_into_runs_and_their_config_files(tmp_path):
    from wtc.experiments.sweep import run_config, write_run_config
    from wtc.train import TrainConfig

    path = tmp_path / "study.toml"
    path.write_text('data = ["dsprites-procedural"]\nmodels = ["wtc-vae", "wtc-wae"]\n'
                    'seeds = [1]\nsteps = 30\n[strengths]\nwtc-vae = [10]\nwtc-wae = [20]\n'
                    '[fixed]\nwtc-wae = {beta = 2.0}\n'
                    '[data_options.dsprites-procedural]\ngrid_step = 4\n'
                    '[train]\nlatent_dim = 6\nadam_betas = [0.5, 0.9]\n'
                    '[axes]\nlr = [1e-4, 5e-4]\nadversary_steps = [1, 5]\n')
    spec = load_spec(path)
    runs = expand(spec)
    assert [r.id for r in runs] == [
        f"dsprites-procedural/{m}/gamma={g}/lr={lr}/adversary_steps={a}/seed=1"
        for m, g in (("wtc-vae", 10), ("wtc-wae", 20))
        for lr in ("0.0001", "0.0005") for a in (1, 5)]
    run = runs[5]  # wtc-wae, lr 1e-4, 5 adversary steps
    cfg = run_config(spec, run, "cpu")
    assert (cfg.model, cfg.data, cfg.seed, cfg.steps, cfg.lr, cfg.adversary_steps) == (
        "wtc-wae", "dsprites-procedural", 1, 30, 1e-4, 5)
    assert (cfg.beta, cfg.gamma, cfg.latent_dim, cfg.adam_betas) == (2.0, 20.0, 6, (0.5, 0.9))
    assert cfg.data_options == {"grid_step": 4} and cfg.device == "cpu" and not cfg.progress
    run_dir = tmp_path / "sweep" / run.id
    run_dir.mkdir(parents=True)
    written = write_run_config(spec, run, run_dir, "cpu")
    assert written == run_dir / "config.json"
    assert TrainConfig.from_file(written) == cfg
    # the file is everything a job needs: it trains the run from it (wtc.experiments.jobs)
    from wtc.experiments.jobs import read_config

    assert read_config(run_dir) == cfg
    # without [train] and [axes] the runs and their ids are as before
    plain = from_dict({"data": ["dsprites-procedural"], "models": ["wae"], "seeds": [3],
                       "strengths": {"wae": [8]}})
    assert [r.id for r in expand(plain)] == ["dsprites-procedural/wae/beta=8/seed=3"]
    assert run_config(plain, expand(plain)[0]).latent_dim == 10


@pytest.mark.parametrize("raw, message", [
    ({"train": {"lrr": 1.0}}, "unknown field 'lrr' in [train]"),
    ({"train": {"model": "wae"}}, "train.model: the runs' models are the spec's models list"),
    ({"train": {"steps": 5}}, "train.steps: set steps at the top level"),
    ({"train": {"gamma": 5.0}}, "train.gamma: strengths are set in [strengths]"),
    ({"train": {"latent_dim": "ten"}}, "train.latent_dim: latent_dim must be an integer"),
    ({"train": {"latent_dim": 0}}, "latent_dim must be >= 1"),
    ({"train": 3}, "train must be a table"),
    ({"axes": {"steps": [1, 2]}}, "axes.steps: every run of a sweep trains the spec's steps"),
    ({"axes": {"lr": []}}, "axes.lr must be a non-empty list"),
    ({"axes": {"lr": [1e-4, 1e-4]}}, "axes.lr lists a value twice"),
    ({"axes": {"lr": [0.1000001, 0.1000002]}}, "two runs share a folder name"),
    ({"axes": {"data_options": [{"step": 2}]}}, "axes.data_options: set data options"),
    ({"axes": {"seed": [1]}}, "axes.seed: the runs' seeds are the spec's seeds list"),
    ({"train": {"lr": 1e-3}}, "train.lr: set lr at the top level"),
    ({"train": {"eval_samples": 8}, "axes": {"eval_samples": [4]}}, "set in [train] too"),
])
def test_bad_train_and_axes_tables_name_the_field(raw, message):
    with pytest.raises(SpecError) as err:
        from_dict({"models": ["wae"], **raw})
    assert message in str(err.value)


def test_a_sweep_record_of_an_older_wtc_is_the_same_spec(tmp_path):
    spec = from_dict({"preset": "mini", "models": ["wae"]})
    record = spec.to_json()
    del record["train"], record["axes"]  # written before those keys existed
    (tmp_path / "sweep.json").write_text(json.dumps({"format": FORMAT, "spec": record}))
    prepare(spec, tmp_path)


def test_a_sweep_with_an_axis_trains_each_run_from_its_config_file(tmp_path):
    from wtc.experiments import run_sweep

    spec = from_dict({"name": "axis", "data": ["dsprites-procedural"],
                      "data_options": {"dsprites-procedural": {"grid_step": 4}},
                      "models": ["wae"], "seeds": [1], "steps": 2, "checkpoint_every": 1,
                      "strengths": {"wae": [1.0]}, "axes": {"latent_dim": [4, 6]},
                      "eval": {"repeats": 1, "metrics": ["wdg"],
                               "sizes": {"num_train": 300, "num_test": 100}}})
    out = tmp_path / "sweep"
    result = run_sweep(spec, out, jobs=1, echo=lambda *a: None)
    assert result.ok and len(result.finished) == 2
    for run, dim in zip(expand(spec), (4, 6)):
        assert run.id.endswith(f"/latent_dim={dim}/seed=1")
        config = json.loads((out / run.id / "config.json").read_text())
        assert config["latent_dim"] == dim and config["progress"] is False
        job = json.loads((out / run.id / "job.json").read_text())  # trained by run_job
        assert job["state"] == "evaluated" and job["executor"] == "local"
        assert run_state(spec, out / run.id) == "done"


def test_command_line_sets_train_fields_of_a_spec(tmp_path, capsys):
    from wtc.experiments.spec import parse_assignments

    values = parse_assignments(["latent_dim=6", "estimator=mws", "adam_betas=[0.5, 0.9]"])
    assert values == {"latent_dim": 6, "estimator": "mws", "adam_betas": [0.5, 0.9]}
    spec = override(from_dict({"models": ["wae"], "train": {"eval_samples": 64}}), train=values)
    assert spec.train == {"eval_samples": 64, **values}
    with pytest.raises(SpecError, match="FIELD=VALUE"):
        parse_assignments(["latent_dim"])
    out = tmp_path / "sweep"
    assert cli(["sweep", "mini", "--out", str(out), "--train", "latent_dim=0"]) == 2
    assert "latent_dim must be >= 1" in capsys.readouterr().err
    assert not out.exists()


# -- executors behind wtc sweep ----------------------------------------------------------------

TWO_RUNS = """
name = "two"
data = ["dsprites-procedural"]
models = ["wae"]
seeds = [1, 2]
steps = 2
checkpoint_every = 1
[strengths]
wae = [1.0]
[data_options.dsprites-procedural]
grid_step = 4
[eval]
repeats = 1
metrics = ["wdg"]
sizes = {num_train = 300, num_test = 100}
"""


def test_sweep_on_the_local_executor_end_to_end_and_its_status(tmp_path, capsys):
    path = tmp_path / "two.toml"
    path.write_text(TWO_RUNS + '[executor]\nname = "local"\njobs = 2\n')
    out = tmp_path / "sweep"
    assert cli(["sweep", str(path), "--out", str(out), "--executor", "local"]) == 0
    printed = capsys.readouterr().out
    assert "submitted 2 run(s) to local: job ids" in printed
    assert "2 finished, 0 done before, 0 failed" in printed
    spec = load_spec(path)
    for run in expand(spec):
        assert run_state(spec, out / run.id) == "done"
        job = json.loads((out / run.id / "job.json").read_text())
        assert job["state"] == "evaluated" and job["attempt"] == 1
    recorded = json.loads((out / "sweep.json").read_text())["spec"]
    assert recorded["executor"] == {"name": "local", "jobs": 2}  # round-trips through sweep.json
    # the same command again submits nothing: every run is finished
    assert cli(["sweep", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 finished, 2 done before, 0 failed" in printed and "submitted" not in printed
    assert all(json.loads((out / r.id / "job.json").read_text())["attempt"] == 1
               for r in expand(spec))
    # --status: counts and every run, from the folder alone (no spec given)
    assert cli(["sweep", "--status", str(out)]) == 0
    status = capsys.readouterr().out
    assert status.splitlines()[0] == "2 runs: 2 evaluated" and "time per run" in status
    for name in ("eval.json", "job.json"):  # trained, never evaluated
        (out / expand(spec)[1].id / name).unlink()
    assert cli(["sweep", "--status", str(out)]) == 0
    status = capsys.readouterr().out
    assert status.splitlines()[0] == "2 runs: 1 evaluated, 1 trained"
    assert all(r.id in status for r in expand(spec))
    assert cli(["sweep", "--status", str(tmp_path)]) == 2  # not a sweep folder
    assert "not a wtc sweep record" in capsys.readouterr().err


@pytest.mark.parametrize("table, args, message", [
    ('name = "slurm"\npartiton = "gpu"\n', [], "unknown key 'partiton' in [executor]"),
    ('name = "slurm"\ntime = "12h"\n', [], "is not a Slurm time"),
    ('gpus_per_job = 1\n', ["--devices", "cpu"], "gpus_per_job = 1 but the runs are on"),
    ('', ["--executor", "local", "--partition", "gpu"], "unknown key 'partition'"),
    ('', ["--executor", "slurm", "--time", "soon"], "is not a Slurm time"),
    ('name = "slurm"\ngpus_per_job = 2\n', ["--devices", "cpu"], "gpus_per_job = 2"),
])
def test_a_wrong_executor_table_fails_before_anything_is_written(tmp_path, capsys, table, args,
                                                                 message):
    path = tmp_path / "two.toml"
    path.write_text(TWO_RUNS + "[executor]\n" + table)
    out = tmp_path / "sweep"
    assert cli(["sweep", str(path), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_executor_table_round_trips_and_may_change_between_runs(tmp_path):
    from wtc.experiments.spec import spec_from_json
    from wtc.experiments.sweep import executor_table

    spec = from_dict({"preset": "mini", "models": ["wae"],
                      "executor": {"name": "slurm", "partition": "gpu", "time": "12:00:00",
                                   "sbatch": {"qos": "high"}}})
    assert spec_from_json(json.loads(json.dumps(spec.to_json()))) == spec
    prepare(spec, tmp_path)
    moved = from_dict({"preset": "mini", "models": ["wae"],
                       "executor": {"name": "slurm", "time": "1-00:00:00"}})
    prepare(moved, tmp_path)  # where the jobs run is not what they compute: the same sweep
    assert json.loads((tmp_path / "sweep.json").read_text())["spec"]["executor"]["time"] == \
        "1-00:00:00"
    # command-line options go over the table; another executor drops the spec's table
    assert executor_table(spec, {"partition": "big", "sbatch": {"nice": 1}, "time": None}) == {
        "name": "slurm", "partition": "big", "time": "12:00:00",
        "sbatch": {"qos": "high", "nice": 1}}
    assert executor_table(spec, {"name": "ray", "address": "auto"}) == {"name": "ray",
                                                                        "address": "auto"}
    with pytest.raises(SpecError, match="executor must be a table"):
        from_dict({"models": ["wae"], "executor": "slurm"})


# -- reliability: one spec per folder, malformed specs refused before anything runs -------------

def test_two_specs_started_on_one_folder_at_once_one_is_refused(tmp_path, monkeypatch):
    import wtc.data

    first = from_dict({"preset": "mini", "models": ["wae"]})
    second = from_dict({"preset": "mini", "models": ["wae"], "steps": 99})
    real_load = wtc.data.load
    raced = []

    def load(*args, **kwargs):  # the second sweep starts while the first loads its data
        if not raced:
            raced.append(1)
            with pytest.raises(SweepError, match="another spec .*steps"):
                prepare(second, tmp_path)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(wtc.data, "load", load)
    prepare(first, tmp_path)
    assert raced
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["spec"]["steps"] == first.steps
    assert not list(tmp_path.glob(".sweep.json.tmp*"))


@pytest.mark.parametrize("raw, message", [
    ([{"models": ["wae"]}], "must be a table (a JSON object)"),
    ({"eval": {"sizes": 5}}, "eval.sizes must be a table"),
    ({"eval": {"metrics": "mig"}}, "eval.metrics must be a list"),
    ({"data": ["dsprites-procedural"], "data_options": {"dsprites-procedural": {"step": "x"}}},
     "data_options.dsprites-procedural.step must be an integer >= 1"),
    ({"data": ["dsprites-procedural"], "data_options": {"dsprites-procedural": {"step": 0}}},
     "data_options.dsprites-procedural.step must be an integer >= 1"),
    ({"data": ["dsprites-procedural"],
      "data_options": {"dsprites-procedural": {"grid_step": [1, 0]}}}, "grid_step must be"),
    ({"data_root": 5}, "data_root must be a folder's path"),
    ({"seeds": [-1]}, "seeds must be integers >= 0"),
    ({"models": ["wae"], "strengths": {"wae": [float("inf")]}}, "strengths.wae must be"),
    ({"models": ["wae"], "strengths": {"wae": [1.0, 1]}}, "strengths.wae lists a value twice"),
    ({"models": ["wae"], "strengths": {"wae": [True]}}, "strengths.wae must be"),
    ({"models": ["wtc-wae"], "fixed": {"wtc-wae": {"beta": float("inf")}}},
     "fixed.wtc-wae.beta must be a finite number"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"),
    ({"axes": {"lr": [1e-4, float("inf")]}}, "lr must be > 0 and finite"),
    ({"models": 5}, "models must be a non-empty list"),
    ({"data": [5]}, "data must be a list of names"),
    ({"strengths": [1]}, "strengths must be a table"),
])
def test_malformed_specs_are_refused_clearly(raw, message):
    with pytest.raises(SpecError) as err:
        from_dict(raw)
    assert message in str(err.value)


def test_binary_and_list_spec_files_are_refused(tmp_path):
    binary = tmp_path / "spec.toml"
    binary.write_bytes(b"\x80\x81\xfe\xff\x00binary")
    with pytest.raises(SpecError, match="not a text file"):
        load_spec(binary)
    listed = tmp_path / "spec.json"
    listed.write_text('[{"models": ["wae"]}]')
    with pytest.raises(SpecError, match="must be a table"):
        load_spec(listed)
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(folder)


@pytest.mark.parametrize("flags, message", [
    (["--threads", "0"], "--threads must be >= 1"),
    (["--devices", "gpu"], "--devices: unknown device 'gpu'"),
    (["--jobs", "0"], "jobs must be >= 1"),
    (["--stack", "0"], "--stack 0: a job trains at least 1 run"),
])
def test_sweep_refuses_bad_local_options_before_writing_anything(tmp_path, capsys, flags,
                                                                 message):
    from wtc.cli import main as wtc_main

    assert wtc_main(["sweep", "mini", "--out", str(tmp_path / "s"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()


# -- stacks -----------------------------------------------------------------------------------

def test_a_sweep_stacks_the_runs_of_a_cell_into_one_job(tmp_path, capsys):
    path = tmp_path / "two.toml"
    path.write_text("stack = 2\n" + TWO_RUNS)
    out = tmp_path / "sweep"
    assert cli(["sweep", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "up to 2 runs a job" in printed
    assert "submitted 2 run(s) in 1 stacked job(s) to local" in printed
    spec = load_spec(path)
    records = [json.loads((out / r.id / "job.json").read_text()) for r in expand(spec)]
    assert all(r["state"] == "evaluated" and r["stack"] == 2 for r in records)
    assert records[0]["job_id"] == records[1]["job_id"] and records[0]["pid"] == records[1]["pid"]
    assert cli(["sweep", "--status", str(out)]) == 0  # still one line per run
    status = capsys.readouterr().out
    assert status.splitlines()[0] == "2 runs: 2 evaluated"
    assert all(r.id in status for r in expand(spec))
    # stack says how fast, not what: the same folder takes another --stack, or none
    assert cli(["sweep", str(path), "--out", str(out), "--stack", "1"]) == 0
    assert "0 finished, 2 done before" in capsys.readouterr().out


def test_the_default_stack_is_one_on_a_cpu_and_what_fits_on_a_gpu(monkeypatch):
    import torch
    from wtc.experiments.sweep import RUN_GPU_BYTES, STACK_CAP, default_stack

    assert default_stack("cpu") == 1
    assert default_stack("cuda", "slurm") == STACK_CAP  # the nodes' GPUs are not visible here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    free = {0: 80 * RUN_GPU_BYTES, 1: 6 * RUN_GPU_BYTES}

    class Properties:
        def __init__(self, index):
            self.total_memory = free[index]

    monkeypatch.setattr(torch.cuda, "get_device_properties", Properties)
    assert default_stack("cuda", "local", jobs=1, devices=["cuda:0"]) == STACK_CAP
    assert default_stack("cuda", "local", jobs=8, devices=["cuda:0"]) == 10  # 8 jobs share it
    assert default_stack("cuda", "local", jobs=2, devices=["cuda:0", "cuda:1"]) == 6
    free[1] = RUN_GPU_BYTES // 2
    assert default_stack("cuda", "local", jobs=2, devices=["cuda:0", "cuda:1"]) == 1


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_a_bad_stack_in_a_spec_is_refused(value):
    with pytest.raises(SpecError, match="stack must be an integer >= 1"):
        from_dict({"preset": "mini", "stack": value})


# -- the GPU session script's budget ------------------------------------------------------------

def _gpu_check(out, *flags):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    return subprocess.run(["bash", str(script), str(out), *flags], capture_output=True,
                          text=True, timeout=60)


def test_gpu_check_orders_its_stages_by_value_and_fits_them_in_the_budget(tmp_path):
    import re

    done = _gpu_check(tmp_path / "a", "--budget", "540", "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    plan = [re.match(r"gpu_check \[(\d+) s\]: (\w+): (.*)", line).groups() for line in lines[:-1]]
    assert [name for _, name, _ in plan] == ["build", "cuda_tests", "study", "bench", "paired",
                                            "cpu_tests"]
    ran = {name: (int(at), int(re.search(r"cut after (\d+) s", what).group(1)))
           for at, name, what in plan if what.startswith("would run")}
    assert list(ran) == ["build", "cuda_tests", "study", "bench"]
    for at, limit in ran.values():  # every stage is cut before the budget ends, less a reserve
        assert at + limit <= 540 - 10
    assert "paired: skipped (0 s of the budget left, it needs 45 s)" in done.stdout
    assert lines[-1].endswith("done, within the budget of 540 s")
    assert (tmp_path / "a" / "stages.txt").read_text() == done.stdout  # the record of the plan

    short = _gpu_check(tmp_path / "b", "--budget", "100", "--dry-run")
    assert short.returncode == 0
    assert "build: would run, cut after 90 s" in short.stdout
    assert "study: skipped (0 s of the budget left, it needs 200 s)" in short.stdout
    none = _gpu_check(tmp_path / "c", "--budget=50", "--dry-run")
    assert none.returncode == 1
    assert none.stdout.splitlines()[-1].endswith("no build: nothing else can run")
    unlimited = _gpu_check(tmp_path / "d", "--dry-run")
    assert unlimited.stdout.count("would run") == 6 and "skipped" not in unlimited.stdout


def test_gpu_check_runs_only_the_stages_asked_for(tmp_path):
    # a second call on a warm machine: the extension is built, the benchmarks still to run
    done = _gpu_check(tmp_path / "a", "--budget", "300", "--stages", "bench,paired", "--dry-run")
    assert done.returncode == 0, done.stderr
    fates = dict(line.split(": ", 2)[1:] for line in done.stdout.splitlines()[:-1])
    assert fates == {"build": "not in --stages", "cuda_tests": "not in --stages",
                     "study": "not in --stages", "bench": "would run, cut after 240 s",
                     "paired": "would run, cut after 120 s", "cpu_tests": "not in --stages"}
    bad = _gpu_check(tmp_path / "b", "--stages", "bench,fast", "--dry-run")
    assert bad.returncode == 2
    assert "unknown stage fast in --stages (the stages: build, cuda_tests, study" in bad.stderr


def test_gpu_check_refuses_a_budget_that_is_not_seconds(tmp_path):
    bad = _gpu_check(tmp_path, "--budget", "9m", "--dry-run")
    assert bad.returncode == 2 and "--budget takes whole seconds, got 9m" in bad.stderr
    assert _gpu_check(tmp_path, "--frobnicate").returncode == 2
