"""`wtc sweep`: every (data set, model, strength, seed) of a spec trained and evaluated on this
machine, on Slurm (submitit) or on Ray, resumable; the runs of one cell (a data set, model and
[axes] setting: its strengths and seeds) train together as stacked models, ``stack`` runs a job.

A sweep folder holds ``sweep.json`` (the spec; a folder never mixes two specs) and one run
folder per run, ``DATA/MODEL/STRENGTH=VALUE/seed=SEED`` (with ``/FIELD=VALUE`` before the seed for
each of the spec's ``[axes]``). The sweep writes each run's full TrainConfig to
``RUN/config.json`` before submitting anything; every executor's job is then the same
:func:`wtc.experiments.jobs.run_group` on a group of run folders: lock them, train or resume
them from those files as one stacked model, evaluate each, and record each run's state in its
``RUN/job.json``.

How many runs a job stacks: the spec's ``stack`` (``wtc sweep --stack N``), else
:func:`default_stack`: 1 on a CPU, where a stacked step costs as much as its runs one after
another or a little more (benchmarks/README.md, runs per hour); on CUDA, all the runs of a cell up to :data:`STACK_CAP`, fewer when the memory
of a local GPU (shared by the jobs on it) holds fewer at :data:`RUN_GPU_BYTES` a run. A run is skipped when its training
and its evaluation are both complete, only evaluated when training is, and resumed from its
checkpoint when training stopped part-way, so killing and restarting a sweep loses at most the
steps since each run's last checkpoint. A run whose lock another process holds (a killed
sweep's orphaned job, a second sweep on the folder) or that is submitted to a job still alive
is never submitted again: a local or Ray sweep waits for it instead.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

from wtc.experiments.executors import runs_to_submit
from wtc.experiments.jobs import (
    JOB,
    JOB_LOCK,
    eval_complete,
    expected_evaluation,
    group_runs,
    is_finished,
    is_trained,
    lock_held,
    mark_pending,
    read_job,
)
from wtc.experiments.spec import SWEPT, SweepSpec, spec_from_json
from wtc.runfiles import (
    CHECKPOINT,
    CONFIG,
    LOCK,
    SWEEP_LOG,
    read_json,
    temporary_name,
    write_json_atomic,
)

SWEEP_FILE = "sweep.json"
FORMAT = "wtc-sweep-v1"
# The most runs a job stacks by default on CUDA: the paper's cell, 4 strengths x 5 seeds.
STACK_CAP = 20
# A generous bound on one run's GPU memory at the paper's sizes (batch 64, 64x64 images, table
# 3's networks): weights, gradients and Adam's moments are under 0.1 GB even with FactorVAE's
# 6 x 1000 discriminator, the activations of a step a few hundred MB at most.
RUN_GPU_BYTES = 1 << 30


class SweepError(RuntimeError):
    """A sweep that cannot start: its folder holds another spec, or a data set is missing."""


@dataclass(frozen=True)
class Run:
    data: str
    model: str
    strength: str  # the swept strength's name
    value: float
    seed: int
    fixed: tuple = ()  # ((name, value), ...) strengths held fixed
    axes: tuple = ()  # ((TrainConfig field, value), ...) of the spec's [axes], in its order

    @property
    def id(self) -> str:
        axes = "".join(f"/{name}={axis_text(value)}" for name, value in self.axes)
        return f"{self.data}/{self.model}/{self.strength}={self.value:g}{axes}/seed={self.seed}"

    @property
    def strengths(self) -> dict:
        return {**dict(self.fixed), self.strength: self.value}


def axis_text(value) -> str:
    """How an axis value is written in run ids and tables (0.0005, true, 0.5,0.9)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(axis_text(v) for v in value)
    return str(value)


def expand(spec: SweepSpec) -> list[Run]:
    """Every run of a spec, in the order a sweep starts them (seed-major, so an interrupted
    sweep has whole seeds of every setting rather than all seeds of a few); the spec's
    ``[axes]`` multiply each strength's runs."""
    from wtc.train import TrainConfig

    names = list(spec.axes)
    combos = list(itertools.product(*[[TrainConfig.check_value(n, v) for v in spec.axes[n]]
                                      for n in names]))
    runs = []
    for seed in spec.seeds:
        for data in spec.data:
            for model in spec.models:
                fixed = tuple(sorted((k, float(v)) for k, v in spec.fixed.get(model, {}).items()))
                for value in spec.strength_values(model):
                    for combo in combos:
                        runs.append(Run(data, model, SWEPT[model], float(value), int(seed), fixed,
                                        tuple(zip(names, combo))))
    return runs


