"""Runs per hour: one training step of R runs stacked (one model, R seeds and strengths as one
stacked model: one launch per layer for all runs) against the same R runs stepped one after the
other, each as its own single-run trainer. The ratio sequential / stacked is the gain in runs
per hour; R = 1 shows what stacking costs a lone run. On CUDA the stack is also measured as one
captured graph (``graphed``: its ratio is against the sequential eager runs)."""

import os
import tempfile

import pytest

import wtc.models
from conftest import NEEDS_CUDA
from wtc.train import TrainConfig, Trainer

RUNS = [1, 5, 20]
IMPLS = ["wtc_ext", "sequential", "graphed"]  # wtc_ext: the eager stack


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    os.environ.setdefault("WTC_CACHE", str(tmp_path_factory.mktemp("cache")))


def configs(model, runs, device):
    strength = wtc.models.SWEPT[model]
    return [TrainConfig(model=model, data="dsprites-procedural",
                        data_options={"grid_step": (1, 1, 1, 4, 2, 2)}, steps=10**9,
                        progress=False, tensorboard=False, device=device, seed=r,
                        **{strength: float(1 + r)}) for r in range(runs)]


# (device, impl): a CUDA graph only on CUDA, so the CPU has no graphed case to skip
DEVICE_IMPLS = [("cpu", impl) for impl in IMPLS if impl != "graphed"] + [
    pytest.param("cuda", impl, marks=NEEDS_CUDA)
    for impl in IMPLS]


@pytest.mark.parametrize("runs", RUNS)
@pytest.mark.parametrize("model", list(wtc.models.MODELS))
@pytest.mark.parametrize(("device", "impl"), DEVICE_IMPLS)
def test_runs_per_hour(bench, data_cache, device, model, runs, impl):
    cs = configs(model, runs, device)
    folders = [tempfile.mkdtemp() for _ in cs]
    if impl == "sequential":
        trainers = [Trainer(c, f) for c, f in zip(cs, folders, strict=True)]

        def step():
            for t in trainers:
                t.step(t._next_batch())
    else:
        trainer = Trainer(cs, folders, cuda_graph=impl == "graphed")
        fn = trainer._graph_step if impl == "graphed" else trainer.step

        def step():
            fn(trainer._next_batch())

        for _ in range(4):  # past the graph's warm-up and capture
            step()
    rounds = 3 if runs == 20 and device == "cpu" else None
    bench("runs per hour", device, f"{model} R={runs}", impl, step, rounds=rounds)
