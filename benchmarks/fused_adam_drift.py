"""How far fused Adam's rounding moves each model's logged terms from the default Adam's: the
margin of tests/test_stacked.py::test_graphed_stack_matches_eager, whose CUDA graph steps with
fused Adam and whose eager reference with the default.

    python benchmarks/fused_adam_drift.py [--device cpu|cuda] [--steps 8] [--models M ...]

Each model trains the test's stack (3 runs: seeds 1, 11, 42, strengths 2, 4, 8; batch 8, lr 1e-3)
twice, eagerly, once with each Adam. For every logged term it prints the largest difference over
runs and steps, and that difference over the test's allowance (abs 1e-4 + rel 1e-3 of the value):
a ratio near 1 says the test's tolerance is tight on this device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

TOLERANCE = {"rel": 1e-3, "abs": 1e-4}  # the test's pytest.approx
SEEDS_STRENGTHS = [(1, 2.0), (11, 4.0), (42, 8.0)]


def read_log(path: Path) -> dict:
    return {r["step"]: r for r in map(json.loads, (path / "log.jsonl").read_text().splitlines())}


def drift(model: str, device: str, steps: int) -> dict:
    """{term: (largest |fused - default|, that over the test's allowance)} for one model."""
    from wtc.models import SWEPT
    from wtc.train import TrainConfig, Trainer

    configs = [TrainConfig(model=model, data="dsprites-procedural",
                           data_options={"grid_step": (1, 1, 2, 8, 8, 8)}, steps=steps,
                           batch_size=8, log_every=1, checkpoint_every=steps, progress=False,
                           device=device, seed=seed, eval_samples=32, tensorboard=False, lr=1e-3,
                           **{SWEPT[model]: strength})
               for seed, strength in SEEDS_STRENGTHS]
    default_adam = torch.optim.Adam

    class FusedAdam(default_adam):
        def __init__(self, params, **kw):
            super().__init__(params, **kw, fused=True)

    logs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, adam in (("default", default_adam), ("fused", FusedAdam)):
            torch.optim.Adam = adam
            try:
                outs = [Path(tmp) / f"{name}{i}" for i in range(len(configs))]
                Trainer(configs, outs).run()
            finally:
                torch.optim.Adam = default_adam
            logs[name] = [read_log(o) for o in outs]
    worst: dict = {}
    for default, fused in zip(logs["default"], logs["fused"], strict=True):
        for step, record in default.items():
            for term, value in record.items():
                if not isinstance(value, float) or term == "steps_per_s":
                    continue
                diff = abs(fused[step][term] - value)
                allowed = TOLERANCE["abs"] + TOLERANCE["rel"] * abs(value)
                if diff >= worst.get(term, (-1.0,))[0]:
                    worst[term] = (diff, diff / allowed)
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("WTC_CACHE", tempfile.mkdtemp())
    import wtc.models

    print(f"{'model':<11} {'term':<22} {'max |diff|':>11} {'of allowed':>10}")
    tightest = 0.0
    for model in args.models or list(wtc.models.MODELS):
        for term, (diff, ratio) in sorted(drift(model, args.device, args.steps).items()):
            print(f"{model:<11} {term:<22} {diff:11.3g} {ratio:10.2f}")
            tightest = max(tightest, ratio)
    print(f"tightest: {tightest:.2f} of the allowance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
