"""Executors: where a sweep's jobs run. One interface, three engines - local processes, Slurm
through submitit, Ray - all running the same job, :func:`wtc.experiments.jobs.run_group`, on a
group of run folders (a stack trained as one model, or a single run).

    executor = make_executor(parse_executor({"name": "slurm", "partition": "gpu",
                                             "time": "04:00:00", "gpus_per_job": 1}), sweep_dir)
    todo = runs_to_submit(run_dirs, evaluation)     # never a run that is finished or alive
    groups = group_runs(todo, 20)                   # stacks of at most 20 runs
    job_ids = executor.submit(groups, evaluation)   # one job per group; "submitted" per run
    executor.wait()                                 # local and Ray; Slurm returns at once

The sweep never schedules a cluster itself: Slurm and Ray decide where and when jobs run, and
the run folders (job.json, result.json, eval.json, the lock) say what state every run is in,
whatever submitted it (:func:`status_table`).
"""

from __future__ import annotations

import abc
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from wtc.experiments.jobs import (
    lock_held,
    note_requeue,
    read_job,
    run_group,
    update_job,
)
from wtc.experiments.spec import SpecError
from wtc.runfiles import CONFIG, EVAL, LOG, RESULT, SWEEP_LOG, read_json

EXECUTORS = ("local", "slurm", "ray")
# Keys of an [executor] table, per executor (name is common to all).
KEYS = {
    "local": {"jobs", "cpus_per_job", "gpus_per_job"},
    "slurm": {"partition", "account", "time", "gpus_per_job", "cpus_per_job", "mem_gb",
              "array_parallelism", "sbatch", "setup", "max_requeues", "folder", "cluster"},
    "ray": {"address", "cpus_per_job", "gpus_per_job", "max_retries", "retry_exceptions",
            "num_cpus"},
}
# Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_TIME = re.compile(r"^(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)$")


def _missing(package: str, extra: str) -> ImportError:
    return ImportError(f"the {extra} executor needs the {package} package: "
                       f'pip install "wtc[{extra}]"')


def _import_submitit():
    try:
        import submitit
    except ImportError as err:
        raise _missing("submitit", "slurm") from err
    return submitit


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise _missing("ray", "ray") from err
    return ray


# -- the [executor] table ---------------------------------------------------------------------

