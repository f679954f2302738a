"""Reliability of run folders: no code from loaded files, damaged checkpoints are caught,
nothing is lost or written twice on a resume, failing disks give one clear line."""

import json
import os
import pickle

import pytest
import torch

from wtc.cli import main as wtc_main
from wtc.train import TrainConfig, Trainer, TrainingError, load_checkpoint, load_run, train

SMALL = {"grid_step": (1, 1, 2, 4, 4, 4)}  # 1,440 procedural dSprites images


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))


def config(**kw):
    base = dict(model="beta-vae", data="dsprites-procedural", data_options=dict(SMALL),
                steps=10, batch_size=16, log_every=1, checkpoint_every=5, progress=False,
                device="cpu", seed=3, eval_samples=64, tensorboard=False)
    base.update(kw)
    return TrainConfig(**base)


class Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- 1. no code runs from a checkpoint ------------------------------------------------------------
@pytest.mark.parametrize("how", ["torch-zip", "plain-pickle"])
# (torch warns that the plain pickle's protocol is not its own: that file is crafted)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_crafted_checkpoint_runs_nothing(tmp_path, how, capsys):
    run = tmp_path / "run"
    train(config(steps=5), run)
    marker = tmp_path / "pwned"
    if how == "torch-zip":  # the real format, with the payload inside the wtc dict
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["model"] = Evil(marker)
        torch.save(state, run / "checkpoint.pt")
    else:  # torch's legacy format is a plain pickle (protocol 2)
        with open(run / "checkpoint.pt", "wb") as f:
            pickle.dump({"format": "wtc-checkpoint-v1", "x": Evil(marker)}, f, protocol=2)
        # a newer protocol stops the weights-only unpickler earlier, at an opcode: as unreadable
        newer = tmp_path / "newer.pt"
        newer.write_bytes(pickle.dumps({"x": Evil(marker)}, protocol=4))
        with pytest.raises(TrainingError, match="corrupt or unreadable"):
            load_checkpoint(newer)
    config_before = (run / "config.json").read_bytes()
    with pytest.raises(TrainingError, match="refused unloaded.*crafted to run code"):
        load_checkpoint(run / "checkpoint.pt")
    with pytest.raises(TrainingError, match="refused unloaded"):
        load_run(run)
    with pytest.raises(TrainingError, match="refused unloaded"):
        train(config(steps=10), run, resume=True)
    assert wtc_main(["eval", str(run), "--metrics", "mig"]) == 2
    assert "refused unloaded" in capsys.readouterr().err
    assert not marker.exists()
    assert (run / "config.json").read_bytes() == config_before


