"""`wtc sweep`: every (data set, model, strength, seed) of a spec as its own ``wtc train`` and
``wtc eval``, several at once, resumable.

A sweep folder holds ``sweep.json`` (the spec; a folder never mixes two specs) and one run
folder per run, ``DATA/MODEL/STRENGTH=VALUE/seed=SEED`` (with ``/FIELD=VALUE`` before the seed for
each of the spec's ``[axes]``). Each run's full TrainConfig is written to ``RUN/config.json``,
and its child is ``wtc train --config RUN/config.json``. A run is skipped when its training and
its evaluation are both complete, evaluated when only the evaluation is missing, and resumed
from its checkpoint when training stopped part-way, so killing and restarting a sweep loses at
most the steps since each run's last checkpoint. Each run folder is locked while a process
works on it (the lock is inherited by the child processes, so even the children of a killed
sweep keep it until they exit); a restarted sweep waits for such runs instead of racing them.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from wtc.experiments.spec import SWEPT, SweepSpec, spec_from_json
from wtc.runfiles import (
    CHECKPOINT,
    CONFIG,
    EVAL,
    LOCK,
    RESULT,
    SWEEP_LOG,
    read_json,
    write_json_atomic,
)

SWEEP_FILE = "sweep.json"
EVENTS_FILE = "sweep-events.jsonl"
FORMAT = "wtc-sweep-v1"


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
        axes = "".join(f"/{name}={_axis_text(value)}" for name, value in self.axes)
        return f"{self.data}/{self.model}/{self.strength}={self.value:g}{axes}/seed={self.seed}"

    @property
    def strengths(self) -> dict:
        return {**dict(self.fixed), self.strength: self.value}


def _axis_text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(_axis_text(v) for v in value)
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


def expected_eval(spec: SweepSpec) -> dict:
    from wtc.metrics.evaluate import protocol_settings

    repeats, sizes = protocol_settings(spec.eval.protocol, spec.eval.repeats, 1.0,
                                       spec.eval.sizes)
    return {"protocol": spec.eval.protocol, "repeats": repeats, "sample_sizes": sizes,
            "metrics": list(spec.eval.metrics)}


def eval_complete(evaluation: dict | None, expected: dict) -> bool:
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("metrics"), dict):
        return False
    return (evaluation.get("protocol") == expected["protocol"]
            and evaluation.get("repeats") == expected["repeats"]
            and evaluation.get("sample_sizes") == expected["sample_sizes"]
            and all(m in evaluation["metrics"] for m in expected["metrics"]))


def is_trained(spec: SweepSpec, run_dir: Path) -> bool:
    """Training finished: result.json records the spec's number of steps."""
    result = read_json(run_dir / RESULT)
    return isinstance(result, dict) and result.get("steps") == spec.steps


def run_state(spec: SweepSpec, run_dir: Path) -> str:
    """``done``, ``evaluate`` (trained, not evaluated), ``resume`` (a checkpoint to continue),
    ``restart`` (files but no checkpoint: killed before its first one) or ``new``."""
    if is_trained(spec, run_dir):
        if eval_complete(read_json(run_dir / EVAL), expected_eval(spec)):
            return "done"
        return "evaluate"
    if (run_dir / CHECKPOINT).exists():
        return "resume"
    if run_dir.exists() and any(p.name != LOCK for p in run_dir.iterdir()):
        return "restart"
    return "new"


def train_command(spec: SweepSpec, run: Run, run_dir: Path, device: str, state: str) -> list:
    """The run's ``wtc train``: everything but the folder and what to do with it is in the
    config.json that :func:`write_run_config` wrote (the device too)."""
    cmd = [sys.executable, "-m", "wtc", "train", "--config", str(Path(run_dir) / CONFIG),
           "--out", str(run_dir)]
    if state == "resume":
        cmd.append("--resume")
    elif state == "restart":
        cmd.append("--overwrite")  # no checkpoint: nothing to keep
    return cmd


def eval_command(spec: SweepSpec, run_dir: Path, device: str) -> list:
    ev = spec.eval
    cmd = [sys.executable, "-m", "wtc", "eval", str(run_dir), "--protocol", ev.protocol,
           "--device", device, "--metrics", *ev.metrics]
    if ev.repeats is not None:
        cmd += ["--repeats", str(ev.repeats)]
    for key, value in sorted(ev.sizes.items()):
        cmd += ["--size", f"{key}={value}"]
    return cmd


