"""The trainer: every model learns, exact resume, failures lose nothing, the CLI."""

import json

import numpy as np
import pytest
import torch

from wtc.cli import main as wtc_main
from wtc.models import MODELS
from wtc.train import TrainConfig, Trainer, TrainingError, load_run, train

SMALL = {"grid_step": (1, 1, 2, 4, 4, 4)}  # 1,440 procedural dSprites images


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))


def config(**kw):
    base = dict(data="dsprites-procedural", data_options=dict(SMALL), steps=20, batch_size=16,
                log_every=1, checkpoint_every=10, progress=False, device="cpu", seed=3,
                eval_samples=64)
    base.update(kw)
    return TrainConfig(**base)


def read_log(path):
    by_step = {}
    for line in (path / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("steps_per_s")
        by_step[record["step"]] = record  # a resumed run's records replace the killed run's
    return by_step


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_learns_in_50_steps(tmp_path, name):
    result = train(config(model=name, steps=50, lr=5e-4), tmp_path / name)
    log = read_log(tmp_path / name)
    rec = [log[s]["reconstruction"] for s in sorted(log)]
    assert np.mean(rec[-5:]) < 0.7 * np.mean(rec[:5])
    assert all(np.isfinite(v) for r in log.values() for v in r.values())
    assert np.isfinite(result["reconstruction_error"])
    assert (tmp_path / name / "reconstructions.png").stat().st_size > 1000


def test_killed_run_resumes_exactly(tmp_path, monkeypatch):
    train(config(model="wtc-vae"), tmp_path / "whole")
    expected = read_log(tmp_path / "whole")

    real_step = Trainer.step
    calls = {"n": 0}

    def dying_step(self, x):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt  # killed mid-run, after the step-10 checkpoint
        return real_step(self, x)

    monkeypatch.setattr(Trainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(config(model="wtc-vae"), tmp_path / "killed")
    monkeypatch.setattr(Trainer, "step", real_step)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["step"] == 10
    train(config(model="wtc-vae"), tmp_path / "killed", resume=True)
    assert read_log(tmp_path / "killed") == expected


def test_resume_with_more_steps_continues_a_finished_run(tmp_path):
    train(config(model="beta-vae", steps=10), tmp_path / "run")
    train(config(model="beta-vae", steps=20), tmp_path / "run", resume=True)
    log = read_log(tmp_path / "run")
    assert sorted(log) == list(range(1, 21))
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 20


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from wtc.models import BetaVAE

    real = BetaVAE.main_terms
    calls = {"n": 0}

    def poisoned(self, x, mean, logvar, z):
        calls["n"] += 1
        terms = real(self, x, mean, logvar, z)
        if calls["n"] >= 13:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(BetaVAE, "main_terms", poisoned)
    with pytest.raises(TrainingError, match="main loss is nan at step 12.*last good checkpoint"):
        train(config(model="beta-vae"), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_occupied_folder_corrupt_and_mismatched_checkpoints(tmp_path):
    run = tmp_path / "run"
    train(config(model="beta-vae", steps=10), run)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config(model="beta-vae", steps=10), run)
    with pytest.raises(TrainingError, match="different run.*model"):
        train(config(model="wtc-vae", steps=20), run, resume=True)
    good = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(good[:1000])
    with pytest.raises(TrainingError, match="corrupt or unreadable"):
        train(config(model="beta-vae", steps=20), run, resume=True)
    assert (run / "checkpoint.pt").read_bytes() == good[:1000]  # nothing overwritten
    train(config(model="beta-vae", steps=10), run, overwrite=True)
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 10


def test_bad_names_and_strengths():
    with pytest.raises(ValueError, match="valid names: beta-vae"):
        config(model="vae").validate()
    with pytest.raises(ValueError, match="beta-vae has no gamma"):
        config(model="beta-vae", gamma=10).validate()
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        config(model="beta-vae", data="mnist").validate()


def test_cli_train_traverse_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "wtc-vae", "--data", "dsprites-procedural", "--grid-step", "4",
            "--steps", "6", "--batch-size", "8", "--checkpoint-every", "3", "--log-every", "2",
            "--device", "cpu", "--quiet", "--out", str(out)]
    assert wtc_main(args) == 0
    assert (out / "config.json").exists() and (out / "result.json").exists()
    assert wtc_main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert wtc_main(args[:-3] + ["--steps", "8", "--out", str(out), "--resume"]) == 0
    assert wtc_main(["traverse", str(out), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 1000
    assert wtc_main(["train", "--model", "vae", "--data", "dsprites-procedural",
                     "--out", str(tmp_path / "x")]) == 2
    assert "valid names" in capsys.readouterr().err
    assert wtc_main(["train", "--model", "beta-vae", "--gamma", "10", "--data",
                     "dsprites-procedural", "--out", str(tmp_path / "y")]) == 2
    assert wtc_main(["traverse", str(tmp_path / "nothing"), "--out", "x.png"]) == 2


def test_load_run_gives_the_trained_model(tmp_path):
    train(config(model="wae", steps=5), tmp_path / "run")
    model, cfg, dataset = load_run(tmp_path / "run", device="cpu")
    assert cfg.model == "wae" and not model.training
    assert model.represent(dataset.batch([0, 1])).shape == (2, 10)


def test_demo_writes_its_report(tmp_path):
    from wtc.demo import run_demo

    result = run_demo(tmp_path / "demo", steps=8, device="cpu", progress=False,
                      data_options={"grid_step": (1, 1, 2, 8, 4, 4)})
    assert {r["model"] for r in result["rows"]} == {"wtc-vae", "beta-vae"}
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| wtc-vae |" in report and "WDG" in report
    for name in ("wtc-vae", "beta-vae"):
        assert (tmp_path / "demo" / f"{name}-traversals.png").exists()
    # It sets expectations: what WDG measures and which way is better, one reconstruction
    # number (the runs' own result.json), the cache and how to clear it, the loss curves.
    assert "Higher is better" in report and "Lower is better" in report
    assert "blurry blobs whose shape and rotation are not yet learned" in report
    assert "not measured yet" in report and "delete that folder" in report
    assert str(tmp_path / "cache") in report
    for row in result["rows"]:
        run = json.loads((tmp_path / "demo" / row["model"] / "result.json").read_text())
        assert row["reconstruction"] == run["reconstruction_error"]
        assert f"{row['reconstruction']:.1f}" in report
        assert (tmp_path / "demo" / row["model"] / "loss_curves.png").exists()
        assert f"({row['model']}/loss_curves.png)" in report


def test_tensorboard_gets_every_logged_term_when_installed(tmp_path, monkeypatch):
    import sys
    import types

    events = []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter
        def __init__(self, log_dir, purge_step=None):
            events.append(("open", log_dir, purge_step))

        def add_scalar(self, tag, value, step):
            events.append((tag, step, value))

        def close(self):
            events.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        types.SimpleNamespace(SummaryWriter=Writer))
    run = tmp_path / "run"
    train(config(model="wtc-vae", steps=4, log_every=2, checkpoint_every=2), run)
    assert events[0] == ("open", str(run / "tensorboard"), None)
    assert events[-1] == ("close",)
    logged = read_log(run)
    for step in (2, 4):
        for tag in ("loss", "reconstruction", "wtc", "critic_loss"):
            assert (tag, step, pytest.approx(logged[step][tag])) in events
    events.clear()
    train(config(model="wtc-vae", steps=6, log_every=2, checkpoint_every=2), run, resume=True)
    assert events[0] == ("open", str(run / "tensorboard"), 4)  # purges what came after step 4
    events.clear()
    train(config(model="wtc-vae", steps=2, tensorboard=False), tmp_path / "off")
    assert events == []


# -- one config file, two views: config.json and the flags --------------------------------------

def test_config_file_round_trip_and_flags_over_it(tmp_path, capsys):
    from wtc.cli import build_parser
    from wtc.train import config_from_args

    cfg = config(model="wtc-vae", steps=4, checkpoint_every=2, latent_dim=6, lr=3e-4,
                 adam_betas=(0.5, 0.9), adversary_steps=2, eval_samples=32, tensorboard=False)
    train(cfg, tmp_path / "api")
    path = tmp_path / "api" / "config.json"
    back = TrainConfig.from_file(path)
    assert back.to_json() == json.loads(path.read_text())
    assert json.loads(json.dumps(back.to_json())) == json.loads(json.dumps(cfg.to_json()))
    assert back.adam_betas == (0.5, 0.9)

    args = build_parser().parse_args(["train", "--config", str(path), "--lr", "0.001",
                                      "--no-tensorboard", "--out", "x"])
    over = config_from_args(args, back)
    assert over.lr == 0.001 and over.latent_dim == 6 and over.adam_betas == (0.5, 0.9)

    # the same config given to wtc train trains the same run, bit for bit
    assert wtc_main(["train", "--config", str(path), "--out", str(tmp_path / "cli")]) == 0
    assert read_log(tmp_path / "cli") == read_log(tmp_path / "api")
    # and a config.json read back resumes its own run (the resume check passes)
    assert wtc_main(["train", "--config", str(path), "--steps", "6", "--resume",
                     "--out", str(tmp_path / "cli")]) == 0
    assert sorted(read_log(tmp_path / "cli")) == list(range(1, 7))
    # a flag that changes the run is refused on resume, naming the field
    assert wtc_main(["train", "--config", str(path), "--latent-dim", "5", "--steps", "8",
                     "--resume", "--out", str(tmp_path / "cli")]) == 2
    assert "latent_dim" in capsys.readouterr().err


def test_every_config_field_is_a_flag_with_its_default():
    import dataclasses

    from wtc.cli import build_parser
    from wtc.train import config_from_args, stacked_fields

    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    helps = {s: a.help for a in train_parser._actions for s in a.option_strings}
    samples = {"str": "x", "int": 7, "float": 0.25, "bool": False}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in helps, f.name
        assert "(default: " in helps[flag], f.name
        kind, _ = TrainConfig.field_kind(f.name)
        if kind == "bool":
            argv, want = ["--no-" + flag[2:]], False
        elif kind == "tuple":
            argv, want = [flag, "0.5", "0.75"], (0.5, 0.75)
        elif kind == "dict":
            argv, want = [flag, '{"step": 2}'], {"step": 2}
        else:
            argv, want = [flag, str(samples[kind])], samples[kind]
        args = parser.parse_args(["train", *argv, "--out", "x"])
        if f.name in stacked_fields():  # seed and strengths take lists (one run per value)
            assert getattr(args, f.name) == [want], f.name
            setattr(args, f.name, want)
        assert getattr(config_from_args(args), f.name) == want, f.name


def test_bad_config_files_name_the_field(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown field 'lrr'"):
        TrainConfig.from_json({"lrr": 1e-3})
    with pytest.raises(ValueError, match="lr must be a number"):
        TrainConfig.from_json({"lr": "fast"})
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        TrainConfig(latent_dim=0).validate()
    with pytest.raises(ValueError, match="estimator must be one of mss, mws"):
        TrainConfig(estimator="exact").validate()
    path = tmp_path / "run.json"
    path.write_text('{"model": "beta-vae", "steps": "many"}')
    assert wtc_main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "steps must be an integer" in capsys.readouterr().err
    path.write_text("{")
    assert wtc_main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