# -- 2. a checksum catches damaged checkpoints ----------------------------------------------------
def test_flipped_bytes_are_caught_and_old_checkpoints_still_load(tmp_path):
    run = tmp_path / "run"
    train(config(steps=5), run)
    path = run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    assert len(state["sha256"]) == 64
    assert load_checkpoint(path)["step"] == 5

    # a weight changed on disk, the zip still readable: only the checksum can tell
    damaged = dict(state)
    damaged["model"] = dict(state["model"])
    key = next(iter(damaged["model"]))
    damaged["model"][key] = damaged["model"][key].clone()
    damaged["model"][key].view(-1)[0] += 1.0
    torch.save(damaged, path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(TrainingError, match=f"{path}.*damaged.*checksum"):
        train(config(steps=10), run, resume=True)
    with pytest.raises(TrainingError, match="damaged"):
        load_run(run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    # a flipped byte anywhere in the file: a clear error either way (zip CRC or checksum)
    torch.save(state, path)
    data = bytearray(path.read_bytes())
    for offset in range(200, len(data), max(1, len(data) // 25)):
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            load_checkpoint(path)
        except TrainingError as err:
            assert str(path) in str(err)
        # else: the byte was in zip padding or metadata nothing reads

    # a checkpoint written before checksums were stored is accepted as it is
    del state["sha256"]
    torch.save(state, path)
    assert load_checkpoint(path)["step"] == 5
    assert load_run(run)[1].steps == 5


# -- 3. nothing lost, nothing twice -----------------------------------------------------------------
def _die_at(monkeypatch, n):
    real = Trainer.step
    calls = {"n": 0}

    def dying(self, x):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(Trainer, "step", dying)
    return real


def _log_steps(run):
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def _rewrite(path, state):
    from wtc.train import payload_digest

    state = {k: v for k, v in state.items() if k != "sha256"}
    state["sha256"] = payload_digest(state)
    torch.save(state, path)


def test_resume_before_the_first_checkpoint_starts_from_step_0(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = _die_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train(config(), run)
    monkeypatch.setattr(Trainer, "step", real)
    assert not (run / "checkpoint.pt").exists() and _log_steps(run) == [1, 2, 3]
    with pytest.raises(TrainingError, match="different run"):  # only the same run
        train(config(lr=1e-3), run, resume=True)
    assert train(config(), run, resume=True)["steps"] == 10
    assert _log_steps(run) == list(range(1, 11))


def test_resume_drops_records_after_the_checkpoint_and_stale_temporaries(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = _die_at(monkeypatch, 8)  # after the step-5 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(config(), run)
    monkeypatch.setattr(Trainer, "step", real)
    assert _log_steps(run) == [1, 2, 3, 4, 5, 6, 7]
    dead = run / ".checkpoint.pt.tmp999999999"  # a writer killed mid-write: no such process
    dead.write_bytes(b"half a checkpoint")
    live = run / ".eval.json.tmp1"  # pid 1 is alive: its writer may still be writing
    live.write_text("{")
    train(config(), run, resume=True)
    assert _log_steps(run) == list(range(1, 11))  # each step once
    assert not dead.exists() and live.exists()


def test_resume_with_fewer_steps_than_the_checkpoint_is_refused(tmp_path):
    run = tmp_path / "run"
    train(config(), run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(TrainingError, match="holds step 10, beyond --steps 5.*--steps 10"):
        train(config(steps=5), run, resume=True)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert json.loads((run / "result.json").read_text())["steps"] == 10


@pytest.mark.parametrize("damage", ["other-model", "missing-key", "wrong-shape", "bad-rng",
                                    "bad-torch-rng", "optimizer-shape", "no-optimizer"])
def test_a_structurally_wrong_checkpoint_is_refused_before_anything_is_written(tmp_path, damage):
    run = tmp_path / "run"
    train(config(steps=5), run)
    path = run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    if damage == "other-model":
        train(config(model="factor-vae", steps=1, checkpoint_every=1), tmp_path / "other")
        state["model"] = torch.load(tmp_path / "other" / "checkpoint.pt",
                                    weights_only=True)["model"]
    elif damage == "missing-key":
        del state["torch_rng"]
    elif damage == "wrong-shape":
        key = next(iter(state["model"]))
        state["model"][key] = torch.zeros(3, 3)
    elif damage == "bad-rng":
        state["data_rng"] = {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}
    elif damage == "bad-torch-rng":
        state["torch_rng"] = torch.zeros(3, dtype=torch.uint8)
    elif damage == "optimizer-shape":
        first = next(iter(state["optimizers"]["main"]["state"].values()))
        first["exp_avg"] = torch.zeros(7)
    else:
        state["optimizers"] = {}
    _rewrite(path, state)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(TrainingError, match=f"checkpoint {path}.*nothing was overwritten"):
        train(config(steps=10), run, resume=True)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_resume_with_another_thread_count_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    train(config(steps=5), run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["num_threads"] == torch.get_num_threads()
    capsys.readouterr()
    train(config(steps=5), run, resume=True)
    assert "threads" not in capsys.readouterr().err
    state["num_threads"] = torch.get_num_threads() + 7
    _rewrite(run / "checkpoint.pt", state)
    train(config(steps=5), run, resume=True)
    err = capsys.readouterr().err
    assert (f"with {torch.get_num_threads() + 7} CPU threads and resumes with "
            f"{torch.get_num_threads()}" in err and "not be bit-identical" in err)


# -- 4. read-only folders and full disks ----------------------------------------------------------
# Tests run as root, for whom chmod does not stop a write: the failing system call is faked.
def _failing_replace(monkeypatch, code, folder, only=None):
    """os.replace into ``folder`` (of file ``only``) fails with errno ``code``."""
    import errno

    real = os.replace

    def replace(src, dst, *args, **kwargs):
        inside = os.path.dirname(os.path.abspath(dst)) == os.path.abspath(folder)
        if inside and (only is None or os.path.basename(dst) == only):
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(src))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _temporaries(folder):
    return [p.name for p in folder.rglob(".*tmp*")]


@pytest.mark.parametrize("code", ["EROFS", "ENOSPC"])
def test_train_on_a_read_only_folder_or_full_disk_is_one_line(tmp_path, monkeypatch, capsys,
                                                              code):
    run = tmp_path / "run"
    only = None if code == "EROFS" else "checkpoint.pt"  # a disk that fills at a checkpoint
    _failing_replace(monkeypatch, code, run, only)
    argv = ["train", "--out", str(run), "--model", "beta-vae", "--steps", "6",
            "--checkpoint-every", "3", "--batch-size", "8", "--device", "cpu", "--quiet",
            "--no-tensorboard", "--data-options", json.dumps(SMALL)]
    assert wtc_main(argv) == 2
    err = capsys.readouterr().err
    name = "config.json" if code == "EROFS" else "checkpoint.pt"
    assert err.strip() == (f"wtc train: cannot write {run / name}: [Errno "
                           f"{getattr(__import__('errno'), code)}] "
                           f"{os.strerror(getattr(__import__('errno'), code))}")
    assert not _temporaries(tmp_path)


def test_eval_checks_it_can_write_before_computing(tmp_path, monkeypatch, capsys):
    import wtc.metrics

    run = tmp_path / "run"
    train(config(steps=3), run)
    computed = []

    def evaluate(*args, **kwargs):
        computed.append(1)
        return {"protocol": "paper", "repeats": 1,
                "metrics": {"mig": {"mean": 0.5, "std": 0.0, "values": [0.5]}}}

    monkeypatch.setattr(wtc.metrics, "evaluate", evaluate)
    with monkeypatch.context() as mp:
        _failing_replace(mp, "EROFS", run)
        assert wtc_main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("wtc eval: cannot write ") and "Read-only file system" in err
    assert f"{run / 'eval.json'} could not be written" in err and not computed
    assert not _temporaries(run)

    # the disk fills while computing: the results are printed, the failure named
    with monkeypatch.context() as mp:
        _failing_replace(mp, "ENOSPC", run, only="eval.json")
        assert wtc_main(["eval", str(run)]) == 2
    out, err = capsys.readouterr()
    assert "mig" in out and "0.5000" in out
    assert err.strip() == (f"wtc eval: cannot write {run / 'eval.json'}: [Errno 28] No space "
                           "left on device; the results are printed above only")
    assert not (run / "eval.json").exists() and not _temporaries(run)
    assert wtc_main(["eval", str(run)]) == 0 and (run / "eval.json").exists()
