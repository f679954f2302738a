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
def test_a_crafted_checkpoint_runs_nothing(tmp_path, how, capsys):
    run = tmp_path / "run"
    train(config(steps=5), run)
    marker = tmp_path / "pwned"
    if how == "torch-zip":  # the real format, with the payload inside the wtc dict
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["model"] = Evil(marker)
        torch.save(state, run / "checkpoint.pt")
    else:
        with open(run / "checkpoint.pt", "wb") as f:
            pickle.dump({"format": "wtc-checkpoint-v1", "x": Evil(marker)}, f)
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
