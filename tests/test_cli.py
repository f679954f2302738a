"""The command line as a newcomer meets it: every refusal is one line naming the problem and the
fix (exit 2, no traceback), Ctrl-C says what was kept and how to go on, help shows defaults and
examples, and failed commands leave no empty folders."""

import json
import warnings

import pytest
import torch

import wtc.train
from wtc.cli import main as wtc_main
from wtc.train import TrainConfig, train

SMALL = {"grid_step": (1, 1, 2, 4, 4, 4)}  # 1,440 procedural dSprites images


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))


def config(**kw):
    base = dict(model="beta-vae", data="dsprites-procedural", data_options=dict(SMALL), steps=4,
                batch_size=8, log_every=1, checkpoint_every=2, progress=False, device="cpu",
                seed=3, eval_samples=32, tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WTC_CACHE", str(out.parent / "cache"))
        train(config(), out)
    return out


def refused(capsys, argv, *wanted):
    """Run the command; it must exit 2 with one line on stderr holding every wanted text."""
    assert wtc_main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "is deprecated" not in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in wanted:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# -- refusals, command by command ----------------------------------------------------------------

def test_usage_errors_are_one_line(capsys):
    refused(capsys, ["data", "nosuchdata"], "wtc data:", "invalid choice: 'nosuchdata'",
            "dsprites-procedural", "wtc data --help")
    refused(capsys, ["data", "dsprites-procedural", "--count", "many"], "invalid int value")
    refused(capsys, ["train", "--out"], "expected one argument")
    refused(capsys, ["train", "--model", "wae"], "required: --out")
    refused(capsys, ["train", "--data-options", "[1]", "--out", "x"], "a JSON object")
    refused(capsys, ["nosuchcommand"], "invalid choice")
    refused(capsys, [], "required: COMMAND")


def test_data_refusals(tmp_path, capsys):
    refused(capsys, ["data", "dsprites-procedural", "--count", "0", "--show", tmp_path / "x.png"],
            "--count 0", "between 1 and 256")
    refused(capsys, ["data", "dsprites-procedural", "--seed", "-1"], "--seed -1", ">= 0")
    refused(capsys, ["data", "dsprites-procedural", "--show", tmp_path / "x.nosuch"],
            "--show", ".png")
    refused(capsys, ["data", "dsprites-procedural", "--show", tmp_path], "is a folder")
    refused(capsys, ["data", "dsprites-procedural", "--variant", "toy"],
            "dsprites-procedural does not take the option 'variant' (--variant)",
            "takes: protocol, grid_step")
    refused(capsys, ["data", "dsprites-procedural", "--protocol", "x"], "invalid choice: 'x'")
    refused(capsys, ["data", "dsprites-procedural", "--grid-step", "0"], "grid_step must be")
    assert not list(tmp_path.iterdir())  # nothing written by a refusal


def test_data_show_makes_its_folders_and_old_flags_still_work(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "x.png"
    assert wtc_main(["data", "dsprites-procedural", "--grid-step", "4", "--count", "2",
                     "--show", str(out)]) == 0
    assert out.stat().st_size > 1000
    capsys.readouterr()
    # --step, the old name of --grid-step, still works and says what replaced it
    assert wtc_main(["data", "dsprites-procedural", "--step", "4"]) == 0
    captured = capsys.readouterr()
    assert "--step is deprecated, use --grid-step" in captured.err
    assert "posX               8" in captured.out
    # --root, the old name of --data-root, too
    assert wtc_main(["data", "dsprites", "--root", str(tmp_path)]) == 2
    assert "--root is deprecated, use --data-root" in capsys.readouterr().err


def test_missing_file_message_names_the_flag_and_absolute_paths(tmp_path, monkeypatch, capsys):
    from wtc.data import DataSetError, load

    for var in ("WTC_DATA", "DISENTANGLEMENT_LIB_DATA", "DISENT_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataSetError) as err:
        load("dsprites", root="here")
    text = str(err.value)
    assert "--data-root" in text and "root=" in text and "dsprites-procedural" in text
    listed = [line.strip() for line in text.splitlines() if line.startswith("  ")]
    assert listed and all(line.startswith(str(tmp_path)) for line in listed)
    assert wtc_main(["data", "dsprites", "--data-root", "here"]) == 2
    assert str(tmp_path / "here") in capsys.readouterr().err


def test_the_old_option_name_step_still_loads(monkeypatch):
    from wtc.data import DataSetError, load

    with pytest.warns(FutureWarning, match="'step'.*deprecated.*'grid_step'"):
        old = load("dsprites-procedural", step=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert old.factor_sizes == load("dsprites-procedural", grid_step=4).factor_sizes
    with pytest.raises(DataSetError, match="both 'step' and 'grid_step'"):
        load("dsprites-procedural", step=4, grid_step=2)


def test_device_refusals(tmp_path, monkeypatch, capsys, run):
    out = tmp_path / "t"
    refused(capsys, ["train", "--device", "gpu", "--out", out], "unknown device 'gpu'",
            "use cpu, cuda or cuda:N")
    no_cuda(monkeypatch)
    refused(capsys, ["train", "--device", "cuda", "--steps", "2", "--grid-step", "8", "--out",
                     out], "no CUDA device is visible", "--device cpu")
    refused(capsys, ["traverse", run, "--out", tmp_path / "t.png", "--device", "cuda:1"],
            "no CUDA device is visible")
    refused(capsys, ["demo", "--device", "cuda", "--out", out], "no CUDA device is visible")
    refused(capsys, ["demo", "--device", "tpu9", "--out", out], "unknown device 'tpu9'")
    assert not out.exists()
    # cuda:N beyond the visible GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(wtc.train.DeviceError, match=r"only 1 CUDA device\(s\)"):
        wtc.train.pick_device("cuda:3")


def test_train_refusals(tmp_path, capsys, run):
    out = tmp_path / "r"
    refused(capsys, ["train", "--out", out, "--resume", "--overwrite"], "pass one of them")
    refused(capsys, ["train", "--checkpoint-minutes", "0", "--out", out],
            "checkpoint_minutes must be > 0")
    refused(capsys, ["train", "--steps", "0", "--out", out], "steps must be >= 1")
    refused(capsys, ["train", "--lr", "-1", "--out", out], "lr must be > 0")
    refused(capsys, ["train", "--seed", "-1", "--out", out], "seed must be >= 0")
    refused(capsys, ["train", "--model", "beta-vae", "--beta", "-4", "--out", out],
            "beta must be >= 0")
    refused(capsys, ["train", "--model", "wae", "--gamma", "3", "--out", out],
            "wae has no gamma")
    refused(capsys, ["train", "--data", "dsprites-procedural", "--variant", "toy", "--out", out],
            "does not take the option 'variant'")
    refused(capsys, ["train", "--config", tmp_path / "none.json", "--out", out],
            "cannot read the config")
    (tmp_path / "file").write_text("x")
    refused(capsys, ["train", "--out", tmp_path / "file", "--steps", "1"], "is a file")
    refused(capsys, ["train", "--out", run], "already holds a run", "--resume", "--overwrite")
    refused(capsys, ["train", "--config", run / "config.json", "--latent-dim", "3", "--out", run,
                     "--resume"], "different run", "--overwrite")
    assert not out.exists()
    # a config without a checkpoint (killed before its first): --resume starts it from step 0
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text(json.dumps(config(seed=9).to_json()))
    (half / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert wtc_main(["train", "--config", str(half / "config.json"), "--out", str(half),
                     "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (half / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_traverse_refusals_and_folders(tmp_path, capsys, run):
    refused(capsys, ["traverse", run, "--out", tmp_path / "t.png", "--steps", "0"],
            "--steps 0", "2 to 25")
    refused(capsys, ["traverse", run, "--out", tmp_path / "t.png", "--steps", "1"], "2 to 25")
    refused(capsys, ["traverse", run, "--out", tmp_path / "t.png", "--seed", "-2"], ">= 0")
    refused(capsys, ["traverse", run, "--out", tmp_path / "t.txt"], ".png")
    refused(capsys, ["traverse", tmp_path / "nothing", "--out", tmp_path / "t.png"],
            "does not exist")
    (tmp_path / "empty").mkdir()
    refused(capsys, ["traverse", tmp_path / "empty", "--out", tmp_path / "t.png"],
            "has no checkpoint.pt")
    out = tmp_path / "nodir" / "sub" / "t.png"
    assert wtc_main(["traverse", str(run), "--out", str(out), "--steps", "3"]) == 0
    assert out.stat().st_size > 1000


def test_demo_refusals_leave_no_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    refused(capsys, ["demo", "--steps", "-1", "--out", out], "--steps -1", "at least 1")
    refused(capsys, ["demo", "--steps", "0", "--out", out], "--steps 0")
    assert not out.exists()
    (tmp_path / "file").write_text("x")
    refused(capsys, ["demo", "--out", tmp_path / "file"], "is a file")

    def failing(*args, **kwargs):  # fails after making its folders, before writing a file
        (out / "wtc-vae").mkdir(parents=True)
        raise ValueError("no luck")

    monkeypatch.setattr("wtc.demo.run_demo", failing)
    refused(capsys, ["demo", "--out", out], "no luck")
    assert not out.exists()


def test_report_refusals_leave_no_folder(tmp_path, capsys):
    out = tmp_path / "report"
    refused(capsys, ["report", tmp_path / "nosweep", "--out", out], "does not exist")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    refused(capsys, ["report", sweep, "--out", out, "--device", "gpu"], "unknown device")
    refused(capsys, ["report", sweep, "--out", out, "--select-by", "nothing"], "invalid choice")
    assert wtc_main(["report", str(sweep), "--out", str(out)]) == 2  # not a sweep folder
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "file").write_text("x")
    refused(capsys, ["report", sweep, "--out", tmp_path / "file"], "is a file")


# -- Ctrl-C ----------------------------------------------------------------------------------------

def interrupt_at(monkeypatch, step_number):
    real = wtc.train.Trainer.step
    calls = []

    def step(self, x):
        calls.append(1)
        if len(calls) == step_number:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(wtc.train.Trainer, "step", step)


def test_ctrl_c_in_train_says_what_was_saved_and_how_to_resume(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "beta-vae", "--grid-step", "4", "--steps", "6",
            "--batch-size", "8", "--checkpoint-every", "2", "--device", "cpu", "--quiet",
            "--no-tensorboard", "--out", str(out)]
    interrupt_at(monkeypatch, 4)  # after the checkpoint of step 2
    assert wtc_main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    resume = f"wtc train --config {out / 'config.json'} --out {out} --resume"
    assert "holds step 2 of 6" in err[-1] and err[-1].endswith(resume)
    monkeypatch.undo()
    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))
    assert wtc_main(resume.split()[1:]) == 0
    assert json.loads((out / "result.json").read_text())["steps"] == 6
    # before the first checkpoint nothing can be resumed: it says how to start again
    interrupt_at(monkeypatch, 1)
    assert wtc_main(argv[:-1] + [str(tmp_path / "early")]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "before the first checkpoint" in err and err.endswith("--overwrite")


def test_ctrl_c_in_eval_says_nothing_was_written(monkeypatch, capsys, run):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wtc.train, "load_run", stop)
    assert wtc_main(["eval", str(run)]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("wtc eval: interrupted") and "eval.json" in err and "\n" not in err


# -- defaults, help, version ---------------------------------------------------------------------

def test_checkpoints_come_by_time_as_well_as_by_steps(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(wtc.train, "_clock", lambda: now[0])
    monkeypatch.setattr(wtc.train, "CURVES_EVERY_S", 0.0)  # curves at every checkpoint too
    saved = []
    real_save, real_step = wtc.train.save_torch_atomic, wtc.train.Trainer.step

    def save(state, path):
        saved.append(state["step"])
        real_save(state, path)

    def step(self, x):
        now[0] += 30.0  # each step takes half a minute
        return real_step(self, x)

    monkeypatch.setattr(wtc.train, "save_torch_atomic", save)
    monkeypatch.setattr(wtc.train.Trainer, "step", step)
    out = tmp_path / "run"
    train(config(steps=5, checkpoint_every=1000, checkpoint_minutes=1.0), out)
    assert saved == [2, 4, 5]
    assert (out / "loss_curves.png").stat().st_size > 1000
    # checkpoint_minutes may change on resume, like checkpoint_every
    saved.clear()
    train(config(steps=6, checkpoint_every=1000, checkpoint_minutes=5.0), out, resume=True)
    assert saved == [6]
    assert TrainConfig().checkpoint_minutes == 10.0


def test_help_shows_defaults_strengths_costs_and_examples(capsys):
    with pytest.raises(SystemExit) as stop:
        wtc_main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"wtc {wtc.__version__}"
    with pytest.raises(SystemExit):
        wtc_main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and ":mod:" not in text and "wtc demo" in text
    for command in ("data", "train", "traverse", "report", "demo"):
        with pytest.raises(SystemExit):
            wtc_main([command, "--help"])
        text = capsys.readouterr().out
        assert "example" in text and f"wtc {command} " in text.split("example")[-1], command
    with pytest.raises(SystemExit):
        wtc_main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "about 15 hours a run" in text and "5.5 steps/s" in text
    assert "beta-vae: weight of the KL term" in text
    assert "wtc-vae: weight of the Wasserstein" in text
    assert "(default: 300000)" in text and "(default: 10.0)" in text  # steps, checkpoint minutes
    with pytest.raises(SystemExit):
        wtc_main(["data", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--data-root" in text and "--root" not in text.replace("--data-root", "")
    assert "--grid-step" in text and "(default: 16)" in text


def test_every_model_says_what_its_strengths_weigh():
    from wtc.models import REGISTRY

    for name, cls in REGISTRY.items():
        if cls.__module__.startswith("wtc.models."):  # the six of the paper, not a test's own
            assert set(cls.strength_help) == set(cls.defaults), name


# -- run files -----------------------------------------------------------------------------------

def test_loss_curves_and_the_tensorboard_note(tmp_path, monkeypatch, capsys, run):
    import sys

    from wtc.visualize import save_loss_curves

    assert (run / "loss_curves.png").stat().st_size > 1000
    assert not save_loss_curves(tmp_path / "none.jsonl", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    out = tmp_path / "tb"
    train(config(steps=2, tensorboard=True), out)
    err = capsys.readouterr().err
    assert f"tensorboard is not installed: logs go to {out / 'log.jsonl'} only" in err
    assert err.count("tensorboard is not installed") == 1


# -- several runs: lists of seeds and strengths ----------------------------------------------------

def test_lists_of_seeds_and_strengths_train_their_product_in_one_call(tmp_path, monkeypatch,
                                                                     capsys):
    calls = []
    real = wtc.train.train_runs

    def spy(configs, outs, **kwargs):
        calls.append((configs, outs, kwargs))
        return real(configs, outs, **kwargs)

    monkeypatch.setattr(wtc.train, "train_runs", spy)
    out = tmp_path / "many"
    flags = ["--model", "beta-vae", "--data-options", json.dumps(SMALL), "--steps", "2",
             "--batch-size", "8", "--checkpoint-every", "2", "--eval-samples", "16", "--device",
             "cpu", "--quiet", "--no-tensorboard"]
    assert wtc_main(["train", *flags, "--beta", "1", "4", "--seeds", "3", "5", "--out",
                     str(out)]) == 0
    assert len(calls) == 1 and calls[0][2] == {"resume": False, "overwrite": False,
                                              "cuda_graph": False}
    folders = [out / f"beta={b}" / f"seed={s}" for b in (1, 4) for s in (3, 5)]
    assert calls[0][1] == folders  # the sweep's run-id order: strength, then seed
    for folder in folders:
        saved = json.loads((folder / "config.json").read_text())
        assert f"beta={saved['beta']:g}" == folder.parent.name
        assert f"seed={saved['seed']}" == folder.name
        assert json.loads((folder / "result.json").read_text())["steps"] == 2
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == [str(f) for f in folders]
    # a single value names no folder level; --resume applies to every run
    assert wtc_main(["train", *flags, "--beta", "1", "4", "--seed", "3", "--steps", "3",
                     "--out", str(tmp_path / "two"), "--resume"]) == 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["beta=1", "beta=4"]
    # the same command again is refused before anything trains, naming the folder
    line = refused(capsys, ["train", *flags, "--beta", "1", "4", "--seeds", "3", "5", "--out",
                            out], "already holds a run", "--resume", "--overwrite")
    assert "beta=1/seed=3" in line
    assert len(calls) == 2


def test_several_runs_report_each_failure_and_exit_non_zero(tmp_path, monkeypatch, capsys):
    def train_runs(configs, outs, **kwargs):
        return [{"status": "trained", "result": {"steps": 2, "reconstruction_error": 1.5}},
                {"status": "failed", "reason": "the main loss is nan at step 7", "step": 7}]

    monkeypatch.setattr(wtc.train, "train_runs", train_runs)
    out = tmp_path / "r"
    assert wtc_main(["train", "--model", "wtc-vae", "--gamma", "10", "80", "--out", str(out),
                     "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{out / 'gamma=10'}: reconstruction error 1.50 after 2 steps"
    assert captured.err.splitlines() == [
        f"wtc train: {out / 'gamma=80'} failed at step 7: the main loss is nan at step 7",
        "wtc train: 1 of 2 runs failed; the others are trained"]


def test_several_runs_refusals(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    refused(capsys, ["train", "--seeds", "1", "2", "1", "--out", out], "--seeds lists a value "
            "twice (1 2 1)")
    refused(capsys, ["train", "--model", "wae", "--beta", "1", "2", "--gamma", "3", "--out", out],
            "wae has no gamma")
    refused(capsys, ["train", "--beta", "1", "-2", "--model", "beta-vae", "--out", out],
            "beta must be >= 0")
    no_cuda(monkeypatch)
    for argv in (["--seeds", "1", "2"], ["--seed", "1"]):  # one run too goes through train_runs
        refused(capsys, ["train", *argv, "--cuda-graph", "--out", out], "--cuda-graph",
                "train on cpu", "drop --cuda-graph")
    refused(capsys, ["train", "--model", "wtc-vae", "--seeds", "1", "2", "--adversary-steps", "3",
                     "--cuda-graph", "--out", out], "--cuda-graph takes --adversary-steps 1",
            "got 3")
    (tmp_path / "seed=2").write_text("x")
    refused(capsys, ["train", "--seeds", "1", "2", "--out", tmp_path], "seed=2 is a file")
    assert not out.exists()


def test_run_folders_follow_the_sweeps_run_ids():
    from wtc.cli import run_folders

    runs = run_folders("o", {"seed": [1, 11], "beta": [1.0], "gamma": [10.0, 0.5]})
    assert [str(f) for f, _ in runs] == ["o/gamma=10/seed=1", "o/gamma=10/seed=11",
                                         "o/gamma=0.5/seed=1", "o/gamma=0.5/seed=11"]
    assert runs[0][1] == {"beta": 1.0, "gamma": 10.0, "seed": 1}
    assert [str(f) for f, _ in run_folders("o", {"seed": [3]})] == ["o"]
