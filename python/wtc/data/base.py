"""The ground-truth data set interface every metric and trainer uses."""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from wtc.data.registry import Option


class DataSetError(ValueError):
    """A data set that cannot be read: missing, truncated or in the wrong format."""


@contextlib.contextmanager
def reading_npz(name: str, path):
    """Turns a failed read of an npz file into a DataSetError naming the data set and the file
    (a DataSetError raised inside passes unchanged)."""
    try:
        yield
    except DataSetError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise DataSetError(f"{name}: cannot read {path}: {err} (truncated or not an npz "
                           "file?)") from err
    except MemoryError as err:  # a damaged header can claim any size
        raise DataSetError(f"{name}: {path} claims arrays larger than memory; the file is "
                           "damaged or not the data set") from err


def read_npz_member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple:
    """(shape, fortran order, dtype, header size in bytes) of an open npz's member."""
    with zf.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(member)
        return shape, fortran, dtype, member.tell()


def npz_member_header(path, key: str) -> tuple:
    """(shape, dtype, compressed) of an npz member, read from its header alone, after checking
    that the member really holds that many bytes: a damaged or crafted header must not make
    np.load allocate what it claims (1e8 images of 64x64 would be 381 GiB)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        shape, _, dtype, header_size = read_npz_member_header(zf, info)
    if dtype.hasobject:
        raise DataSetError(f"{path}: {key} holds Python objects, not numbers")
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed > info.file_size - header_size:
        raise DataSetError(f"{path}: the header of {key} claims {tuple(shape)} {dtype} "
                           f"({claimed:,} bytes) but the member holds "
                           f"{info.file_size - header_size:,}: the file is damaged")
    return tuple(shape), dtype, info.compress_type != zipfile.ZIP_STORED


class GroundTruthDataset(torch.utils.data.Dataset):
    """Images with the factors of variation that generated them.

    Subclasses set ``name``, ``factor_names``, ``factor_sizes``, ``channels`` and implement
    :meth:`images_uint8` (uint8 images (n, H, W, C) for indices). Images stay uint8 in memory
    (dSprites bit-packed); the float conversion happens per batch.

    Indices enumerate the factor grid in C order (the last factor fastest), the order of the
    standard files. Data sets whose grid holds several images per factor combination (SmallNORB's
    instances) override :meth:`sample_observations_from_factors`; data sets without factors
    (CelebA) have ``factor_sizes == ()``.
    """

    name: str = ""
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    channels: int = 1
    image_size: int = 64
    #: uint8 value that means 1.0 (255, or 1 for dSprites' 0/1 images)
    white: int = 255

    # -- to implement ------------------------------------------------------------------------
    def images_uint8(self, indices: np.ndarray) -> np.ndarray:
        """uint8 images (n, H, W[, C]) for grid indices. Every image data set implements it; a
        data set whose observations are not images overrides
        :meth:`sample_observations_from_factors` instead and never reaches this."""
        raise NotImplementedError(f"{type(self).__name__} does not store images")

    # -- sizes and indices -------------------------------------------------------------------
    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def __len__(self) -> int:
        return math.prod(self.factor_sizes) if self.factor_sizes else 0

    def _check_factor_shape(self, factors) -> np.ndarray:
        factors = np.asarray(factors)
        if factors.ndim == 1:
            factors = factors[None]
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(f"{self.name}: expected factor classes of shape (n, "
                             f"{self.num_factors}), got {factors.shape}")
        if not np.issubdtype(factors.dtype, np.integer):
            raise ValueError(f"{self.name}: factor classes must be integers, got {factors.dtype}")
        return factors

    def _range_error(self, factors: np.ndarray) -> None:
        sizes = np.asarray(self.factor_sizes)
        bad = (factors < 0) | (factors >= sizes)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"{self.name}: factor '{self.factor_names[col]}' class "
                             f"{factors[row, col]} is out of range [0, {sizes[col]})")

    def check_factors(self, factors) -> np.ndarray:
        """Factor classes as (n, K) int64; a clear error for a wrong shape, type or class."""
        factors = self._check_factor_shape(factors)
        self._range_error(factors)
        return factors.astype(np.int64, copy=False)

    def factors_to_index(self, factors) -> np.ndarray:
        factors = self._check_factor_shape(factors)
        try:  # ravel_multi_index checks the ranges itself: the named error only on failure
            index = np.ravel_multi_index(tuple(factors.T), self.factor_sizes)
        except ValueError:
            self._range_error(factors)
            raise
        return index.astype(np.int64, copy=False)

    def index_to_factors(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"{self.name}: index out of range [0, {len(self)})")
        return np.stack(np.unravel_index(indices, self.factor_sizes), axis=-1).astype(np.int64)

    # -- sampling (what the FactorVAE and BetaVAE scores need) --------------------------------
    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor combinations, each factor uniform over its classes, (n, K) int64."""
        if not self.factor_sizes:
            raise ValueError(f"{self.name} has no ground-truth factors")
        rng = np.random.default_rng(rng)
        # Scaled uniforms: several times faster than integers() with per-column bounds, and
        # uniform up to 2^-53.
        sizes = np.asarray(self.factor_sizes, dtype=np.float64)
        u = rng.random((n, self.num_factors))
        u *= sizes  # in place: one temporary less at a million rows
        return u.astype(np.int64)

    def sample_observations_from_factors(self, factors, rng: np.random.Generator | None = None
                                         ) -> torch.Tensor:
        """Float images (n, C, H, W) in [0, 1] showing the given factor classes."""
        return self.batch(self.factors_to_index(factors))

    # -- images ------------------------------------------------------------------------------
    def to_float(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (n, H, W[, C]) -> float32 (n, C, H, W) in [0, 1]."""
        t = torch.from_numpy(np.ascontiguousarray(images))
        if t.dim() == 3:
            t = t.unsqueeze(-1)
        return t.permute(0, 3, 1, 2).float().div_(self.white)

    def batch(self, indices) -> torch.Tensor:
        """The fast path: uint8 gather for an index array, converted on the fly."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"{self.name}: index out of range [0, {len(self)})")
        return self.to_float(self.images_uint8(indices))

    def __getitem__(self, index: int):
        index = int(index)
        if index < 0:
            index += len(self)
        image = self.batch([index])[0]
        factors = torch.from_numpy(self.index_to_factors([index])[0]) if self.factor_sizes \
            else torch.zeros(0, dtype=torch.int64)
        return image, factors

    def describe(self) -> str:
        factors = ", ".join(f"{n} ({s})" for n, s in zip(self.factor_names, self.factor_sizes))
        return (f"{self.name}: {len(self)} images of {self.channels}x{self.image_size}x"
                f"{self.image_size}; factors: {factors or 'none'}")


# From Python, grid_step may also be one int per factor. Named so that it cannot be taken for
# the training steps (--steps); "step", its old name, is still accepted (RENAMED_OPTIONS).
GRID_STEP = Option("grid_step", int, 1,
                   help="keep every N-th class of each factor (smaller grids for quick tests)")
STEP = GRID_STEP  # the old name of the declaration, for imports


def subset_steps(factor_sizes: Sequence[int], step) -> list[np.ndarray]:
    """The classes kept per factor for a grid subset: ``step`` (the data sets' ``grid_step``) is
    an int or one int per factor."""
    steps = [step] * len(factor_sizes) if isinstance(step, int) else list(step)
    if len(steps) != len(factor_sizes) or any(int(s) < 1 for s in steps):
        raise DataSetError(f"grid_step must be a positive int or one per factor "
                           f"({len(factor_sizes)}), got {step}")
    return [np.arange(0, size, int(s)) for size, s in zip(factor_sizes, steps)]


def cache_root(cache_dir=None) -> Path:
    """Where rendered or resized data sets are cached: the argument, $WTC_CACHE, ~/.cache/wtc."""
    return Path(cache_dir or os.environ.get("WTC_CACHE") or Path.home() / ".cache" / "wtc")
