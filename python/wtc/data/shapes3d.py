"""Shapes3D: the real ``3dshapes.h5``, and a procedural look-alike over the same factor grid.

Factors, in index order (orientation fastest): floor_hue (10), wall_hue (10), object_hue (10),
scale (8), shape (4: cube, cylinder, sphere, capsule), orientation (15).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wtc.data.base import GRID_STEP, DataSetError, GroundTruthDataset, subset_steps
from wtc.data.registry import register_dataset

FILE_NAME = "3dshapes.h5"
FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)


def classes_from_values(values: np.ndarray, what: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Factor values (N, K) -> classes (N, K) (rank of each rounded value) and the grid's sizes,
    checking that the rows enumerate the grid in C order."""
    columns, sizes = [], []
    for k in range(values.shape[1]):
        # The stored hues carry float noise (0.30000000000000004): round before comparing.
        uniq, inverse = np.unique(np.round(values[:, k], 6), return_inverse=True)
        columns.append(inverse.reshape(-1))
        sizes.append(len(uniq))
    classes = np.stack(columns, 1).astype(np.int64)
    sizes = tuple(sizes)
    if int(np.prod(sizes)) != len(values) or not np.array_equal(
            classes, np.stack(np.unravel_index(np.arange(len(values)), sizes), 1)):
        raise DataSetError(f"{what}: the labels do not enumerate the factor grid in order")
    return classes, sizes


@register_dataset("shapes3d", file=FILE_NAME, folders=["shapes3d", "3dshapes"],
                  lookalike="shapes3d-procedural", factor_sizes=FACTOR_SIZES)
class Shapes3D(GroundTruthDataset):
    """The real Shapes3D h5 (``images`` uint8 (N, 64, 64, 3), ``labels`` float64 (N, 6)).

    ``in_memory=True`` (default) reads the images once (5.9 GB for the full file); ``False``
    reads each batch from the file."""

    name = "shapes3d"
    factor_names = FACTOR_NAMES
    channels = 3

    def __init__(self, path, in_memory: bool = True):
        import h5py

        path = Path(path)
        try:
            self._file = h5py.File(path, "r")
        except OSError as err:
            raise DataSetError(f"shapes3d: cannot read {path} as HDF5: {err} (truncated or "
                               "not an h5 file?)") from err
        missing = {"images", "labels"} - set(self._file.keys())
        if missing:
            raise DataSetError(f"shapes3d: {path} has no {sorted(missing)} dataset(s) (found "
                               f"{sorted(self._file.keys())}); is it 3dshapes.h5?")
        images, labels = self._file["images"], self._file["labels"]
        for key, item in (("images", images), ("labels", labels)):
            if not isinstance(item, h5py.Dataset):
                raise DataSetError(f"shapes3d: {path}: '{key}' is a {type(item).__name__}, "
                                   "not an array; is it 3dshapes.h5?")
        if not np.issubdtype(labels.dtype, np.number):
            raise DataSetError(f"shapes3d: {path}: expected numeric labels, got "
                               f"{labels.dtype}")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (64, 64, 3):
            raise DataSetError(f"shapes3d: {path}: expected images uint8 (N, 64, 64, 3), got "
                               f"{images.dtype} {images.shape}")
        if labels.shape != (images.shape[0], 6):
            raise DataSetError(f"shapes3d: {path}: expected labels (N, 6), got {labels.shape}")
        try:
            _, self.factor_sizes = classes_from_values(labels[()], f"shapes3d: {path}")
            self._images = images[()] if in_memory else images
        except OSError as err:
            raise DataSetError(f"shapes3d: {path} is truncated or damaged: {err}") from err
        if in_memory:
            self._file.close()
            self._file = None

    def images_uint8(self, indices):
        if isinstance(self._images, np.ndarray):
            return self._images[indices]
        order = np.argsort(indices)  # h5py reads increasing, unique indices
        uniq, inverse = np.unique(indices[order], return_inverse=True)
        block = self._images[uniq]
        out = np.empty((len(indices),) + block.shape[1:], np.uint8)
        out[order] = block[inverse]
        return out


# ---------------------------------------------------------------------------------------------
# Procedural Shapes3D look-alike.

SKY_RGB = np.array([153, 226, 249], np.float32) / 255
HUES = np.linspace(0.0, 0.9, 10)
SCALES = np.linspace(0.75, 1.25, 8)
ORIENTATIONS = np.linspace(-30.0, 30.0, 15)
SHADOW_V = 0.55  # brightness of the floor in the object's shadow


def hue_rgb(hue) -> np.ndarray:
    """RGB of HSV(hue, 1, 1); with S = 1, HSV(h, 1, V) is V times it."""
    hue = np.asarray(hue, np.float64)[..., None]
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return (1 - np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


def _background(floor_hue, wall_hue, orientation):
    """Sky, two walls meeting in a corner that moves with orientation, shaded floor: (64, 64, 3)."""
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32) + 0.5
    corner = 32 + orientation * 0.6
    # The floor line rises towards the corner (perspective).
    floor_line = 40 - 4 * np.clip(1 - np.abs(cols - corner) / 40, 0, 1)
    image = np.empty((64, 64, 3), np.float32)
    wall_v = np.where(cols < corner, 0.97, 0.75)[..., None]
    image[:] = wall_v * hue_rgb(wall_hue)
    image[rows < 16] = SKY_RGB
    floor = rows >= floor_line
    floor_v = (0.85 + 0.15 * (rows - 40) / 24)[..., None]
    image[floor] = (floor_v * hue_rgb(floor_hue))[floor]
    return image


