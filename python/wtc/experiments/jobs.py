"""What one job does on any executor (local processes, Slurm through submitit, Ray): lock its
run folders, train them - a group of runs that differ only in seed and strengths as one stacked
model (:func:`wtc.train.train_runs`), resuming each from its checkpoint - evaluate each trained
run, and record every step of that in each folder's ``job.json``.

The run folder is the single source of truth: a job needs nothing but the folders' paths and the
evaluation settings, so any process on any node can pick runs up, and a requeued or resubmitted
job continues where the last one stopped. A stack changes how fast runs train, never what a run
folder holds: each keeps its own config.json, log, checkpoint, result and evaluation exactly as
if trained alone, so ``wtc eval``, ``wtc sweep --status`` and ``wtc report`` see plain runs.
:func:`group_runs` says which folders can share a job (:func:`can_stack`: equal configs but for
the seed and the strengths) and splits them into stacks of at most N.

``job.json`` (written atomically; ``format`` = ``wtc-job-v1``) holds the run's latest state:

    pending    the sweep created the run folder; nothing submitted yet
    submitted  executor, job_id, submitted (time), submit_host, submit_pid; requeued: true
               when a preempted/timed-out job put itself back in the queue
    running    host, pid, started (time), attempt (1, 2, ... one per start of the job),
               stack (the number of runs the job works on), resumed_from (the checkpoint's
               step, when it resumed one)
    trained    train_seconds (the wall time of the training call: a stack's runs share it)
    evaluated  train_seconds, eval_seconds, finished (time)
    failed     reason (one line), step (where training stopped, when known), traceback (its
               last lines, when an exception was raised), failed (time)

One run of a stack failing (a NaN loss, a bad config.json, its evaluation) is recorded as that
run's ``failed``; the other runs go on to their evaluation.

``executor``, ``job_id``, ``submitted`` and ``attempt`` are kept from state to state (``host``,
``pid``, ``started`` from running on), and every record has ``updated``.
The files themselves (result.json, eval.json) decide whether a run is finished; job.json says
who is working on it and what went wrong.

Locking (what it guarantees where)
----------------------------------
A job holds ``fcntl.flock(RUN/.lock, LOCK_EX)`` on each of its runs for as long as it works on
them, and takes it without blocking: a run whose lock stays held for a short grace period is
left alone with the outcome ``busy`` (the job goes on with the others), so a run is never
trained by two processes at once. The kernel drops the
lock when the holder exits, however it exits (SIGKILL included), so a lock is never stale.

- Local file systems: exclusive between all processes of the machine.
- NFS: the Linux NFS client (since 2.6.12) emulates flock with a whole-file POSIX (fcntl)
  byte-range lock, which the server arbitrates, so the lock is exclusive across every client
  that mounts the export: NFSv4 servers enforce it themselves (the lock is leased: a client
  that loses contact with the server for longer than the lease, ~90 s, loses its locks);
  NFSv3 needs the lockd/statd (NLM) service on server and clients, and a mount with ``nolock``
  or ``local_lock=flock|all`` makes the lock node-local again.
- Lustre: exclusive across nodes only with the ``flock`` mount option; with ``localflock`` it
  holds only between processes of one node, and with neither (``noflock``) flock fails with
  an error (ENOSYS), which a job reports as ``failed`` rather than running unlocked.
- Any other shared file system: whatever its flock semantics are; check them before running
  two sweep commands on one folder from different nodes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from wtc.runfiles import (
    CHECKPOINT,
    CONFIG,
    EVAL,
    JOB,
    JOB_LOCK,
    LOCK,
    RESULT,
    read_json,
    write_json_atomic,
)

# (the rule of what stacks - can_stack, stack_key, stacked_fields - lives beside the trainer)
from wtc.train import can_stack, stack_key, stacked_fields  # noqa: F401

FORMAT = "wtc-job-v1"
STATES = ("pending", "submitted", "running", "trained", "evaluated", "failed")
# Fields that identify the job working on a run; kept from one state to the next (where it
# ran only until the run is submitted again).
_KEPT = ("executor", "job_id", "submitted", "attempt")
_WHERE = ("host", "pid", "started", "resumed_from", "stack")


class RunBusy(RuntimeError):
    """The run's lock is held: another process is working on it."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# -- the run lock -----------------------------------------------------------------------------

