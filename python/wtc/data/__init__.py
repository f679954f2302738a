"""Data sets behind one ground-truth interface: the standard files, read from where the user
keeps them (never downloaded), and procedural look-alikes that need no files.

    wtc.data.load("dsprites")                        # $WTC_DATA, or dlib / disent layouts
    wtc.data.load("dsprites", root="~/data", protocol="dlib")
    wtc.data.load("dsprites-procedural", grid_step=2)  # rendered locally, cached

Each data set is declared once, beside its loader, in the registry (wtc.data.registry);
``NAMES``, ``CLI_OPTIONS``, ``find_file``, ``load`` and the command line are derived from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from wtc.data.base import DataSetError, GroundTruthDataset
from wtc.data.registry import (
    DATASETS,
    RENAMED_OPTIONS,
    DataSetEntry,
    Option,
    check_options,
    register_dataset,
    renamed_options,
    unregister_dataset,
)

# Importing the loaders registers them; file sets in the order their names are listed.
from wtc.data import dsprites, shapes3d, others  # noqa: F401  isort: skip
from wtc.data import registry as _registry

__all__ = [
    "CLI_OPTIONS",
    "DATASETS",
    "NAMES",
    "RENAMED_OPTIONS",
    "DataSetEntry",
    "DataSetError",
    "GroundTruthDataset",
    "Option",
    "check_options",
    "data_roots",
    "find_file",
    "load",
    "register_dataset",
    "renamed_options",
    "unregister_dataset",
]


def __getattr__(attr):
    # Computed on each access, so a data set registered later (a plug-in, a test) is listed.
    if attr == "NAMES":
        return _registry.names()
    if attr == "CLI_OPTIONS":
        # The options of load that the command line (wtc data, wtc train) and sweep specs pass on.
        return tuple(_registry.cli_options())
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def data_roots(root=None) -> list[Path]:
    """Where data sets are looked for, in order: the argument, $WTC_DATA, disentanglement_lib's
    $DISENTANGLEMENT_LIB_DATA, disent's $DISENT_DATA_ROOT (default data/dataset)."""
    roots = []
    if root is not None:
        roots.append(Path(root).expanduser())
    for var in ("WTC_DATA", "DISENTANGLEMENT_LIB_DATA", "DISENT_DATA_ROOT"):
        if os.environ.get(var):
            roots.append(Path(os.environ[var]).expanduser())
    roots.append(Path("data") / "dataset")
    return roots


def find_file(name: str, root=None, variant: str | None = None, **options) -> Path:
    """The path of a data set's file (or folder), or a DataSetError saying where it was looked
    for, the environment variable, and the procedural alternative. Options fill the ``{option}``
    fields of the file's name (mpi3d's variant, default toy)."""
    entry = _registry.get(name)
    if entry.procedural:
        raise ValueError(f"{name} is procedural: it needs no files")
    options = renamed_options(options)
    if variant is not None:
        options["variant"] = variant
    file, subdirs = _registry.file_and_folders(entry, options)
    tried = []
    for base in data_roots(root):
        for folder in [base] + [base / s for s in subdirs]:
            candidate = folder / file
            tried.append(candidate.absolute())  # a relative path says nothing in a log
            if candidate.exists():
                return candidate
    hint = (f", or use the procedural look-alike that needs no files: '{entry.lookalike}'"
            if entry.lookalike else "")
    raise DataSetError(
        f"{name}: expected the file {file}, looked for it at:\n  "
        + "\n  ".join(str(t) for t in tried)
        + f"\nPut it in one of these folders, pass the folder that holds it with --data-root "
          f"(root= from Python), or set WTC_DATA to it{hint}. wtc never downloads data sets.")


def load(name: str, root=None, **options) -> GroundTruthDataset:
    """A data set by name (``NAMES``) with its options: those the registry declares (``wtc data
    --help`` lists them per data set: dsprites' protocol, mpi3d's variant, the procedural sets'
    grid_step, whose old name step is still accepted) and the loader's other keyword arguments
    (shapes3d's in_memory, cache_dir, ...). An option the data set does not take, or a value
    outside an option's choices, is a DataSetError naming it."""
    entry = _registry.get(name)
    options = renamed_options(options)
    check_options(name, options)
    path = None if entry.procedural else find_file(name, root, **options)
    return _registry.open_dataset(entry, path, options)
