"""What one job does on any executor (local processes, Slurm through submitit, Ray): lock the
run folder, train the run from its ``config.json`` (resuming from its checkpoint), evaluate it,
and record every step of that in the folder's ``job.json``.

The run folder is the single source of truth: a job needs nothing but the folder's path and the
evaluation settings, so any process on any node can pick a run up, and a requeued or resubmitted
job continues where the last one stopped.

``job.json`` (written atomically; ``format`` = ``wtc-job-v1``) holds the run's latest state:

    pending    the sweep created the run folder; nothing submitted yet
    submitted  executor, job_id, submitted (time), submit_host, submit_pid; requeued: true
               when a preempted/timed-out job put itself back in the queue
    running    host, pid, started (time), attempt (1, 2, ... one per start of the job),
               resumed_from (the checkpoint's step, when it resumed one)
    trained    train_seconds
    evaluated  train_seconds, eval_seconds, finished (time)
    failed     reason (one line), traceback (its last lines), failed (time)

``executor``, ``job_id``, ``submitted`` and ``attempt`` are kept from state to state (``host``,
``pid``, ``started`` from running on), and every record has ``updated``.
The files themselves (result.json, eval.json) decide whether a run is finished; job.json says
who is working on it and what went wrong.

Locking (what it guarantees where)
----------------------------------
A job holds ``fcntl.flock(RUN/.lock, LOCK_EX)`` for as long as it works on the run, and takes it
without blocking: a job that finds the lock held gives up with the outcome ``busy`` after a
short grace period, so a run is never trained by two processes at once. The kernel drops the
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

from wtc.runfiles import CHECKPOINT, CONFIG, EVAL, LOCK, RESULT, read_json, write_json_atomic

JOB = "job.json"
JOB_LOCK = ".job.lock"  # guards read-modify-write of job.json (held for microseconds)
FORMAT = "wtc-job-v1"
STATES = ("pending", "submitted", "running", "trained", "evaluated", "failed")
# Fields that identify the job working on a run; kept from one state to the next (where it
# ran only until the run is submitted again).
_KEPT = ("executor", "job_id", "submitted", "attempt")
_WHERE = ("host", "pid", "started", "resumed_from")


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


# -- the job ----------------------------------------------------------------------------------

# Set by an executor's preemption handler (submitit's checkpoint()) in this process: the
# SystemExit that follows is a requeue, not a failure.
_requeued = False


def note_requeue() -> None:
    global _requeued
    _requeued = True


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_job(run_dir, evaluation: dict, *, executor: str | None = None,
            job_id: str | None = None, threads: int | None = None, device: str | None = None,
            wait: float = 30.0) -> dict:
    """Train (or resume) and evaluate one run folder; what every executor's job calls.

    ``evaluation``: ``{"protocol", "metrics", "repeats", "sizes"}`` as for
    :func:`wtc.metrics.evaluate`. Returns ``{"run", "outcome", "trained", "evaluated", ...}``
    with outcome ``evaluated`` (the run is finished; ``trained``/``evaluated`` say whether this
    job did that work) or ``busy`` (another process holds the run's lock; nothing was done).
    Raises on failure after recording it in job.json."""
    global _requeued
    from wtc.plugins import load_plugins

    load_plugins()  # a job on another process or node sees the user's models, metrics, data
    run_dir = Path(run_dir)
    out = {"run": str(run_dir), "trained": False, "evaluated": False}
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    lock = RunLock(run_dir)
    try:
        lock.acquire(wait)
    except RunBusy as err:
        return {**out, "outcome": "busy", "reason": str(err)}
    try:
        _requeued = False
        previous = read_job(run_dir) or {}
        identity = {}
        if executor:
            identity["executor"] = executor
        if job_id:
            identity["job_id"] = str(job_id)
        update_job(run_dir, "running", host=socket.gethostname(), pid=os.getpid(),
                   started=_now(), attempt=int(previous.get("attempt", 0)) + 1,
                   resumed_from=None, **identity)
        config = read_config(run_dir)
        if device:
            config.device = device
        train_seconds = float(previous.get("train_seconds", 0.0))
        if not is_trained(run_dir, config.steps):
            from wtc.train import Trainer

            t0 = time.perf_counter()
            resume = (run_dir / CHECKPOINT).exists()
            # no checkpoint: new, or killed before its first one; nothing to keep (the
            # sweep's config.json is rewritten unchanged)
            trainer = Trainer(config, run_dir, resume=resume, overwrite=not resume)
            if trainer.resume_state is not None:
                update_job(run_dir, "running", resumed_from=int(trainer.resume_state["step"]))
            trainer.run()
            train_seconds = time.perf_counter() - t0
            out["trained"] = True
        update_job(run_dir, "trained", train_seconds=train_seconds)
        eval_seconds = float(previous.get("eval_seconds", 0.0))
        if not eval_complete(run_dir, evaluation):
            t0 = time.perf_counter()
            write_json_atomic(evaluate_run(run_dir, evaluation, device), run_dir / EVAL)
            eval_seconds = time.perf_counter() - t0
            out["evaluated"] = True
        update_job(run_dir, "evaluated", train_seconds=train_seconds, eval_seconds=eval_seconds,
                   finished=_now())
        return {**out, "outcome": "evaluated", "train_seconds": train_seconds,
                "eval_seconds": eval_seconds}
    except BaseException as err:
        if _requeued:  # preempted or timed out: the executor puts the job back in the queue
            update_job(run_dir, "submitted", requeued=True)
        else:
            reason = (f"interrupted ({type(err).__name__})"
                      if isinstance(err, (KeyboardInterrupt, SystemExit))
                      else f"{type(err).__name__}: {err}".splitlines()[0])
            update_job(run_dir, "failed", reason=reason,
                       traceback=_tail(traceback.format_exc()), failed=_now())
        raise
    finally:
        lock.release()


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


def main(argv=None) -> int:
    """``python -m wtc.experiments.jobs RUN --evaluation JSON``: one job as its own process
    (what LocalExecutor starts). Prints the outcome as one JSON line; exit 0 when the run is
    finished, 3 when another process holds it, 1 on failure (recorded in job.json)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m wtc.experiments.jobs")
    parser.add_argument("run_dir")
    parser.add_argument("--evaluation", default="{}", help="JSON: protocol, metrics, repeats, "
                        "sizes")
    parser.add_argument("--executor", default=None)
    parser.add_argument("--job-id", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    try:
        out = run_job(args.run_dir, json.loads(args.evaluation), executor=args.executor,
                      job_id=args.job_id, threads=args.threads, device=args.device)
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps(out), flush=True)
    return 0 if out["outcome"] == "evaluated" else 3


if __name__ == "__main__":
    sys.exit(main())