def _object(scale, shape, orientation):
    """(shading V in [0, 1] where the object is, else 0; shadow factor) for one object."""
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32) + 0.5
    size = 13.0 * scale
    base, cx = 50.0, 32.0 - orientation * 0.1
    x, y = cols - cx, rows - (base - size / 2)  # object-centred
    half = size / 2
    turn = np.deg2rad(orientation)
    if shape == 0:  # cube: two visible faces split where the camera sees the edge
        mask = (np.abs(x) <= half) & (np.abs(y) <= half)
        edge = half * np.sin(turn) * 1.5
        shade = np.where(x < edge, 0.9, 0.7) * np.where(y < -half * 0.55, 1.1, 1.0)
    elif shape == 1:  # cylinder: rectangle with an elliptical top, shaded across
        top = (x / half) ** 2 + ((y + half) / (half * 0.35)) ** 2 <= 1
        mask = ((np.abs(x) <= half * 0.85) & (np.abs(y) <= half)) | top
        shade = np.where(top & (y < -half * 0.65), 1.0, 0.95 - 0.3 * (x / half + 1) / 2)
    elif shape == 2:  # sphere: disc with a light from the upper left
        r2 = (x ** 2 + y ** 2) / half ** 2
        mask = r2 <= 1
        shade = 0.55 + 0.45 * np.clip(1 - ((x + half * 0.35) ** 2 + (y + half * 0.35) ** 2)
                                      / (1.6 * half ** 2), 0, 1)
    elif shape == 3:  # capsule lying across the view: a stadium, seen end-on as it turns
        length = half * (1.0 + 0.6 * np.cos(turn))
        radius = half * 0.55
        dx = np.clip(np.abs(x) - (length - radius), 0, None)
        mask = dx ** 2 + (y + half - radius) ** 2 <= radius ** 2
        shade = 0.6 + 0.4 * np.clip(1 - np.abs(y + half - radius) / radius, 0, 1)
    else:
        raise ValueError(f"shape class must be 0..3, got {shape}")
    shading = np.where(mask, np.clip(shade, 0, 1), 0).astype(np.float32)
    # A dark shadow on the floor to the lower right of the object's base.
    sx, sy = cols - (cx + size * 0.45), rows - (base + 2)
    shadow_area = (sx / (size * 0.7)) ** 2 + (sy / (size * 0.22)) ** 2 <= 1
    shadow = np.where(shadow_area & ~mask, SHADOW_V, 1.0).astype(np.float32)
    return shading, shadow


@register_dataset("shapes3d-procedural", factor_sizes=FACTOR_SIZES, options=[GRID_STEP])
class Shapes3DProcedural(GroundTruthDataset):
    """A Shapes3D look-alike over the same factor grid, composited lazily per batch.

    Backgrounds (floor x wall x orientation, plain and in shadow) and coloured objects (scale x
    shape x orientation x object hue) are rendered once as uint8 (about 100 MB for the full grid;
    HSV with S = 1 is linear in V, so an object's colour is its shading times its hue's RGB); a
    batch is three uint8 gathers and two masked selects. ``grid_step`` keeps every N-th class
    of each factor.
    """

    name = "shapes3d-procedural"
    factor_names = FACTOR_NAMES
    channels = 3

    def __init__(self, grid_step=1):
        self.classes = subset_steps(FACTOR_SIZES, grid_step)
        self.factor_sizes = tuple(len(c) for c in self.classes)
        fh, wh, oh, sc, sh, orient = self.classes
        backgrounds = np.stack([
            _background(HUES[f], HUES[w], ORIENTATIONS[o]) for f in fh for w in wh for o in orient
        ]).reshape(len(fh), len(wh), len(orient), 64, 64, 3)
        to_uint8 = lambda x: (x * 255 + 0.5).astype(np.uint8)
        self._background = to_uint8(backgrounds)
        self._background_shadowed = to_uint8(backgrounds * SHADOW_V)
        objects = [_object(SCALES[s], int(k), ORIENTATIONS[o]) for s in sc for k in sh
                   for o in orient]
        shape = (len(sc), len(sh), len(orient), 64, 64)
        shading = np.stack([o[0] for o in objects]).reshape(shape)
        # Masks as 0/255 bytes per channel: a bitwise select is far faster than np.where.
        as_bytes = lambda m: np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=-1)
        self._object_mask = as_bytes(shading > 0)
        self._shadow_mask = as_bytes(np.stack([o[1] < 1 for o in objects]).reshape(shape))
        hues = hue_rgb(HUES[oh])  # (H, 3)
        self._object_rgb = to_uint8(shading[:, :, :, None, :, :, None]
                                    * hues[None, None, None, :, None, None, :])

    def images_uint8(self, indices):
        f = self.index_to_factors(indices)
        bg = (f[:, 0], f[:, 1], f[:, 5])
        obj = (f[:, 3], f[:, 4], f[:, 5])
        image = self._background[bg]
        image ^= (image ^ self._background_shadowed[bg]) & self._shadow_mask[obj]
        image ^= (image ^ self._object_rgb[f[:, 3], f[:, 4], f[:, 5], f[:, 2]]) \
            & self._object_mask[obj]
        return image