def run_config(spec: SweepSpec, run: Run, device: str | None = None):
    """The full TrainConfig of one run of ``spec``: what its ``config.json`` holds."""
    from wtc.train import TrainConfig

    data_root = str(Path(spec.data_root).expanduser().resolve()) if spec.data_root else None
    values = {"model": run.model, "data": run.data, "data_root": data_root,
              "data_options": dict(spec.data_options.get(run.data, {})), "seed": int(run.seed),
              "steps": spec.steps, "batch_size": spec.batch_size, "lr": float(spec.lr),
              "checkpoint_every": spec.checkpoint_every, "device": device, "progress": False,
              **spec.train, **dict(run.axes), **run.strengths}
    return TrainConfig.from_json(values, where=f"run {run.id}")


def write_run_config(spec: SweepSpec, run: Run, run_dir: Path, device: str) -> Path:
    """Write ``run_dir/config.json`` (atomically): the file the run's ``wtc train`` reads."""
    path = Path(run_dir) / CONFIG
    write_json_atomic(run_config(spec, run, device).to_json(), path)
    return path


def evaluation_of(spec: SweepSpec) -> dict:
    """The spec's evaluation as every executor's job takes it (:func:`jobs.run_group`)."""
    ev = spec.eval
    return {"protocol": ev.protocol, "metrics": list(ev.metrics), "repeats": ev.repeats,
            "sizes": dict(ev.sizes)}


def expected_eval(spec: SweepSpec) -> dict:
    """What a run's eval.json records when it is this spec's evaluation."""
    return expected_evaluation(evaluation_of(spec))


def run_state(spec: SweepSpec, run_dir: Path) -> str:
    """``done``, ``evaluate`` (trained, not evaluated), ``resume`` (a checkpoint to continue),
    ``restart`` (files but no checkpoint: killed before its first one) or ``new``."""
    run_dir = Path(run_dir)
    if is_trained(run_dir, spec.steps):
        return "done" if eval_complete(run_dir, evaluation_of(spec)) else "evaluate"
    if (run_dir / CHECKPOINT).exists():
        return "resume"
    # the sweep writes config.json and job.json before any job starts: they are not progress
    if run_dir.exists() and any(p.name not in _BOOKKEEPING for p in run_dir.iterdir()):
        return "restart"
    return "new"


_BOOKKEEPING = {LOCK, CONFIG, JOB, JOB_LOCK, SWEEP_LOG}


@dataclass
class SweepResult:
    runs: int
    skipped: list = field(default_factory=list)
    finished: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # run id -> reason
    submitted: dict = field(default_factory=dict)  # run id -> job id

    @property
    def ok(self) -> bool:
        return not self.failed