class RunLock:
    """``RUN/.lock`` held with flock (see the module's note on NFS and Lustre).

    ``acquire(wait)`` tries without blocking and retries for ``wait`` seconds (a resubmit that
    probes the lock holds it for an instant; a job starting in that instant must not give up),
    then raises :class:`RunBusy`."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise  # ENOSYS/ENOLCK: this file system cannot lock; never run unlocked
        self.fd = fd
        return True

    def acquire(self, wait: float = 0.0) -> RunLock:
        deadline = time.monotonic() + wait
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise RunBusy(f"{self.path.parent} is already being worked on by another "
                              f"process (its lock {self.path} is held)")
            time.sleep(0.2)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_held(run_dir) -> bool:
    """Whether another process holds the run's lock now (probes it for an instant)."""
    if not (Path(run_dir) / LOCK).exists():
        return False
    lock = RunLock(run_dir)
    if lock.try_acquire():
        lock.release()
        return False
    return True


# -- job.json ---------------------------------------------------------------------------------

def read_job(run_dir) -> dict | None:
    record = read_json(Path(run_dir) / JOB)
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def update_job(run_dir, state: str | None = None, *, when=None, **fields) -> dict | None:
    """Write the run's job record: the previous record's job identity, then ``fields``.

    ``when(previous record or None) -> bool`` decides under the job.json lock whether to write
    at all (a submitter must not overwrite the record of a job that already started)."""
    if state is not None and state not in STATES:
        raise ValueError(f"unknown job state {state!r}; valid: {', '.join(STATES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / JOB_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        old = read_job(run_dir)
        if when is not None and not when(old):
            return None
        record = {"format": FORMAT}
        kept = _KEPT + (_WHERE if state not in ("pending", "submitted") else ())
        record.update({k: old[k] for k in kept if old and k in old})
        record["state"] = state if state is not None else (old or {}).get("state", "pending")
        record.update(fields)
        record["updated"] = _now()
        write_json_atomic(record, run_dir / JOB)
        return record
    finally:
        os.close(fd)


def mark_pending(run_dirs) -> None:
    """Record ``pending`` for runs that have no job record yet (what a sweep does when it
    creates the run folders)."""
    for run_dir in run_dirs:
        update_job(run_dir, "pending", when=lambda old: old is None)


# -- what is finished -------------------------------------------------------------------------

def read_config(run_dir):
    """The run's ``config.json`` as a :class:`wtc.train.TrainConfig`."""
    from wtc.train import TrainConfig

    path = Path(run_dir) / CONFIG
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise FileNotFoundError(f"{path} is missing or not JSON: the sweep writes every run's "
                                "config before submitting it")
    raw = dict(raw)
    if "adam_betas" in raw:
        raw["adam_betas"] = tuple(raw["adam_betas"])  # JSON has lists; the config a tuple
    return TrainConfig(**raw)


def expected_evaluation(evaluation: dict) -> dict:
    """The settings an ``eval.json`` must record to count as this evaluation."""
    from wtc.metrics.evaluate import protocol_settings

    protocol = evaluation.get("protocol", "paper")
    repeats, sizes = protocol_settings(protocol, evaluation.get("repeats"), 1.0,
                                       evaluation.get("sizes") or {})
    return {"protocol": protocol, "repeats": repeats, "sample_sizes": sizes,
            "metrics": list(evaluation.get("metrics") or [])}


def eval_matches(found, want: dict) -> bool:
    """An eval.json record ``found`` holds every metric of :func:`expected_evaluation`'s
    ``want``, computed with its settings."""
    if not isinstance(found, dict) or not isinstance(found.get("metrics"), dict):
        return False
    return (found.get("protocol") == want["protocol"] and found.get("repeats") == want["repeats"]
            and found.get("sample_sizes") == want["sample_sizes"]
            and all(m in found["metrics"] for m in want["metrics"]))


def eval_complete(run_dir, evaluation: dict) -> bool:
    return eval_matches(read_json(Path(run_dir) / EVAL), expected_evaluation(evaluation))


def is_trained(run_dir, steps: int | None = None) -> bool:
    """``result.json`` records the config's number of steps."""
    run_dir = Path(run_dir)
    if steps is None:
        config = read_json(run_dir / CONFIG)
        steps = config.get("steps") if isinstance(config, dict) else None
    result = read_json(run_dir / RESULT)
    return steps is not None and isinstance(result, dict) and result.get("steps") == steps


def is_finished(run_dir, evaluation: dict) -> bool:
    return is_trained(run_dir) and eval_complete(run_dir, evaluation)


# -- stacks -----------------------------------------------------------------------------------

def stacks(configs, size: int | None = None) -> list:
    """``configs`` split into stacks: lists of indices, each of configs that can stack (equal
    :func:`stack_key`), at most ``size`` long (None: no limit), in first-appearance order."""
    if size is not None and int(size) < 1:
        raise ValueError(f"a stack holds at least 1 run, got size {size}")
    by_key: dict = {}
    for i, config in enumerate(configs):
        by_key.setdefault(stack_key(config), []).append(i)
    out = []
    for indices in by_key.values():
        step = int(size) if size else len(indices)
        out.extend(indices[k:k + step] for k in range(0, len(indices), step))
    return out


def group_runs(run_dirs, size: int | None = None) -> list:
    """Run folders grouped into stacks of at most ``size`` by their config.json (see
    :func:`stacks`); a folder whose config cannot be read is a group of its own (its job
    reports why)."""
    run_dirs = [Path(d) for d in run_dirs]
    readable, alone = [], []
    for d in run_dirs:
        try:
            readable.append((d, read_config(d)))
        except (OSError, TypeError, ValueError):
            alone.append([d])
    groups = [[readable[i][0] for i in part] for part in
              stacks([config for _, config in readable], size)]
    return groups + alone


# -- the job ----------------------------------------------------------------------------------

# Set by an executor's preemption handler (submitit's checkpoint()) in this process: the
# SystemExit that follows is a requeue, not a failure.
_requeued = False


def note_requeue() -> None:
    global _requeued
    _requeued = True


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_group(run_dirs, evaluation: dict, *, executor: str | None = None,
              job_id: str | None = None, threads: int | None = None, device: str | None = None,
              wait: float = 30.0, cuda_graph: bool = False) -> list:
    """Train (or resume) a group of run folders as one stack, then evaluate each; what every
    executor's job calls. A group of one is a plain run.

    ``evaluation``: ``{"protocol", "metrics", "repeats", "sizes"}`` as for
    :func:`wtc.metrics.evaluate`. Returns one outcome per run folder, in order:
    ``{"run", "outcome", "trained", "evaluated", ...}`` with outcome ``evaluated`` (finished;
    ``trained``/``evaluated`` say whether this job did that work), ``busy`` (another process
    holds its lock; nothing was done to it) or ``failed`` (``reason``, ``step``; recorded in its
    job.json, while the others go on). An interruption (Ctrl-C, SIGTERM, a preemption's
    SystemExit) is recorded for every unfinished run and raised."""
    global _requeued
    from wtc.plugins import load_plugins

    load_plugins()  # a job on another process or node sees the user's models, metrics, data
    run_dirs = [Path(d) for d in run_dirs]
    outcomes = {d: {"run": str(d), "trained": False, "evaluated": False} for d in run_dirs}
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    locks = {}
    deadline = time.monotonic() + wait  # one grace period for the whole group
    for d in run_dirs:
        try:
            locks[d] = RunLock(d).acquire(max(0.0, deadline - time.monotonic()))
        except RunBusy as err:
            outcomes[d].update(outcome="busy", reason=str(err))
    unsettled = list(locks)  # locked runs whose outcome is not decided yet

    def fail(d, reason, step=None, trace=None):
        update_job(d, "failed", reason=reason, step=step,
                   traceback=trace if trace is not None else "", failed=_now())
        outcomes[d].update(outcome="failed", reason=reason, step=step)
        unsettled.remove(d)

    try:
        _requeued = False
        previous = {d: read_job(d) or {} for d in locks}
        identity = {}
        if executor:
            identity["executor"] = executor
        if job_id:
            identity["job_id"] = str(job_id)
        for d in locks:
            update_job(d, "running", host=socket.gethostname(), pid=os.getpid(),
                       started=_now(), attempt=int(previous[d].get("attempt", 0)) + 1,
                       resumed_from=None, stack=len(locks), **identity)
        configs, todo = {}, []
        for d in list(unsettled):
            try:  # one run's bad config.json fails that run, not its stack
                config = read_config(d)
                if device:
                    config.device = device
                config.validate()
            except Exception as err:  # noqa: BLE001 - any error of one run is its failure
                fail(d, f"{type(err).__name__}: {err}".splitlines()[0],
                     trace=_tail(traceback.format_exc()))
                continue
            configs[d] = config
            if not is_trained(d, config.steps):
                todo.append(d)
        train_seconds = {d: float(previous[d].get("train_seconds", 0.0)) for d in configs}
        for part in stacks([configs[d] for d in todo]):  # one part unless a config was edited
            runs = [todo[i] for i in part]
            for d in runs:
                step = checkpoint_step(d)
                if step is not None:
                    update_job(d, "running", resumed_from=step)
            t0 = time.perf_counter()
            from wtc.train import train_runs

            # resume=True for every run: it continues a checkpoint, and a run without one
            # (new, or killed before its first) starts from step 0 in its own folder
            results = train_runs([configs[d] for d in runs], runs, resume=True,
                                 cuda_graph=cuda_graph)
            seconds = time.perf_counter() - t0  # the stack's wall time, shared by its runs
            for d, result in zip(runs, results, strict=True):
                if result.get("status") == "trained":
                    train_seconds[d] = seconds
                    outcomes[d]["trained"] = True
                else:
                    fail(d, str(result.get("reason") or "training failed"), result.get("step"))
        for d in list(unsettled):
            update_job(d, "trained", train_seconds=train_seconds[d])
            eval_seconds = float(previous[d].get("eval_seconds", 0.0))
            if not eval_complete(d, evaluation):
                t0 = time.perf_counter()
                try:
                    write_json_atomic(evaluate_run(d, evaluation, device), d / EVAL)
                except Exception as err:  # noqa: BLE001 - this run failed, the rest go on
                    fail(d, f"evaluation: {type(err).__name__}: {err}".splitlines()[0],
                         trace=_tail(traceback.format_exc()))
                    continue
                eval_seconds = time.perf_counter() - t0
                outcomes[d]["evaluated"] = True
            update_job(d, "evaluated", train_seconds=train_seconds[d],
                       eval_seconds=eval_seconds, finished=_now())
            outcomes[d].update(outcome="evaluated", train_seconds=train_seconds[d],
                               eval_seconds=eval_seconds)
            unsettled.remove(d)
        return [outcomes[d] for d in run_dirs]
    except BaseException as err:
        for d in unsettled:
            if _requeued:  # preempted or timed out: the executor puts the job back in the queue
                update_job(d, "submitted", requeued=True)
            else:
                reason = (f"interrupted ({type(err).__name__})"
                          if isinstance(err, (KeyboardInterrupt, SystemExit))
                          else f"{type(err).__name__}: {err}".splitlines()[0])
                update_job(d, "failed", reason=reason, step=None,
                           traceback=_tail(traceback.format_exc()), failed=_now())
        raise
    finally:
        for lock in locks.values():
            lock.release()


class RunFailed(RuntimeError):
    """A run of :func:`run_job` failed; its job.json holds the reason and traceback."""


def run_job(run_dir, evaluation: dict, **kwargs) -> dict:
    """:func:`run_group` of one run folder: its outcome (``evaluated`` or ``busy``), or
    :class:`RunFailed` with the reason job.json records."""
    out = run_group([run_dir], evaluation, **kwargs)[0]
    if out["outcome"] == "failed":
        raise RunFailed(out["reason"])
    return out


def checkpoint_step(run_dir) -> int | None:
    """The step of the run's checkpoint.pt, or None (none, or unreadable: training says why).
    Memory-mapped, so only the step is read."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        import torch

        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("step")
    except Exception:  # noqa: BLE001 - a damaged checkpoint is the trainer's to report
        return None
    return step if isinstance(step, int) else None


def evaluate_run(run_dir, evaluation: dict, device: str | None = None) -> dict:
    """``wtc eval``'s record for a run folder's last checkpoint."""
    import platform

    import numpy as np
    import scipy
    import sklearn
    import torch

    from wtc.metrics import evaluate
    from wtc.train import load_run

    model, config, dataset = load_run(run_dir, device=device)
    kwargs = {"protocol": evaluation.get("protocol", "paper"),
              "repeats": evaluation.get("repeats"), "sizes": evaluation.get("sizes") or None}
    if evaluation.get("metrics"):
        kwargs["metrics"] = list(evaluation["metrics"])
    result = evaluate(model, dataset, **kwargs)
    result["versions"] = {"torch": torch.__version__, "numpy": np.__version__,
                          "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
                          "python": platform.python_version()}
    result["run"] = {"model": config.model, "data": config.data}
    return result


class _Tee:
    """stderr copied into further files: a stack's job writes its output into every one of its
    runs' sweep.log (the executor sends the process's own stderr to the first run's)."""

    def __init__(self, stream, paths):
        self.stream = stream
        self.files = [open(p, "a") for p in paths]

    def write(self, text):
        for f in self.files:
            f.write(text)
            f.flush()
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def main(argv=None) -> int:
    """``python -m wtc.experiments RUN [RUN ...] --evaluation JSON``: one job (a run, or a
    stack of runs) as its own process (what LocalExecutor starts). Prints each run's outcome as
    one JSON line; exit 0 when every run is finished, 1 when any failed (recorded in its
    job.json), else 3 (another process holds a run)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wtc.experiments")
    parser.add_argument("run_dirs", nargs="+", metavar="run_dir")
    parser.add_argument("--evaluation", default="{}", help="JSON: protocol, metrics, repeats, "
                        "sizes")
    parser.add_argument("--executor", default=None)
    parser.add_argument("--job-id", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--cuda-graph", action="store_true")
    parser.add_argument("--tee", default=None, metavar="NAME",
                        help="also write stderr to RUN/NAME of every run after the first")
    args = parser.parse_args(argv)
    if args.tee and len(args.run_dirs) > 1:
        sys.stderr = _Tee(sys.stderr, [Path(d) / args.tee for d in args.run_dirs[1:]])
    try:
        outs = run_group(args.run_dirs, json.loads(args.evaluation), executor=args.executor,
                         job_id=args.job_id, threads=args.threads, device=args.device,
                         cuda_graph=args.cuda_graph)
    except Exception:
        traceback.print_exc()
        return 1
    for out in outs:
        if out["outcome"] == "failed":
            print(f"FAILED {out['run']}: {out['reason']}", file=sys.stderr)
        print(json.dumps(out), flush=True)
    kinds = {out["outcome"] for out in outs}
    return 1 if "failed" in kinds else 0 if kinds == {"evaluated"} else 3
