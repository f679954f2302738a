"""A model, a metric and a data set registered from outside the package, each in one place (a
plug-in file named by WTC_PLUGINS), run through wtc train, wtc eval, wtc sweep and wtc report as
separate processes - as a user's own code would be."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN = textwrap.dedent('''
    import numpy as np

    from wtc.data import GroundTruthDataset, Option, register_dataset
    from wtc.metrics import register_metric
    from wtc.models import register
    from wtc.models.base import DisentanglingModel, kl_divergence, reconstruction_loss


    @register_dataset("squares", options=[Option("side", int, 16, help="the square's side")])
    class Squares(GroundTruthDataset):
        """A white square at every (x, y) of a grid."""

        name = "squares"
        factor_names = ("x", "y")
        channels = 1

        def __init__(self, side=16):
            self.side = side
            self.factor_sizes = (64 // side, 64 // side)

        def images_uint8(self, indices):
            images = np.zeros((len(indices), 64, 64), np.uint8)
            for i, (x, y) in enumerate(self.index_to_factors(np.asarray(indices))):
                s = self.side
                images[i, y * s:(y + 1) * s, x * s:(x + 1) * s] = 255
            return images


    @register
    class HalfKLVAE(DisentanglingModel):
        """rec + beta * KL / 2: a model only this plug-in knows."""

        name = "half-kl-vae"
        defaults = {"beta": 2.0}
        swept = "beta"
        paper_grid = (2.0,)

        def main_terms(self, x, mean, logvar, z):
            rec = reconstruction_loss(self.decoder(z), x)
            kl = kl_divergence(mean, logvar)
            return {"loss": rec + 0.5 * self.strengths["beta"] * kl, "reconstruction": rec,
                    "kl": kl}


    @register_metric("code_spread", display="Code spread", needs=("train",),
                     lower_is_better=True, digits=2)
    def code_spread(r):
        return float(r.train_codes.std(0).mean())
''')

SIZES = ["--size", "num_train=64", "--size", "num_test=32", "--size", "votes_train=8",
         "--size", "votes_eval=4", "--size", "variance_samples=64"]


@pytest.fixture
def plugin_env(tmp_path):
    path = tmp_path / "squares_plugin.py"
    path.write_text(PLUGIN)
    return dict(os.environ, WTC_PLUGINS=str(path), OMP_NUM_THREADS="1")


def wtc(env, *args, timeout=600):
    run = subprocess.run([sys.executable, "-m", "wtc", *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"wtc {' '.join(map(str, args))}:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def test_a_model_metric_and_data_set_from_outside_run_through_every_command(tmp_path,
                                                                            plugin_env):
    env = plugin_env
    assert "half-kl-vae" in wtc(env, "train", "--help")
    assert "squares" in wtc(env, "data", "squares", "--side", "32")

    run = tmp_path / "run"
    wtc(env, "train", "--model", "half-kl-vae", "--data", "squares", "--side", "16",
        "--steps", 6, "--batch-size", 8, "--checkpoint-every", 3, "--log-every", 3,
        "--eval-samples", 16, "--no-tensorboard", "--quiet", "--out", run)
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "half-kl-vae" and config["data_options"] == {"side": 16}
    wtc(env, "eval", run, "--metrics", "code_spread", "mig", "--repeats", 1, *SIZES)
    evaluation = json.loads((run / "eval.json").read_text())
    assert set(evaluation["metrics"]) == {"code_spread", "mig"}
    assert evaluation["metrics"]["code_spread"]["mean"] > 0

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "name": "plugins", "data": ["squares"], "models": ["half-kl-vae"], "seeds": [1, 2],
        "steps": 6, "batch_size": 8, "checkpoint_every": 3,
        "train": {"log_every": 3, "eval_samples": 16, "tensorboard": False},
        "data_options": {"squares": {"side": 16}},
        "eval": {"repeats": 1, "metrics": ["code_spread", "mig"],
                 "sizes": {"num_train": 64, "num_test": 32, "votes_train": 8, "votes_eval": 4,
                           "variance_samples": 64}}}))
    sweep = tmp_path / "sweep"
    wtc(env, "sweep", spec, "--out", sweep)
    for seed in (1, 2):
        saved = json.loads((sweep / f"squares/half-kl-vae/beta=2/seed={seed}/eval.json")
                           .read_text())
        assert set(saved["metrics"]) == {"code_spread", "mig"}

    report = tmp_path / "report"
    wtc(env, "report", sweep, "--out", report, "--select-by", "code_spread")
    table = (report / "table1.md").read_text()
    assert "Code spread" in table and "half-kl-vae" in table and "squares" in table
    assert "Code spread lower" in table  # its direction, from its registration


def test_a_plugin_that_cannot_be_imported_is_one_clear_line(tmp_path):
    env = dict(os.environ, WTC_PLUGINS=str(tmp_path / "missing.py"))
    run = subprocess.run([sys.executable, "-m", "wtc", "data", "squares"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "WTC_PLUGINS" in run.stderr and "missing.py" in run.stderr
    assert "Traceback" not in run.stderr
