"""The GPU study: the `mini` preset's models and strengths with the paper's five seeds, trained as
stacked models (one stack per model: 2 strengths x 5 seeds), for as many steps as fit a time
budget (at least --min-steps), evaluated with the preset's paper-protocol evaluation, and its
`wtc report`, all in OUT_DIR:

    python benchmarks/gpu_study.py OUT_DIR [--budget 240]

1. warm-up: every model's stack trains --warmup-steps steps, all stacks at once as in the study
   (with a CUDA graph when train_runs takes one, else without), and a wave of --eval-jobs
   evaluations runs at once: the step rate and the evaluation time the plan needs;
2. plan: steps = what the budget leaves for training at the measured rate (rounded down to
   1,000), at least --min-steps (the plan says when that overruns the budget);
3. the study: the stacks train at once (one process each), then `wtc sweep`'s local executor
   evaluates every run, --eval-jobs at a time, and `wtc report` writes OUT_DIR/report.

OUT_DIR gets study.json (device, versions, the measured rates, the plan, each phase's seconds),
report/ and runs/ (each run's config, log, result, evaluation and job record; the checkpoints
stay in --work). Rerunning with the same --work resumes a study that was cut: its steps are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Seconds the plan keeps for the report (figures, traversals) and as a margin.
REPORT_S = 30.0
MARGIN_S = 15.0


def study_spec(args, steps: int):
    from wtc.experiments.spec import PRESETS

    spec = PRESETS["mini"]()
    spec.name = "gpu-study"
    spec.seeds = list(args.seeds)
    if args.models:
        spec.models = list(args.models)
        spec.strengths = {m: v for m, v in spec.strengths.items() if m in spec.models}
    spec.steps = int(steps)
    spec.checkpoint_every = max(1, min(5_000, steps // 4))  # a few per run, not hundreds
    spec.stack = len(spec.seeds) * max(len(spec.strength_values(m)) for m in spec.models)
    # a few log records in the warm-up too: the rate is read between the last two
    spec.train = {**spec.train, "tensorboard": False, "log_every": max(1, min(100, steps // 3))}
    if args.quick:  # a smoke test of the script on a CPU: small grid, small evaluation
        spec.data_options = {"dsprites-procedural": {"grid_step": [1, 1, 2, 8, 8, 8]}}
        spec.eval = dataclasses.replace(spec.eval, repeats=1, sizes={
            "num_train": 400, "num_test": 200, "votes_train": 20, "votes_eval": 10,
            "variance_samples": 400})
        spec.batch_size = 16
    return spec.validate()


def write_configs(spec, folder: Path, device: str) -> list:
    """The sweep folder with every run's config.json, as `wtc sweep` writes it: [[run dirs of
    one stack], ...], one stack per model."""
    from wtc.experiments.jobs import group_runs, mark_pending
    from wtc.experiments.sweep import expand, prepare, run_state, write_run_config

    prepare(spec, folder)  # records the spec, renders (and caches) the data set once
    dirs = []
    for run in expand(spec):
        run_dir = folder / run.id
        run_dir.mkdir(parents=True, exist_ok=True)
        if run_state(spec, run_dir) != "done":
            write_run_config(spec, run, run_dir, device)
        dirs.append(run_dir)
    mark_pending(dirs)
    return group_runs(dirs, spec.stack)


def train_stacks(groups: list, cuda_graph: bool, threads: int) -> dict:
    """Every stack in its own process at once (this script's --train-stack): {"seconds",
    "outcomes": {run: outcome}}."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    procs = []
    for group in groups:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--train-stack", *map(str, group)]
        if cuda_graph:
            cmd.append("--cuda-graph")
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env))
    outcomes = {}
    for group, proc in zip(groups, procs):
        stdout, _ = proc.communicate()
        found = {}
        for line in stdout.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                found[record["run"]] = record
        for run_dir in map(str, group):
            outcomes[run_dir] = found.get(run_dir, {"status": "failed", "reason": (
                f"the stack's process exited with {proc.returncode}"), "step": None})
    return {"seconds": time.perf_counter() - t0, "outcomes": outcomes}