def slurm_minutes(text) -> int:
    """Minutes in a Slurm time limit (``"04:00:00"``, ``"1-12"``, ``"90"``, ...), rounded up."""
    m = _TIME.match(str(text).strip())
    if not m:
        raise SpecError(f"executor.time {text!r} is not a Slurm time (MM, MM:SS, HH:MM:SS, "
                        "D-HH, D-HH:MM or D-HH:MM:SS)")
    d, dh, dm, ds, mm, ms, hs = m.groups()
    if d is not None:
        seconds = int(d) * 86400 + int(dh) * 3600 + int(dm or 0) * 60 + int(ds or 0)
    elif hs is not None:  # H:M:S
        seconds = int(mm) * 3600 + int(ms) * 60 + int(hs)
    else:  # M or M:S
        seconds = int(mm) * 60 + int(ms or 0)
    if seconds <= 0:
        raise SpecError(f"executor.time {text!r} must be longer than zero")
    return -(-seconds // 60)


@dataclass
class ExecutorConfig:
    name: str = "local"
    options: dict = field(default_factory=dict)


def parse_executor(table: dict | None, device: str | None = None) -> ExecutorConfig:
    """Check a spec's ``[executor]`` table (or the command line's equivalent) before anything is
    submitted. ``device``: the runs' device (``"cpu"`` makes GPUs per job an error)."""
    table = dict(table or {})
    name = table.pop("name", "local")
    if name not in EXECUTORS:
        raise SpecError(f"executor.name {name!r} is not one of {', '.join(EXECUTORS)}")
    unknown = sorted(set(table) - KEYS[name])
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r} in [executor] for {name}; valid: "
                        f"name, {', '.join(sorted(KEYS[name]))}")

    def integer(key, low):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < low):
            raise SpecError(f"executor.{key} must be an integer >= {low}, got {value!r}")

    for key, low in (("jobs", 1), ("cpus_per_job", 1), ("gpus_per_job", 0),
                     ("array_parallelism", 1), ("max_retries", 0), ("max_requeues", 0),
                     ("num_cpus", 1)):
        integer(key, low)
    if "mem_gb" in table:
        mem = table["mem_gb"]
        if isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0:
            raise SpecError(f"executor.mem_gb must be a number > 0, got {mem!r}")
    if "time" in table:
        slurm_minutes(table["time"])
    for key in ("partition", "account", "address", "folder"):
        if key in table and not (isinstance(table[key], str) and table[key]):
            raise SpecError(f"executor.{key} must be a non-empty string, got {table[key]!r}")
    if "cluster" in table and table["cluster"] not in ("slurm", "local", "debug"):
        raise SpecError(f"executor.cluster must be slurm, local or debug (the last two run "
                        f"jobs on this machine, for tests), got {table['cluster']!r}")
    if "sbatch" in table:
        extra = table["sbatch"]
        if not isinstance(extra, dict) or not all(
                isinstance(k, str) and isinstance(v, (str, int, float, bool))
                for k, v in extra.items()):
            raise SpecError("executor.sbatch must be a table of sbatch options, e.g. "
                            f'{{qos = "high", constraint = "a100"}}, got {extra!r}')
    if "setup" in table and not (isinstance(table["setup"], list)
                                 and all(isinstance(s, str) for s in table["setup"])):
        raise SpecError(f"executor.setup must be a list of shell lines, got {table['setup']!r}")
    if "retry_exceptions" in table and not isinstance(table["retry_exceptions"], bool):
        raise SpecError(f"executor.retry_exceptions must be true or false, got "
                        f"{table['retry_exceptions']!r}")
    gpus = table.get("gpus_per_job") or 0
    if gpus and device is not None and str(device).startswith("cpu"):
        raise SpecError(f"executor.gpus_per_job = {gpus} but the runs are on device "
                        f"{device!r}: drop gpus_per_job or train on cuda")
    return ExecutorConfig(name, table)


def make_executor(config: ExecutorConfig, sweep_dir, threads: int | None = None,
                  echo=print) -> Executor:
    options = dict(config.options)
    if config.name == "local":
        return LocalExecutor(threads=threads, echo=echo, **options)
    if config.name == "slurm":
        folder = options.pop("folder", None) or Path(sweep_dir) / ".submitit"
        return SlurmExecutor(folder, threads=threads, **options)
    return RayExecutor(threads=threads, **options)


# -- which runs to submit ---------------------------------------------------------------------

def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True  # exists but not ours / unknown: assume alive
    return True


