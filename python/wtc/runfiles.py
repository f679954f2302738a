"""A run folder's file names, and the one way every file of wtc is written: atomically.

A run folder (``wtc train --out RUN``, or one run of a sweep) holds:

    config.json         the run's TrainConfig (what ``wtc train --config`` reads)
    checkpoint.pt       models, optimisers, RNG states and data order at the last saved step
    log.jsonl           one record of loss terms per ``log_every`` steps
    result.json         written when training finished: steps and reconstruction error
    reconstructions.png originals and their reconstructions
    loss_curves.png     every logged loss term against the step, drawn from log.jsonl
    eval.json           ``wtc eval``'s metrics
    tensorboard/        the same records for TensorBoard (when installed)
    sweep.log, .lock    a sweep's child output and its lock on the run
    job.json, .job.lock the run's job state for executors (wtc.experiments.jobs) and its lock

Its state is read from these files alone, so any process on any node can pick a run up.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
RESULT = "result.json"
RECONSTRUCTIONS = "reconstructions.png"
LOSS_CURVES = "loss_curves.png"
EVAL = "eval.json"
TENSORBOARD = "tensorboard"
SWEEP_LOG = "sweep.log"
LOCK = ".lock"
JOB = "job.json"
JOB_LOCK = ".job.lock"  # guards read-modify-write of job.json (held for microseconds)


def temporary_name(path: Path) -> Path:
    """Where :func:`atomic_write` writes ``path`` before renaming it (hidden, per process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


_TEMPORARY = re.compile(r"^\.(.+)\.tmp(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_stale_temporaries(folder) -> list:
    """Remove what killed writers left in ``folder``: :func:`temporary_name` files whose
    process is gone (a live one, such as a ``wtc eval`` writing next to a run, is still
    writing). Returns the removed paths."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or not entry.is_file():
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def shown_name(path) -> str:
    """``path`` as a person knows it: a temporary of :func:`temporary_name` names its file."""
    path = Path(path)
    match = _TEMPORARY.match(path.name)
    return str(path.with_name(match.group(1)) if match else path)


def check_writable(folder) -> None:
    """Raise the OSError a write into ``folder`` would (read-only, full, no permission): for
    commands that compute long before writing. Goes the way every file is written: a
    temporary file renamed, then removed."""
    probe = Path(folder) / f".wtc-write-check{os.getpid()}"
    atomic_write(probe, lambda tmp: Path(tmp).write_text("x"))
    probe.unlink(missing_ok=True)


def atomic_write(path, write) -> None:
    """``write(temporary path)``, then a rename over ``path``: a killed write leaves the previous
    file intact, and a failed one leaves no temporary behind."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(obj, path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)))


def save_torch_atomic(obj, path) -> None:
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_numpy_atomic(path, array) -> None:
    """``np.save`` to ``path`` (creating its folder) through a temporary file."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, array)

    atomic_write(path, write)


def remove_empty_tree(path) -> None:
    """Remove ``path`` if it holds nothing but empty folders: what a command that failed before
    writing anything leaves behind. Anything holding a file stays."""
    path = Path(path)
    if not path.is_dir():
        return
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass


def read_json(path):
    """A JSON file's contents, or None when it is missing or unreadable (a killed writer)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