@dataclass
class SweepResult:
    runs: int
    skipped: list = field(default_factory=list)
    finished: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)  # run id -> reason

    @property
    def ok(self) -> bool:
        return not self.failed


def default_devices() -> list:
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def prepare(spec: SweepSpec, out: Path) -> None:
    """Record the spec in ``out`` or check it is the one already there; load every data set
    once (a missing file fails here, before anything runs; procedural sets get cached)."""
    from wtc.data import DataSetError, load

    out.mkdir(parents=True, exist_ok=True)
    path = out / SWEEP_FILE
    current = spec.to_json()
    saved = read_json(path)
    if path.exists():
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            raise SweepError(f"{path} is not a wtc sweep record; use another --out")
        # through SweepSpec, so a record of an older wtc (without newer keys) compares equal
        try:
            old = spec_from_json(saved["spec"]).to_json()
        except (TypeError, KeyError, AttributeError):  # a damaged record: compare as written
            old = saved["spec"]
        diffs = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
        if diffs:
            raise SweepError(f"{out} holds a sweep of another spec (it differs in "
                             f"{', '.join(diffs)}); use another --out, or the spec recorded "
                             f"in {path}")
    for name in spec.data:
        try:
            load(name, root=spec.data_root, **spec.data_options.get(name, {}))
        except DataSetError as err:
            raise SweepError(f"data set {name}: {err}") from err
    if not path.exists():
        write_json_atomic({"format": FORMAT, "spec": current}, path)