def _train_stack(run_dirs: list, cuda_graph: bool) -> int:
    from wtc.experiments.jobs import read_config
    from wtc.train import train_runs

    configs = [read_config(d) for d in run_dirs]
    try:
        outcomes = train_runs(configs, [Path(d) for d in run_dirs], resume=True,
                              cuda_graph=cuda_graph)
    except Exception as err:  # noqa: BLE001 - reported per run to the parent
        outcomes = [{"status": "failed", "reason": f"{type(err).__name__}: {err}"
                     .splitlines()[0], "step": None} for _ in run_dirs]
    for run_dir, outcome in zip(run_dirs, outcomes):
        outcome = {k: v for k, v in outcome.items() if k != "result"}
        print(json.dumps({"run": str(run_dir), **outcome}), flush=True)
    return 0 if all(o.get("status") == "trained" for o in outcomes) else 1


def logged_rate(run_dir: Path) -> float | None:
    """steps/s of the run's last log record (the first includes start-up and compilation)."""
    try:
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
                   if line.strip()]
    except (OSError, ValueError):
        return None
    rates = [r.get("steps_per_s") for r in records[1:] if r.get("steps_per_s")]
    return rates[-1] if rates else None


def evaluate_at_once(run_dirs: list, evaluation: dict, device: str) -> float:
    """Seconds for one wave: every run in run_dirs evaluated at once, one process each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "wtc.experiments", str(d),
                               "--evaluation", json.dumps(evaluation), "--threads", "1",
                               "--device", device], stdout=subprocess.DEVNULL, env=env)
             for d in run_dirs]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - t0


def copy_small_files(folder: Path, out: Path) -> None:
    """Each run's small files (not its checkpoint) and sweep.json, into out/runs."""
    for path in folder.rglob("*"):
        if path.is_file() and path.name in ("sweep.json", "config.json", "log.jsonl",
                                            "result.json", "eval.json", "job.json"):
            target = out / "runs" / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def environment() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python":
            platform.python_version(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", help="where study.json, report/ and runs/ go")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds the whole study may take (default 240)")
    parser.add_argument("--min-steps", type=int, default=20_000,
                        help="train at least this many steps (default 20000)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train exactly this many steps: no warm-up, no plan")
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 11, 42, 73, 89])
    parser.add_argument("--models", nargs="+", default=None, help="default: the mini preset's")
    parser.add_argument("--eval-jobs", type=int, default=min(12, os.cpu_count() or 1),
                        help="evaluations at once (one CPU thread each)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-cuda-graph", action="store_true",
                        help="never ask train_runs for a CUDA graph")
    parser.add_argument("--work", default=None,
                        help="the sweep folders with the checkpoints (default: a folder in "
                             "the system's temporary folder, named after OUT_DIR)")
    parser.add_argument("--quick", action="store_true",
                        help="a small grid and evaluation: a smoke test of the script on a CPU")
    parser.add_argument("--train-stack", nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cuda-graph", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_stack:  # a child: one stack
        return _train_stack(args.train_stack, args.cuda_graph)
    if args.out is None:
        parser.error("give OUT_DIR")

    import torch
    from wtc.experiments import make_report, run_sweep
    from wtc.experiments.sweep import evaluation_of

    t_start = time.monotonic()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_study: no CUDA device is visible; --device cpu --quick --steps N runs the "
              "script's smoke test on a CPU", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or Path(tempfile.gettempdir()) / f"wtc-gpu-study-{out.name}").resolve()
    study = {"environment": environment(), "budget_s": args.budget, "seeds": args.seeds}
    threads = max(1, (os.cpu_count() or 1) // 8)
    cuda_graph = args.device.startswith("cuda") and not args.no_cuda_graph

    def save():
        (out / "study.json").write_text(json.dumps(study, indent=1))

    def say(text):
        print(f"gpu_study [{time.monotonic() - t_start:6.1f} s] {text}", flush=True)

    recorded = json.loads((work / "study" / "sweep.json").read_text())["spec"]["steps"] \
        if (work / "study" / "sweep.json").exists() else None
    steps = args.steps or recorded
    if steps is None:
        spec = study_spec(args, args.warmup_steps)
        groups = write_configs(spec, work / "warmup", args.device)
        say(f"warm-up: {len(groups)} stacks of {spec.stack} runs, {args.warmup_steps} steps, "
            f"all at once{' with CUDA graphs' if cuda_graph else ''}")
        warm = train_stacks(groups, cuda_graph, threads)
        failed = {r: o for r, o in warm["outcomes"].items() if o.get("status") != "trained"}
        if failed and cuda_graph:
            first = next(iter(failed.values()))
            say(f"with a CUDA graph {len(failed)} runs failed ({first.get('reason')}); "
                "again without")
            study["cuda_graph_failed"] = first.get("reason")
            cuda_graph = False
            shutil.rmtree(work / "warmup")
            groups = write_configs(spec, work / "warmup", args.device)
            warm = train_stacks(groups, cuda_graph, threads)
            failed = {r: o for r, o in warm["outcomes"].items() if o.get("status") != "trained"}
        if failed:
            study["warmup_failures"] = failed
            save()
            say(f"warm-up: {len(failed)} runs failed, e.g. {next(iter(failed.values()))}")
            return 1
        fallback = args.warmup_steps / warm["seconds"]  # start-up included: a lower bound
        rates = [min(logged_rate(d) or fallback for d in group) for group in groups]
        rate = min(rates)  # the stacks train at once: the slowest sets the pace
        startup = max(0.0, warm["seconds"] - args.warmup_steps / rate)
        runs = [d for group in groups for d in group]
        wave = evaluate_at_once(runs[:args.eval_jobs], evaluation_of(spec), args.device)
        evaluation_s = math.ceil(len(runs) / args.eval_jobs) * wave * 1.15
        left = args.budget - (time.monotonic() - t_start)
        train_s = left - evaluation_s - REPORT_S - MARGIN_S - startup
        fit = int(max(0.0, train_s) * rate // 1000 * 1000)
        steps = max(args.min_steps, fit)
        expected = startup + steps / rate + evaluation_s + REPORT_S
        study["warmup"] = {"steps": args.warmup_steps, "seconds": round(warm["seconds"], 1),
                           "steps_per_s_per_stack": [round(r, 1) for r in rates],
                           "startup_s": round(startup, 1), "eval_wave_s": round(wave, 1),
                           "eval_jobs": args.eval_jobs}
        study["plan"] = {"steps": steps, "fit_steps": fit, "train_s": round(steps / rate, 1),
                         "evaluation_s": round(evaluation_s, 1),
                         "expected_end_s": round(time.monotonic() - t_start + expected, 1)}
        say(f"plan: {steps} steps at {rate:.0f} steps/s a stack ({fit} fit the budget), "
            f"evaluation ~{evaluation_s:.0f} s; expected to end at "
            f"{study['plan']['expected_end_s']:.0f} s of {args.budget:.0f}")
        if study["plan"]["expected_end_s"] > args.budget:
            say(f"the plan overruns the budget: --min-steps {args.min_steps} does not fit; if "
                "it is cut, rerun the same command (same --work) to continue")
        shutil.rmtree(work / "warmup", ignore_errors=True)
    study["steps"] = steps
    study["cuda_graph"] = cuda_graph
    save()

    spec = study_spec(args, steps)
    folder = work / "study"
    groups = write_configs(spec, folder, args.device)
    say(f"training: {len(groups)} stacks of {spec.stack} runs, {steps} steps")
    trained = train_stacks(groups, cuda_graph, threads)
    failed = {r: o.get("reason") for r, o in trained["outcomes"].items()
              if o.get("status") != "trained"}
    study["train_s"] = round(trained["seconds"], 1)
    study["train_failures"] = failed
    save()
    say(f"trained in {trained['seconds']:.0f} s; {len(failed)} failed"
        + (f", e.g. {next(iter(failed.values()))}" if failed else ""))

    t0 = time.monotonic()
    devices = [args.device if ":" in args.device or args.device == "cpu" else "cuda:0"]
    result = run_sweep(spec, folder, jobs=args.eval_jobs, devices=devices, threads=1, stack=1,
                       echo=lambda line: None)
    study["evaluation_s"] = round(time.monotonic() - t0, 1)
    study["sweep"] = {"finished": len(result.finished), "done_before": len(result.skipped),
                      "failed": result.failed}
    save()
    say(f"evaluated in {study['evaluation_s']:.0f} s; {len(result.failed)} failed")

    t0 = time.monotonic()
    try:
        make_report(folder, out / "report", device=args.device, echo=lambda *a: None)
    except Exception as err:  # noqa: BLE001 - the runs are kept either way
        study["report_error"] = f"{type(err).__name__}: {err}"
    study["report_s"] = round(time.monotonic() - t0, 1)
    copy_small_files(folder, out)
    study["total_s"] = round(time.monotonic() - t_start, 1)
    save()
    say(f"done: {out}/report (study.json, runs/)")
    return 0 if not (failed or result.failed or "report_error" in study) else 1


if __name__ == "__main__":
    sys.exit(main())