def default_devices() -> list:
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def default_stack(device: str, name: str = "local", jobs: int = 1,
                  devices: list | None = None) -> int:
    """Runs per job when neither the spec nor the command line says: 1 on a CPU; on CUDA
    :data:`STACK_CAP`, or fewer when a local GPU's memory, shared by the ``jobs`` running on it
    at once, holds fewer at :data:`RUN_GPU_BYTES` a run. Slurm and Ray nodes cannot be
    asked from here: they get the cap."""
    if not str(device).startswith("cuda"):
        return 1
    if name != "local":
        return STACK_CAP
    import torch

    if not torch.cuda.is_available():
        return STACK_CAP
    devices = [d for d in (devices or default_devices()) if str(d).startswith("cuda")] or \
        ["cuda:0"]
    memory = []
    for d in dict.fromkeys(devices):
        index = int(str(d).split(":")[1]) if ":" in str(d) else 0
        # the device's memory, read without creating a CUDA context in the sweep's process
        memory.append(torch.cuda.get_device_properties(index).total_memory)
    per_device = -(-max(1, int(jobs)) // len(memory))  # jobs sharing one GPU at once
    return max(1, min(STACK_CAP, int(min(memory) // per_device // RUN_GPU_BYTES)))


def prepare(spec: SweepSpec, out: Path) -> None:
    """Record the spec in ``out`` or check it is the one already there; load every data set
    once (a missing file fails here, before anything runs; procedural sets get cached)."""
    from wtc.data import DataSetError, load

    out.mkdir(parents=True, exist_ok=True)
    path = out / SWEEP_FILE
    current = spec.to_json()
    # Claim the folder atomically: of two sweeps started on it at once, exactly one creates the
    # record; the other finds it below and is refused when its spec differs.
    created = _claim(path, {"format": FORMAT, "spec": current})
    saved = read_json(path)
    if not created:
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise SweepError(f"{path} is not a wtc sweep record; use another --out")
        # through SweepSpec, so a record of an older wtc (without newer keys) compares equal
        try:
            old = spec_from_json(saved["spec"]).to_json()
        except (TypeError, KeyError, AttributeError):  # a damaged record: compare as written
            old = saved["spec"]
        # [executor] and stack say where and how fast jobs run, not what they compute: they
        # may change between runs
        diffs = sorted(k for k in set(old) | set(current)
                       if k not in ("executor", "stack") and old.get(k) != current.get(k))
        if diffs:
            raise SweepError(f"{out} holds a sweep of another spec (it differs in "
                             f"{', '.join(diffs)}); use another --out, or the spec recorded "
                             f"in {path}")
    try:
        for name in spec.data:
            try:
                load(name, root=spec.data_root, **spec.data_options.get(name, {}))
            except DataSetError as err:
                raise SweepError(f"data set {name}: {err}") from err
    except BaseException:
        if created:  # nothing ran: the folder is free again, e.g. for a corrected data_root
            path.unlink(missing_ok=True)
        raise
    if not created and saved.get("spec") != current:
        write_json_atomic({"format": FORMAT, "spec": current}, path)  # the latest [executor]


def _claim(path: Path, record: dict) -> bool:
    """Create ``path`` holding ``record`` unless it exists, atomically: True if this call
    created it. The record is written whole to a temporary first and hard-linked into place
    (a link fails when the name exists), so no reader ever sees half a record."""
    import json
    import os

    if path.exists():
        return False
    tmp = temporary_name(path)
    try:
        tmp.write_text(json.dumps(record, indent=1))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: an exclusive create instead
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(tmp.read_text())
        return True
    finally:
        tmp.unlink(missing_ok=True)


def load_sweep(out) -> tuple[SweepSpec, list[Run]]:
    """The spec recorded in a sweep folder and its runs."""
    path = Path(out) / SWEEP_FILE
    saved = read_json(path)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise SweepError(f"{path} is missing or not a wtc sweep record: is {out} a sweep folder?")
    spec = spec_from_json(saved["spec"]).validate()
    return spec, expand(spec)


def sweep_status(out) -> dict:
    """``wtc sweep --status``: :func:`executors.status_table` of a sweep folder, judged by the
    evaluation its recorded spec asks for."""
    from wtc.experiments.executors import status_table

    spec, _ = load_sweep(out)
    return status_table(out, evaluation_of(spec))


def executor_table(spec: SweepSpec, options: dict | None = None) -> dict:
    """The spec's ``[executor]`` table with the command line's ``options`` over it. When the
    command line names another executor than the spec's, the spec's table (options for
    another engine) is left out."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    table = dict(spec.executor)
    name = options.get("name") or table.get("name") or "local"
    if table.get("name", "local") != name:
        table = {}
    if isinstance(table.get("sbatch"), dict) and isinstance(options.get("sbatch"), dict):
        options["sbatch"] = {**table["sbatch"], **options["sbatch"]}  # merged, not replaced
    return {**table, **options, "name": name}


def _config_device(name: str, table: dict, devices: list | None) -> str:
    """The device every run's config.json names. Local GPUs are handed out per job through
    CUDA_VISIBLE_DEVICES, so a config says ``cuda``, never a GPU's index."""
    if devices:
        kinds = {str(d).split(":")[0] for d in devices}
        if len(kinds) > 1:
            raise SweepError(f"--devices {' '.join(devices)} mixes kinds of device; a sweep's "
                             "runs all train on one kind")
        return "cuda" if kinds == {"cuda"} else str(devices[0])
    if name == "local":
        return "cuda" if default_devices()[0].startswith("cuda") else "cpu"
    # Slurm/Ray: the submitting host (a login node) says nothing about the nodes' GPUs
    return "cuda" if table.get("gpus_per_job") else "cpu"


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _log_tail(run_dir: Path) -> str:
    try:
        lines = [ln for ln in (run_dir / SWEEP_LOG).read_text().splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _failure(run_dir: Path, outcome) -> str:
    """One line: the reason job.json records (else the exception), the log's last line."""
    record = read_job(run_dir) or {}
    reason = record.get("reason") if record.get("state") == "failed" else None
    if not reason:
        reason = (str(outcome).strip().splitlines() or [type(outcome).__name__])[0]
    tail = _log_tail(run_dir)
    detail = f": {tail}" if tail and tail not in reason else ""
    return f"{reason}{detail} (log: {run_dir / SWEEP_LOG})"


def run_sweep(spec: SweepSpec, out, jobs: int | None = None, devices: list | None = None,
              threads: int | None = None, echo=print, executor: dict | None = None,
              stack: int | None = None) -> SweepResult:
    """Train and evaluate every run of ``spec`` under ``out`` through an executor.

    ``executor``: the command line's executor options (``name``: local, slurm or ray, and that
    executor's keys) over the spec's ``[executor]`` table. ``jobs``: local runs at once.
    ``devices``: what the runs train on (local: cycled over the jobs; default every GPU, else
    the CPU). ``threads``: CPU threads per job. ``stack``: the most runs of a cell a job trains
    as one stacked model (over the spec's ``stack``; default :func:`default_stack`). Every
    run's config.json is written and the
    executor's options checked before anything is submitted; only runs neither finished nor
    worked on by another process are submitted. Local and Ray: returns when every run has
    ended (waiting for runs other processes work on); Slurm: once the jobs are submitted."""
    from wtc.experiments.executors import ExecutorConfig, make_executor, parse_executor

    out = Path(out).resolve()  # jobs run elsewhere: every path they get is absolute
    spec.validate()
    table = executor_table(spec, executor)
    name = table["name"]
    if jobs is not None:
        if int(jobs) < 1:
            raise SweepError(f"jobs must be >= 1, got {jobs}")
        if name == "local":
            table["jobs"] = int(jobs)
    if threads is not None and int(threads) < 1:
        raise SweepError(f"--threads must be >= 1 (CPU threads per job), got {threads}")
    for d in devices or ():
        from wtc.train import parse_device, pick_device

        try:  # refused here, not in every run (local runs need it visible on this machine)
            (pick_device if name == "local" else parse_device)(str(d))
        except ValueError as err:
            raise SweepError(f"--devices: {err}") from None
    if stack is not None and (isinstance(stack, bool) or int(stack) < 1):
        raise SweepError(f"--stack must be an integer >= 1 (runs trained as one model), got "
                         f"{stack}")
    device = _config_device(name, table, devices)
    config = parse_executor(table, device=device)  # SpecError: before anything is written
    local_devices = None
    if name == "local":
        local_devices = list(devices) if devices else default_devices()
        config = ExecutorConfig(name, {**config.options, "devices": local_devices})
    size = int(stack or spec.stack or default_stack(device, name, table.get("jobs", 1),
                                                    local_devices))
    prepare(spec, out)
    runs = expand(spec)
    evaluation = evaluation_of(spec)
    dirs = {run.id: out / run.id for run in runs}
    states = {}
    for run in runs:
        run_dir = dirs[run.id]
        states[run.id] = run_state(spec, run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # a finished run's or a working job's config stays as it is
        if states[run.id] != "done" and not lock_held(run_dir):
            write_run_config(spec, run, run_dir, device)
    mark_pending(dirs.values())

    result = SweepResult(runs=len(runs))
    t0 = time.perf_counter()
    counts: dict = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    stacking = f", up to {size} runs a job" if size > 1 else ""
    echo(f"sweep {spec.name}: {len(runs)} runs ({summary}) on {name}{stacking} -> {out}")

    def line(text):
        done = len(result.skipped) + len(result.finished) + len(result.failed)
        echo(f"[{done}/{result.runs}] {text} · {len(result.failed)} failed · "
             f"{_fmt_seconds(time.perf_counter() - t0)} elapsed")

    remaining = []
    for run in runs:
        if states[run.id] == "done":
            result.skipped.append(run.id)
            line(f"done before: {run.id}")
        else:
            remaining.append(run)

    if name == "slurm":  # Slurm schedules the jobs; the sweep folder records what happens
        todo = {str(d) for d in runs_to_submit([dirs[r.id] for r in remaining], evaluation)}
        submit = [r for r in remaining if str(dirs[r.id]) in todo]
        ex = make_executor(config, out, threads=threads, echo=echo)
        result.submitted = _submit(ex, submit, dirs, evaluation, size)
        ids = list(dict.fromkeys(result.submitted.values()))
        echo(f"sweep {spec.name}: submitted {len(submit)} run(s){_in_jobs(submit, ids)} to "
             f"Slurm, job ids "
             f"{' '.join(ids) or '-'}; {len(remaining) - len(submit)} running or queued "
             f"already, {len(result.skipped)} done before. Progress: wtc sweep --status {out}")
        return result

    ours_ended: set = set()  # runs whose job of ours ended busy: ours to resubmit once free
    announced: set = set()
    ex = None
    try:
        while remaining:
            free = {str(d) for d in runs_to_submit([dirs[r.id] for r in remaining],
                                                   evaluation)}
            for r in remaining:
                if (r.id in ours_ended and not lock_held(dirs[r.id])
                        and not is_finished(dirs[r.id], evaluation)):
                    free.add(str(dirs[r.id]))
            batch = [r for r in remaining if str(dirs[r.id]) in free]
            for r in list(remaining):
                if str(dirs[r.id]) in free:
                    continue
                if is_finished(dirs[r.id], evaluation):  # another process finished it
                    result.skipped.append(r.id)
                    remaining.remove(r)
                    line(f"done before: {r.id} (by another process)")
                elif r.id not in announced:
                    # an earlier sweep's orphaned job, or a second sweep on this folder, holds
                    # it: wait for it rather than train it twice
                    announced.add(r.id)
                    echo(f"{r.id} is being worked on by another process (an earlier sweep's "
                         "job?); waiting for it")
            if batch:
                ex = make_executor(config, out, threads=threads, echo=echo)
                submitted = _submit(ex, batch, dirs, evaluation, size)
                result.submitted.update(submitted)
                ids = list(dict.fromkeys(submitted.values()))
                echo(f"submitted {len(batch)} run(s){_in_jobs(batch, ids)} to {name}: job ids "
                     f"{' '.join(ids)}")
                outcomes = _wait(ex, len(batch))
                for r in batch:
                    outcome = outcomes.get(str(dirs[r.id]),
                                           RuntimeError("the job ended without an outcome"))
                    if isinstance(outcome, dict) and outcome.get("outcome") == "evaluated":
                        seconds = (outcome.get("train_seconds", 0.0)
                                   + outcome.get("eval_seconds", 0.0))
                        result.finished.append(r.id)
                        line(f"finished {r.id} ({states[r.id]}, {_fmt_seconds(seconds)})")
                    elif isinstance(outcome, dict):  # busy: another process took it first
                        ours_ended.add(r.id)
                        continue
                    else:
                        result.failed[r.id] = _failure(dirs[r.id], outcome)
                        line(f"FAILED {r.id}: {result.failed[r.id]}")
                    remaining.remove(r)
                ex = None
                continue
            if remaining:  # every run left is another process's
                time.sleep(1.0)
    except BaseException:
        if ex is not None and hasattr(ex, "stop"):
            _stop(ex)
        raise
    echo(f"sweep {spec.name}: {len(result.finished)} finished, {len(result.skipped)} done "
         f"before, {len(result.failed)} failed in {_fmt_seconds(time.perf_counter() - t0)}")
    for run_id, message in result.failed.items():
        echo(f"  FAILED {run_id}: {message}")
    return result


def _submit(ex, runs: list, dirs: dict, evaluation: dict, size: int) -> dict:
    """Submit ``runs`` as stacks of at most ``size``: {run id: its job's id}."""
    groups = group_runs([dirs[r.id] for r in runs], size)
    ids = ex.submit(groups, evaluation)
    job_of = {str(d): job_id for group, job_id in zip(groups, ids) for d in group}
    return {r.id: job_of[str(dirs[r.id])] for r in runs}


def _in_jobs(runs: list, ids: list) -> str:
    return f" in {len(ids)} stacked job(s)" if len(ids) < len(runs) else ""


def _wait(ex, count: int) -> dict:
    """The outcomes of an executor's jobs; local jobs are polled, so Ctrl-C and SIGTERM get
    through at once."""
    from wtc.experiments.executors import LocalExecutor

    if not isinstance(ex, LocalExecutor):
        return ex.wait()
    while True:
        outcomes = ex.wait(timeout=0.5)
        if len(outcomes) >= count or not any(t.is_alive() for t in ex._threads):
            return ex.wait()


def _stop(ex) -> None:
    """Terminate the local jobs and wait for them to exit (so their locks are free when the
    sweep returns); checkpoints are atomic, so a stopped run resumes next time."""
    for _ in range(3):  # again: a job may have started between stop() and its bookkeeping
        ex.stop()
        ex.wait(timeout=20.0)