def job_alive(record: dict) -> bool:
    """Whether the job a ``submitted`` record names may still run. When unsure (another host,
    no squeue) the answer is yes: skipping a run is recoverable, training it twice is not."""
    executor = record.get("executor")
    if executor == "slurm":
        squeue = shutil.which("squeue")
        if squeue is None or not record.get("job_id"):
            return True
        try:
            found = subprocess.run([squeue, "-h", "-j", str(record["job_id"]), "-o", "%T"],
                                   capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return True
        if found.returncode != 0:  # squeue fails for ids it no longer knows
            return "Invalid job id" not in found.stderr
        return bool(found.stdout.strip())
    # local, submitit-local and ray jobs live and die with a process on the submitting host
    if record.get("submit_host") != socket.gethostname():
        return True
    return _pid_alive(record.get("submit_pid"))


def runs_to_submit(run_dirs, evaluation: dict) -> list:
    """The runs neither finished, nor locked by a working job, nor submitted to a job that is
    still alive: what a rerun of the same sweep command submits (never a run twice)."""
    from wtc.experiments.jobs import is_finished

    todo = []
    for run_dir in map(Path, run_dirs):
        if is_finished(run_dir, evaluation) or lock_held(run_dir):
            continue
        record = read_job(run_dir)
        if record and record.get("state") == "submitted" and job_alive(record):
            continue
        todo.append(run_dir)  # new, failed, or its job died (SIGKILL, node lost)
    return todo


def _record_submitted(run_dir, executor: str, job_id: str, submit_pid: int | None = None):
    # A job may start before its submitter gets here: never overwrite the record it wrote.
    def fresh(old):
        return not (old and old.get("job_id") == str(job_id) and old.get("state") != "submitted")

    update_job(run_dir, "submitted", when=fresh, executor=executor, job_id=str(job_id),
               submitted=time.strftime("%Y-%m-%dT%H:%M:%S"), submit_host=socket.gethostname(),
               submit_pid=os.getpid() if submit_pid is None else submit_pid, requeued=False,
               attempt=(read_job(run_dir) or {}).get("attempt", 0))


# -- the executors ----------------------------------------------------------------------------

def as_groups(items) -> list:
    """Run folders or groups of them as groups: a folder alone is a group of one."""
    return [[Path(item)] if isinstance(item, (str, os.PathLike)) else [Path(d) for d in item]
            for item in items]


def per_run(group, value) -> dict:
    """One job's end as ``{run folder: outcome}``: its run_group outcomes (a failed run's as a
    RuntimeError with its reason), or the exception the job ended with, for each of its runs."""
    found = {o.get("run"): o for o in value if isinstance(o, dict)} \
        if isinstance(value, list) else {}
    out = {}
    for run_dir in map(str, group):
        outcome = found.get(run_dir)
        if outcome is None:
            out[run_dir] = value if isinstance(value, BaseException) else RuntimeError(
                "the job ended without an outcome for this run")
        elif outcome.get("outcome") == "failed":
            out[run_dir] = RuntimeError(outcome.get("reason") or "failed")
        else:
            out[run_dir] = outcome
    return out


class Executor(abc.ABC):
    """Submits groups of run folders as jobs that run :func:`run_group`; job states go to each
    run's job.json."""

    name = "executor"

    @abc.abstractmethod
    def submit(self, groups, evaluation: dict) -> list:
        """Submit one job per group (a list of run folders, each holding its config.json, that
        can stack; a bare folder is a group of one); the job ids, one per group."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> dict:
        """Block until the submitted jobs end: {run folder: outcome dict or the exception}."""


def _thread_env(threads: int | None) -> dict:
    n = str(threads or 1)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


class LocalExecutor(Executor):
    """``jobs`` child processes at a time on this machine (``python -m wtc.experiments``),
    GPUs shared out round-robin; each child's output goes to its runs' RUN/sweep.log."""

    name = "local"

    def __init__(self, jobs: int = 1, cpus_per_job: int | None = None, gpus_per_job: int = 0,
                 threads: int | None = None, devices: list | None = None, echo=print):
        self.jobs = int(jobs)
        self.threads = threads or cpus_per_job or max(1, (os.cpu_count() or 1) // self.jobs)
        self.devices = devices
        self.echo = echo
        self._slots = threading.Semaphore(self.jobs)
        self._threads: list = []
        self._results: dict = {}
        self._children: set = set()
        self._lock = threading.Lock()
        self._count = 0
        self.stopping = False

    def submit(self, groups, evaluation: dict) -> list:
        ids = []
        for group in as_groups(groups):
            job_id = f"{os.getpid()}-{self._count}"
            self._count += 1
            for run_dir in group:
                _record_submitted(run_dir, self.name, job_id)
            slot = self._count - 1
            t = threading.Thread(target=self._run, args=(group, evaluation, job_id, slot),
                                 daemon=True)
            t.start()
            self._threads.append(t)
            ids.append(job_id)
        return ids

    def _run(self, group: list, evaluation: dict, job_id: str, slot: int) -> None:
        with self._slots:
            if self.stopping:
                return
            cmd = [sys.executable, "-m", "wtc.experiments", *map(str, group),
                   "--evaluation", json.dumps(evaluation), "--executor", self.name,
                   "--job-id", job_id, "--threads", str(self.threads)]
            if len(group) > 1:
                cmd += ["--tee", SWEEP_LOG]  # the child copies its output to every run's log
            env = {**os.environ, **_thread_env(self.threads)}
            if self.devices:
                device = self.devices[slot % len(self.devices)]
                if device.startswith("cuda:"):
                    env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
            # a file, not a pipe: a child orphaned by a killed sweep goes on writing its log
            with open(group[0] / SWEEP_LOG, "a") as log:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env,
                                        text=True)
                with self._lock:
                    self._children.add(proc)
                stdout, _ = proc.communicate()
                with self._lock:
                    self._children.discard(proc)
            outcomes = []
            for line in stdout.splitlines():
                if line.startswith("{"):
                    try:
                        outcomes.append(json.loads(line))
                    except ValueError:
                        pass
            for run_dir in map(str, group):
                if not any(o.get("run") == run_dir for o in outcomes):
                    record = read_job(run_dir) or {}
                    outcomes.append({"run": run_dir, "outcome": "failed", "reason": record.get(
                        "reason") or f"job exited with {proc.returncode} "
                                      f"(log: {group[0] / SWEEP_LOG})"})
            self._results.update(per_run(group, outcomes))

    def wait(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return dict(self._results)

    def stop(self) -> None:
        """Terminate the running children (checkpoints are atomic: they resume next time)."""
        self.stopping = True
        with self._lock:
            for proc in list(self._children):
                proc.terminate()


class SubmititJob:
    """The pickled callable a Slurm (or submitit-local) job runs, on a group of run folders. Its
    ``checkpoint`` is submitit's protocol: on the time-limit/preemption signal the job requeues
    itself, and the requeued job resumes the runs from their last checkpoint.pt, step-exact,
    because run_group always resumes (nothing but the run folders needs saving)."""

    def __init__(self, run_dirs, evaluation: dict, threads: int | None = None,
                 executor: str = "slurm"):
        groups = as_groups([run_dirs])
        self.run_dirs, self.evaluation = [str(d) for d in groups[0]], dict(evaluation)
        self.threads, self.executor = threads, executor

    def __call__(self) -> list:
        submitit = _import_submitit()
        os.environ.update(_thread_env(self.threads))
        job_id = submitit.JobEnvironment().job_id
        return run_group(self.run_dirs, self.evaluation, executor=self.executor,
                         job_id=job_id, threads=self.threads)

    def checkpoint(self, *args, **kwargs):
        submitit = _import_submitit()
        note_requeue()  # run_group records "submitted (requeued)" as the exit unwinds it
        return submitit.helpers.DelayedSubmission(
            SubmititJob(self.run_dirs, self.evaluation, self.threads, self.executor))


class SlurmExecutor(Executor):
    """Slurm job arrays through submitit: one array task per group of runs, at most
    ``array_parallelism`` at once. ``submit`` returns once Slurm has the jobs; ``wait`` is for
    scripts and tests. ``cluster="local"`` runs the same pickled jobs as local processes
    (submitit's LocalExecutor), which is how the tests exercise this path without Slurm."""

    name = "slurm"

    def __init__(self, folder, partition: str | None = None, account: str | None = None,
                 time: str = "04:00:00", gpus_per_job: int = 0, cpus_per_job: int = 1,
                 mem_gb: float | None = None, array_parallelism: int | None = None,
                 sbatch: dict | None = None, setup: list | None = None,
                 max_requeues: int = 3, cluster: str | None = None,
                 threads: int | None = None):
        submitit = _import_submitit()
        self.folder = Path(folder)
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster,
                                              slurm_max_num_timeout=int(max_requeues))
        self.cluster = self.executor.cluster
        self.threads = threads or cpus_per_job
        params = {"timeout_min": slurm_minutes(time), "cpus_per_task": int(cpus_per_job),
                  "tasks_per_node": 1, "nodes": 1, "name": "wtc"}
        if gpus_per_job:
            params["gpus_per_node"] = int(gpus_per_job)
        if mem_gb:
            params["mem_gb"] = mem_gb
        # slurm_* options are ignored by submitit's local executor
        if partition:
            params["slurm_partition"] = partition
        if account:
            params["slurm_account"] = account
        if array_parallelism:
            params["slurm_array_parallelism"] = int(array_parallelism)
        if sbatch:
            params["slurm_additional_parameters"] = {k: v for k, v in sbatch.items()}
        if setup:
            params["slurm_setup"] = list(setup)
        self.executor.update_parameters(**params)
        self.jobs: list = []  # (group, submitit job)

    def submit(self, groups, evaluation: dict) -> list:
        groups = as_groups(groups)
        if not groups:
            return []
        executor = "slurm" if self.cluster == "slurm" else f"submitit-{self.cluster}"
        calls = [SubmititJob(group, evaluation, self.threads, executor) for group in groups]
        if len(calls) == 1:
            jobs = [self.executor.submit(calls[0])]
        else:
            with self.executor.batch():  # one sbatch --array for all groups
                jobs = [self.executor.submit(call) for call in calls]
        for group, job in zip(groups, jobs):
            # submitit-local jobs die with their controller, whose pid is the job id
            pid = int(job.job_id) if executor == "submitit-local" else None
            for run_dir in group:
                _record_submitted(run_dir, executor, job.job_id, submit_pid=pid)
            self.jobs.append((group, job))
        return [job.job_id for job in jobs]

    def wait(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        out = {}
        for group, job in self.jobs:
            while not job.done():
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job.job_id} ({group[0]}) still running")
                time.sleep(0.5)
            try:
                value = job.result()
            except Exception as err:  # noqa: BLE001 - reported per run, the others go on
                value = err
            out.update(per_run(group, value))
        return out


def _ray_job(run_dirs: list, evaluation: dict, threads: int | None) -> list:
    import ray

    os.environ.update(_thread_env(threads))
    job_id = ray.get_runtime_context().get_task_id()
    return run_group(run_dirs, evaluation, executor="ray", job_id=job_id, threads=threads)


class RayExecutor(Executor):
    """One Ray task per group of runs with ``cpus_per_job``/``gpus_per_job`` resources, retried
    up to ``max_retries`` times when its worker dies (and, with ``retry_exceptions``, on an
    exception that escapes the job; a run that fails is recorded ``failed`` instead, and
    retried by the next ``wtc sweep``). ``address``: ``"auto"`` or ``"ray://host:10001"`` for a
    running cluster (every node needs wtc installed and the sweep folder mounted at the same
    path); ``None`` starts a local one with ``num_cpus`` CPUs. Tasks are owned by this process:
    they end when it does."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_job: int = 1, gpus_per_job: int = 0,
                 max_retries: int = 3, retry_exceptions: bool = True,
                 num_cpus: int | None = None, threads: int | None = None):
        ray = _import_ray()
        self.ray = ray
        if not ray.is_initialized():
            kwargs = {"address": address, "include_dashboard": False,
                      "ignore_reinit_error": True}
            if address is None and num_cpus:
                kwargs["num_cpus"] = int(num_cpus)
            ray.init(**kwargs)
        self.threads = threads or cpus_per_job
        self.task = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job,
                               max_retries=int(max_retries),
                               retry_exceptions=bool(retry_exceptions))(_ray_job)
        self.refs: list = []  # (group, object ref)

    def submit(self, groups, evaluation: dict) -> list:
        ids = []
        for group in as_groups(groups):
            ref = self.task.remote([str(d) for d in group], dict(evaluation), self.threads)
            job_id = ref.task_id().hex()
            for run_dir in group:
                _record_submitted(run_dir, self.name, job_id)
            self.refs.append((group, ref))
            ids.append(job_id)
        return ids

    def wait(self, timeout: float | None = None) -> dict:
        out = {}
        for group, ref in self.refs:
            try:
                value = self.ray.get(ref, timeout=timeout)
            except Exception as err:  # noqa: BLE001 - reported per run
                value = err
            out.update(per_run(group, value))
        return out


# -- status -----------------------------------------------------------------------------------

def _log_tail(run_dir: Path, lines: int = 5) -> str:
    for name in (SWEEP_LOG, LOG):
        try:
            text = (run_dir / name).read_text()
        except OSError:
            continue
        found = [ln for ln in text.splitlines() if ln.strip()]
        if found:
            return "\n".join(found[-lines:])
    return ""


def _last_log_record(run_dir: Path) -> dict | None:
    try:
        with open(run_dir / LOG, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def run_status(run_dir, evaluation: dict | None = None) -> dict:
    """One run's state from its files: ``evaluated`` and ``trained`` from result.json and
    eval.json, ``running`` only while its lock is held, ``interrupted`` for a job that died
    without a word (SIGKILL, a lost node), else what job.json says (``pending`` without one)."""
    from wtc.experiments.jobs import eval_complete, is_trained

    run_dir = Path(run_dir)
    record = read_job(run_dir) or {}
    config = read_json(run_dir / CONFIG) or {}
    steps = config.get("steps")
    last = _last_log_record(run_dir) or {}
    if evaluation is not None:
        evaluated = eval_complete(run_dir, evaluation)
    else:
        evaluated = isinstance((read_json(run_dir / EVAL) or {}).get("metrics"), dict)
    trained = is_trained(run_dir, steps)
    if lock_held(run_dir):
        state = "running"
    elif trained and evaluated:
        state = "evaluated"
    elif record.get("state") in ("running", "trained", "evaluated"):
        state = "interrupted"  # it said it was working, but holds no lock: it died
    elif trained and record.get("state") != "failed":
        state = "trained"
    else:
        state = record.get("state", "pending")
    step = steps if trained else last.get("step", 0)
    seconds = None
    if "train_seconds" in record:
        seconds = record["train_seconds"] + record.get("eval_seconds", 0.0)
    return {"run": str(run_dir), "state": state, "step": step, "steps": steps,
            "steps_per_s": last.get("steps_per_s"), "seconds": seconds,
            "executor": record.get("executor"), "job_id": record.get("job_id"),
            "attempt": record.get("attempt"), "reason": record.get("reason"),
            "result": read_json(run_dir / RESULT)}


def _fmt(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status_table(sweep_dir, evaluation: dict | None = None, tail: int = 5) -> dict:
    """Every run of a sweep folder (each folder holding a config.json) read from its files:
    ``{"runs": [run_status...], "counts": {state: n}, "failures": [{run, reason, log}],
    "seconds_per_run": mean of finished runs or None, "eta_seconds": or None, "text": table}``.
    The ETA divides the remaining work (unfinished runs' steps at the measured rate, plus the
    mean evaluation time) by the number of runs working now (at least one)."""
    sweep_dir = Path(sweep_dir)
    runs = [run_status(p.parent, evaluation) for p in sorted(sweep_dir.rglob(CONFIG))
            if not any(part.startswith(".") for part in p.relative_to(sweep_dir).parts)]
    counts: dict = {}
    for r in runs:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    finished = [r["seconds"] for r in runs if r["state"] == "evaluated" and r["seconds"]]
    per_run = sum(finished) / len(finished) if finished else None
    rates = [r["steps_per_s"] for r in runs if r["steps_per_s"]]
    rate = sum(rates) / len(rates) if rates else None
    remaining = 0.0
    known = True
    for r in runs:
        if r["state"] == "evaluated":
            continue
        if rate and r["steps"]:
            remaining += (r["steps"] - (r["step"] or 0)) / rate
        elif per_run:
            remaining += per_run
        else:
            known = False
    working = max(1, counts.get("running", 0))
    eta = remaining / working if known and (rate or per_run) else None
    failures = [{"run": r["run"], "reason": r["reason"],
                 "log": _log_tail(Path(r["run"]), tail)} for r in runs if r["state"] == "failed"]
    lines = [f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    if per_run:
        lines.append(f"time per run: {_fmt(per_run)}")
    if eta is not None and counts.get("evaluated", 0) < len(runs):
        lines.append(f"ETA: ~{_fmt(eta)} at {working} run(s) at once")
    lines.append(f"{'state':<12} {'step':>14} {'time':>7}  job  run")
    for r in runs:
        step = f"{r['step'] or 0}/{r['steps']}"
        took = _fmt(r["seconds"]) if r["seconds"] else "-"
        job = f"{r['executor']}:{r['job_id']}" if r["job_id"] else "-"
        lines.append(f"{r['state']:<12} {step:>14} {took:>7}  {job}  "
                     f"{Path(r['run']).relative_to(sweep_dir)}")
    for f in failures:
        lines.append(f"\nFAILED {Path(f['run']).relative_to(sweep_dir)}: {f['reason']}")
        if f["log"]:
            lines.append("  " + f["log"].replace("\n", "\n  "))
    return {"runs": runs, "counts": counts, "failures": failures, "seconds_per_run": per_run,
            "eta_seconds": eta, "text": "\n".join(lines)}