def load_sweep(out) -> tuple[SweepSpec, list[Run]]:
    """The spec recorded in a sweep folder and its runs."""
    path = Path(out) / SWEEP_FILE
    saved = read_json(path)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise SweepError(f"{path} is missing or not a wtc sweep record: is {out} a sweep folder?")
    spec = spec_from_json(saved["spec"]).validate()
    return spec, expand(spec)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class _Sweep:
    def __init__(self, spec, out, runs, jobs, devices, threads, echo):
        self.spec, self.out, self.runs, self.jobs = spec, out, runs, jobs
        self.threads, self.echo = threads, echo
        self.slots = [devices[i % len(devices)] for i in range(jobs)]
        self.free = list(self.slots)
        self.lock = threading.Lock()
        self.available = threading.Condition(self.lock)
        self.children: set = set()
        self.stopping = False
        self.result = SweepResult(runs=len(runs))
        self.running = 0
        self.t0 = time.perf_counter()
        self.durations: list = []
        self.todo = 0

    def event(self, **record) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
        with open(self.out / EVENTS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def line(self, text: str) -> None:
        r = self.result
        done = len(r.skipped) + len(r.finished) + len(r.failed)
        elapsed = time.perf_counter() - self.t0
        left = ""
        if self.durations:
            remaining = self.todo - len(self.durations)
            per = sum(self.durations) / len(self.durations)
            left = f" · ~{_fmt_seconds(max(remaining, 0) * per / self.jobs)} left"
        self.echo(f"[{done}/{r.runs}] {text} · {self.running} running · {len(r.failed)} failed "
                  f"· {_fmt_seconds(elapsed)} elapsed{left}")

    def _child(self, cmd, run_dir: Path, device: str, lock_fd: int) -> int:
        if self.stopping:
            return -1
        env = dict(os.environ)
        if device == "cpu":
            for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env[key] = str(self.threads)
        with open(run_dir / SWEEP_LOG, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    pass_fds=(lock_fd,))
            with self.lock:
                self.children.add(proc)
            try:
                return proc.wait()
            finally:
                with self.lock:
                    self.children.discard(proc)

    def _acquire_slot(self) -> str:
        with self.available:
            while not self.free:
                self.available.wait()
            return self.free.pop()

    def _release_slot(self, device: str) -> None:
        with self.available:
            self.free.append(device)
            self.available.notify()

    def do(self, run: Run) -> None:
        if self.stopping:
            return
        run_dir = self.out / run.id
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.echo(f"{run.id} is being worked on by another process (an earlier sweep's "
                          "child?); waiting for it")
                fcntl.flock(fd, fcntl.LOCK_EX)
            state = run_state(self.spec, run_dir)
            if state == "done":
                with self.lock:
                    self.result.skipped.append(run.id)
                    self.todo -= 1
                self.line(f"done before: {run.id}")
                return
            device = self._acquire_slot()
            if self.stopping:
                self._release_slot(device)
                return
            with self.lock:
                self.running += 1
            t0 = time.perf_counter()
            self.event(run=run.id, start=state, device=device)
            try:
                if state != "evaluate":
                    write_run_config(self.spec, run, run_dir, device)
                    code = self._child(train_command(self.spec, run, run_dir, device, state),
                                       run_dir, device, fd)
                    if code != 0:
                        return self._fail(run, run_dir, f"wtc train exited with {code}")
                code = self._child(eval_command(self.spec, run_dir, device), run_dir, device, fd)
                if code != 0:
                    return self._fail(run, run_dir, f"wtc eval exited with {code}")
            finally:
                with self.lock:
                    self.running -= 1
                self._release_slot(device)
            seconds = time.perf_counter() - t0
            with self.lock:
                self.result.finished.append(run.id)
                self.durations.append(seconds)
            self.event(run=run.id, finished=True, seconds=seconds)
            self.line(f"finished {run.id} ({state}, {_fmt_seconds(seconds)})")
        finally:
            os.close(fd)

    def _fail(self, run: Run, run_dir: Path, reason: str) -> None:
        if self.stopping:
            return
        try:
            lines = [ln for ln in (run_dir / SWEEP_LOG).read_text().splitlines() if ln.strip()]
            detail = lines[-1] if lines else ""
        except OSError:
            detail = ""
        message = f"{reason}: {detail} (log: {run_dir / SWEEP_LOG})"
        with self.lock:
            self.result.failed[run.id] = message
            self.todo -= 1
        self.event(run=run.id, failed=message)
        self.line(f"FAILED {run.id}: {message}")

    def stop(self) -> None:
        self.stopping = True
        with self.lock:
            children = list(self.children)
        for proc in children:
            proc.terminate()  # checkpoints are atomic: a run stopped here resumes next time


def run_sweep(spec: SweepSpec, out, jobs: int = 1, devices: list | None = None,
              threads: int | None = None, echo=print) -> SweepResult:
    """Train and evaluate every run of ``spec`` under ``out``, ``jobs`` at a time on
    ``devices`` (cycled over the job slots; default: every GPU, else the CPU). CPU jobs get
    ``threads`` threads each (default: the cores divided among the jobs)."""
    out = Path(out).resolve()  # the children run elsewhere: every path they get is absolute
    spec.validate()
    if int(jobs) < 1:
        raise SweepError(f"jobs must be >= 1, got {jobs}")
    devices = list(devices) if devices else default_devices()
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // int(jobs))
    prepare(spec, out)
    runs = expand(spec)
    sweep = _Sweep(spec, out, runs, int(jobs), devices, threads, echo)
    states = {}
    for run in runs:
        state = run_state(spec, out / run.id)
        states[state] = states.get(state, 0) + 1
    sweep.todo = len(runs)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    echo(f"sweep {spec.name}: {len(runs)} runs ({summary}) on {', '.join(sweep.slots)} "
         f"({jobs} at a time) -> {out}")
    pool = ThreadPoolExecutor(max_workers=int(jobs) + 1)
    try:
        futures = [pool.submit(sweep.do, run) for run in runs]
        for future in futures:
            while True:
                try:
                    future.result(timeout=0.5)  # a short wait keeps Ctrl-C responsive
                    break
                except FutureTimeout:  # not the builtin TimeoutError before Python 3.11
                    continue
    except BaseException:
        sweep.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    r = sweep.result
    echo(f"sweep {spec.name}: {len(r.finished)} finished, {len(r.skipped)} done before, "
         f"{len(r.failed)} failed in {_fmt_seconds(time.perf_counter() - sweep.t0)}")
    for run_id, message in r.failed.items():
        echo(f"  FAILED {run_id}: {message}")
    return r
