"""Overhead of each executor per run: seconds from ``submit`` to the run's first training step
(its first log.jsonl record, log_every=1), against the same run trained in this process.

    PYTHONPATH=.:python python benchmarks/executor_overhead.py --repeats 3

Runs are submitted one at a time (no queueing behind each other), each in a fresh folder; the
median over ``--repeats`` is printed. Ray's cluster start is a one-off, printed separately.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

EVALUATION = {"protocol": "paper", "metrics": ["mig"], "repeats": 1,
              "sizes": {"num_train": 200, "num_test": 100, "votes_train": 10, "votes_eval": 5,
                        "variance_samples": 200}}


def make_run(root: Path, name: str) -> Path:
    from wtc.runfiles import write_json_atomic
    from wtc.train import TrainConfig

    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = TrainConfig(model="beta-vae", data="dsprites-procedural", data_options={"grid_step": 4},
                         steps=5, batch_size=16, checkpoint_every=5, log_every=1,
                         eval_samples=64, progress=False, tensorboard=False, device="cpu")
    write_json_atomic(config.to_json(), run_dir / "config.json")
    return run_dir


def first_step(run_dir: Path, t0: float, timeout: float = 300.0) -> float:
    log = run_dir / "log.jsonl"
    while time.perf_counter() - t0 < timeout:
        if log.exists() and log.stat().st_size > 0:
            return time.perf_counter() - t0
        time.sleep(0.005)
    raise TimeoutError(f"{run_dir} logged no step in {timeout} s")


def measure(executor, root: Path, label: str, repeats: int) -> list:
    out = []
    for i in range(repeats):
        run_dir = make_run(root, f"{label}-{i}")
        t0 = time.perf_counter()
        executor.submit([run_dir], EVALUATION)
        out.append(first_step(run_dir, t0))
        executor.wait(timeout=600)
    return out


def in_process(root: Path, repeats: int) -> list:
    from wtc.experiments.jobs import run_job

    out = []
    for i in range(repeats):
        run_dir = make_run(root, f"inprocess-{i}")
        t0 = time.perf_counter()
        t = threading.Thread(target=run_job, args=(run_dir, EVALUATION), daemon=True)
        t.start()
        out.append(first_step(run_dir, t0))
        t.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--executors", default="inprocess,local,submitit-local,ray")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from wtc.data import load

    load("dsprites-procedural", grid_step=4)  # build the procedural cache once, outside timings
    from wtc.experiments.executors import LocalExecutor, RayExecutor, SlurmExecutor

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.executors.split(","):
            if name == "inprocess":
                results[name] = in_process(root, args.repeats)
            elif name == "local":
                results[name] = measure(LocalExecutor(jobs=1, threads=1), root, name,
                                        args.repeats)
            elif name == "submitit-local":
                ex = SlurmExecutor(root / ".submitit", cluster="local", time="00:10:00")
                results[name] = measure(ex, root, name, args.repeats)
            elif name == "ray":
                import ray

                t0 = time.perf_counter()
                ex = RayExecutor(num_cpus=2, cpus_per_job=1)
                print(f"ray: local cluster start {time.perf_counter() - t0:.2f} s (once)")
                try:
                    results[name] = measure(ex, root, name, args.repeats)
                finally:
                    ray.shutdown()
    base = statistics.median(results["inprocess"]) if "inprocess" in results else 0.0
    print(f"{'executor':<16} {'submit->first step (median s)':>30} {'overhead (s)':>13}  all")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<16} {med:30.2f} {med - base:13.2f}  "
              + " ".join(f"{t:.2f}" for t in times))


if __name__ == "__main__":
    main()
