"""Data sets behind one ground-truth interface: the standard files, read from where the user
keeps them (never downloaded), and procedural look-alikes that need no files.

    wtc.data.load("dsprites")                        # $WTC_DATA, or dlib / disent layouts
    wtc.data.load("dsprites", root="~/data", protocol="dlib")
    wtc.data.load("dsprites-procedural", step=2)     # rendered locally, cached
"""

from __future__ import annotations

import os
from pathlib import Path

from wtc.data.base import DataSetError, GroundTruthDataset

__all__ = ["DataSetError", "GroundTruthDataset", "NAMES", "load", "find_file"]

# name -> (file or folder to find, sub-folders of a data root where users keep it)
_FILES = {
    "dsprites": ("dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", ["dsprites"]),
    "shapes3d": ("3dshapes.h5", ["shapes3d", "3dshapes"]),
    "cars3d": ("list.txt", ["cars", "cars3d"]),
    "smallnorb": ("smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat", ["small_norb", "smallnorb"]),
    "mpi3d": ("mpi3d_{variant}.npz", ["mpi3d_{variant}", "mpi3d"]),
    "celeba": ("img_align_celeba", ["celeba", "CelebA"]),
}
_PROCEDURAL = {"dsprites": "dsprites-procedural", "shapes3d": "shapes3d-procedural"}
NAMES = tuple(_FILES) + tuple(_PROCEDURAL.values())
# The options of load that the command line (wtc data, wtc train) and sweep specs pass on.
CLI_OPTIONS = ("step", "protocol", "variant")


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


def find_file(name: str, root=None, variant: str = "toy") -> Path:
    """The path of a data set's file (or folder), or a DataSetError saying where it was looked
    for, the environment variable, and the procedural alternative."""
    file, subdirs = _FILES[name]
    file = file.format(variant=variant)
    tried = []
    for base in data_roots(root):
        for folder in [base] + [base / s.format(variant=variant) for s in subdirs]:
            candidate = folder / file
            tried.append(candidate)
            if candidate.exists():
                return candidate
    alternative = _PROCEDURAL.get(name)
    hint = (f" or use the procedural look-alike that needs no files: '{alternative}'"
            if alternative else "")
    raise DataSetError(
        f"{name}: expected the file {file}, looked for it at:\n  "
        + "\n  ".join(str(t) for t in tried)
        + f"\nPut it in one of these folders, pass root=, or set WTC_DATA to the folder that "
          f"holds it{hint}. wtc never downloads data sets.")


def load(name: str, root=None, **options) -> GroundTruthDataset:
    """A data set by name: dsprites (options: protocol="paper"|"dlib"), shapes3d (in_memory),
    cars3d, smallnorb, mpi3d (variant="toy"|"realistic"|"real"), celeba, dsprites-procedural
    (protocol, step), shapes3d-procedural (step)."""
    if name == "dsprites-procedural":
        from wtc.data.dsprites import DSpritesProcedural
        return DSpritesProcedural(**options)
    if name == "shapes3d-procedural":
        from wtc.data.shapes3d import Shapes3DProcedural
        return Shapes3DProcedural(**options)
    if name not in _FILES:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(NAMES)}")
    variant = options.pop("variant", "toy") if name == "mpi3d" else "toy"
    path = find_file(name, root, variant)
    if name == "dsprites":
        from wtc.data.dsprites import DSprites
        return DSprites(path, **options)
    if name == "shapes3d":
        from wtc.data.shapes3d import Shapes3D
        return Shapes3D(path, **options)
    from wtc.data import others
    if name == "cars3d":
        return others.Cars3D(path.parent, **options)
    if name == "smallnorb":
        return others.SmallNORB(path.parent, **options)
    if name == "mpi3d":
        return others.MPI3D(path, variant=variant, **options)
    return others.CelebA(path, **options)
