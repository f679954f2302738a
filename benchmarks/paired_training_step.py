"""Paired measurement of one training step, wtc ops against pure PyTorch ops, per model.

The ops save about a millisecond of a CPU step of about a hundred, less than the drift between
two separate timing runs. Here the two versions of a model take alternating steps on the same
batch in one loop (which goes first alternates too), so drift hits both alike, and the median
of the per-pair differences comes with a bootstrap 95% confidence interval.

    python benchmarks/paired_training_step.py [--pairs 150] [--device cpu] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def measure(model: str, device: str, pairs: int, warmup: int = 5) -> dict:
    import wtc.models
    from test_bench_train import PURE_PYTORCH_OPS
    from wtc.train import TrainConfig, Trainer

    config = TrainConfig(model=model, data="dsprites-procedural",
                         data_options={"grid_step": (1, 1, 1, 4, 2, 2)}, steps=1, progress=False,
                         device=device, seed=0)
    ours, pure = (Trainer(config, tempfile.mkdtemp()) for _ in range(2))
    ds = ours.dataset
    x = ds.batch(np.random.default_rng(0).integers(0, len(ds), 64)).to(device)

    def step(trainer, patched):
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        sync()
        t0 = time.perf_counter()
        if patched:
            with mock.patch.object(wtc.models.base, "wtc_ext", PURE_PYTORCH_OPS):
                trainer.step(x)
        else:
            trainer.step(x)
        sync()
        return time.perf_counter() - t0

    for _ in range(warmup):
        step(ours, False)
        step(pure, True)
    t_ours, t_pure = [], []
    for i in range(pairs):
        if i % 2:
            t_pure.append(step(pure, True))
            t_ours.append(step(ours, False))
        else:
            t_ours.append(step(ours, False))
            t_pure.append(step(pure, True))
    t_ours, t_pure = np.array(t_ours), np.array(t_pure)
    diff = t_pure - t_ours  # positive: ours is faster
    # Step times have heavy tails (a descheduled thread costs tens of ms): the median of the
    # paired differences, with a bootstrap 95% interval, is robust to them.
    boot = np.random.default_rng(0).choice(diff, size=(2000, len(diff)))
    low, high = np.percentile(np.median(boot, axis=1), [2.5, 97.5])
    return {"model": model, "device": device, "pairs": pairs,
            "wtc_median_ms": 1e3 * float(np.median(t_ours)),
            "pure_median_ms": 1e3 * float(np.median(t_pure)),
            "wtc_steps_per_s": float(1 / np.median(t_ours)),
            "pure_steps_per_s": float(1 / np.median(t_pure)),
            "saved_ms_median": 1e3 * float(np.median(diff)),
            "saved_ms_ci95": [1e3 * float(low), 1e3 * float(high)],
            "pairs_ours_faster": float(np.mean(diff > 0)),
            "wtc_ms": (1e3 * t_ours).round(3).tolist(), "pure_ms": (1e3 * t_pure).round(3).tolist()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=150)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import wtc.models
    from run import machine_info

    rows = []
    print(f"{'model':<11} {'wtc ms':>8} {'pure ms':>8} {'wtc st/s':>9} {'pure st/s':>9} "
          f"{'saved ms, median (95% CI)':>27} {'pairs faster':>12}")
    for model in args.models or list(wtc.models.MODELS):
        r = measure(model, args.device, args.pairs)
        rows.append(r)
        print(f"{model:<11} {r['wtc_median_ms']:8.1f} {r['pure_median_ms']:8.1f} "
              f"{r['wtc_steps_per_s']:9.2f} {r['pure_steps_per_s']:9.2f} "
              f"{r['saved_ms_median']:9.2f} ({r['saved_ms_ci95'][0]:6.2f}, "
              f"{r['saved_ms_ci95'][1]:6.2f})   "
              f"{100 * r['pairs_ours_faster']:10.0f}%", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine_info(), "paired_training_step": rows},
                                       indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
