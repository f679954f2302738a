"""dSprites: the real file, and a procedural look-alike of the full grid that needs no download.

Factors, in index order (posY fastest): color (1), shape (3: square, ellipse, heart), scale (6:
linspace(0.5, 1, 6)), orientation (40: linspace(0, 2 pi, 40)), posX (32), posY (32). The
``protocol`` option names the two factor sets in use: ``"paper"`` keeps the constant colour
factor (6 factors, the WTC authors' code), ``"dlib"`` drops it (5 factors, disentanglement_lib).
The images are the same and indices agree. Images are held bit-packed (377 MB for the grid).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from wtc.data.base import (
    GRID_STEP,
    DataSetError,
    GroundTruthDataset,
    cache_root,
    npz_member_header,
    reading_npz,
    subset_steps,
)
from wtc.data.registry import Option, register_dataset
from wtc.runfiles import save_numpy_atomic

FILE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
PROTOCOLS = ("paper", "dlib")
PROTOCOL = Option("protocol", str, "paper", PROTOCOLS,
                  help="keep (paper) or drop (dlib) the constant colour factor")


def factor_values(name: str) -> np.ndarray:
    """The real data set's value of each class of a factor."""
    return {
        "color": np.ones(1),
        "shape": np.array([1.0, 2.0, 3.0]),
        "scale": np.linspace(0.5, 1.0, 6),
        "orientation": np.linspace(0.0, 2 * np.pi, 40),
        "posX": np.linspace(0.0, 1.0, 32),
        "posY": np.linspace(0.0, 1.0, 32),
    }[name]


class _PackedDSprites(GroundTruthDataset):
    """dSprites-shaped data held as bit-packed 64x64 images in grid order."""

    channels = 1
    white = 1  # pixels are 0/1

    def __init__(self, packed: np.ndarray, factor_sizes, protocol: str, name: str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"{name}: protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.name = name
        self.protocol = protocol
        self._packed = packed
        self.full_factor_sizes = tuple(int(s) for s in factor_sizes)
        if protocol == "paper":
            self.factor_names, self.factor_sizes = FACTOR_NAMES, self.full_factor_sizes
        else:
            self.factor_names, self.factor_sizes = FACTOR_NAMES[1:], self.full_factor_sizes[1:]

    def images_uint8(self, indices: np.ndarray) -> np.ndarray:
        bits = np.unpackbits(self._packed[indices], axis=1, count=64 * 64)
        return bits.reshape(len(indices), 64, 64)


@register_dataset("dsprites", file=FILE_NAME, folders=["dsprites"],
                  lookalike="dsprites-procedural", factor_names=FACTOR_NAMES,
                  factor_sizes=FACTOR_SIZES, options=[PROTOCOL])
class DSprites(_PackedDSprites):
    """The real dSprites npz (``imgs`` uint8 0/1, ``latents_classes`` int64)."""

    def __init__(self, path, protocol: str = "paper"):
        path = Path(path)
        with reading_npz("dsprites", path), np.load(path, allow_pickle=False) as data:
            missing = {"imgs", "latents_classes"} - set(data.files)
            if missing:
                raise DataSetError(f"dsprites: {path} is not the dSprites npz: keys "
                                   f"{sorted(missing)} are missing (found {data.files})")
            for key in ("imgs", "latents_classes"):
                npz_member_header(path, key)
            imgs = data["imgs"]
            classes = data["latents_classes"]
        if imgs.dtype != np.uint8 or imgs.ndim != 3 or imgs.shape[1:] != (64, 64):
            raise DataSetError(f"dsprites: {path}: expected imgs uint8 (N, 64, 64), got "
                               f"{imgs.dtype} {imgs.shape}")
        if classes.ndim != 2 or classes.shape != (imgs.shape[0], 6):
            raise DataSetError(f"dsprites: {path}: expected latents_classes (N, 6), got "
                               f"{classes.shape}")
        if not np.issubdtype(classes.dtype, np.integer):
            raise DataSetError(f"dsprites: {path}: expected integer latents_classes, got "
                               f"{classes.dtype}")
        if len(classes) == 0:
            raise DataSetError(f"dsprites: {path} holds no images")
        if classes.min() < 0:
            raise DataSetError(f"dsprites: {path}: latents_classes holds negative classes "
                               f"(down to {classes.min()})")
        if imgs.max(initial=0) > 1:
            raise DataSetError(f"dsprites: {path}: expected 0/1 pixels, found values up to "
                               f"{imgs.max()}")
        sizes = tuple(int(s) for s in classes.max(0) + 1)
        grid = np.stack(np.unravel_index(np.arange(len(classes)), sizes), 1)
        if int(np.prod(sizes)) != len(classes) or not np.array_equal(grid, classes):
            raise DataSetError(f"dsprites: {path}: latents_classes do not enumerate the factor "
                               "grid in order (posY fastest); the file is not dSprites")
        packed = np.packbits(imgs.reshape(len(imgs), -1), axis=1)
        super().__init__(packed, sizes, protocol, "dsprites")


# ---------------------------------------------------------------------------------------------
# Procedural dSprites (geometry fitted to the data set's own animation, REFERENCE.md).

SQUARE_SIDE = 19.2
ELLIPSE_AXES = (12.77, 7.21)  # horizontal, vertical semi-axes at orientation 0
HEART_DISCS = ((-4.7, -4.0), (4.7, -4.0))
HEART_RADIUS = 5.1
HEART_TIP = (0.0, 8.8)


def _in_cone(x, y, centre, radius, tip):
    """Inside the convex hull of a disc and a point (a cone rounded at its base)."""
    cx, cy = centre
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2
    ax, ay = cx - tip[0], cy - tip[1]
    length = np.hypot(ax, ay)
    ex, ey = ax / length, ay / length
    vx, vy = x - tip[0], y - tip[1]
    along = vx * ex + vy * ey  # distance from the tip along the axis
    cos2 = 1.0 - (radius / length) ** 2  # cos^2 of the half-angle at the tip
    cone = (along > 0) & (along * along >= (vx * vx + vy * vy) * cos2) & (along <= length * cos2)
    return inside | cone


def sprite_mask(shape: int, scale: float, orientation: float, x, y):
    """Which points (sprite-centred screen coordinates, y down) the sprite covers."""
    c, s = np.cos(orientation), np.sin(orientation)
    # Increasing orientation turns the sprite counter-clockwise on screen: undo that turn.
    lx = x * c - y * s
    ly = x * s + y * c
    if shape == 0:  # square
        half = SQUARE_SIDE * scale / 2
        return (np.abs(lx) <= half) & (np.abs(ly) <= half)
    if shape == 1:  # ellipse
        a, b = ELLIPSE_AXES[0] * scale, ELLIPSE_AXES[1] * scale
        return (lx / a) ** 2 + (ly / b) ** 2 <= 1.0
    if shape == 2:  # heart
        hx, hy = lx / scale, ly / scale
        return (_in_cone(hx, hy, HEART_DISCS[0], HEART_RADIUS, HEART_TIP)
                | _in_cone(hx, hy, HEART_DISCS[1], HEART_RADIUS, HEART_TIP))
    raise ValueError(f"shape class must be 0, 1 or 2, got {shape}")


def render_positions(shape: int, scale: float, orientation: float, pos_x, pos_y) -> np.ndarray:
    """Images (len(pos_x), len(pos_y), 64, 64) bool of one sprite at every position pair.

    A pixel is on when its centre lies inside the sprite; the sprite centre is at 16 + 32 * pos
    pixels (posX -> column, posY -> row). Only a 32x32 window around the centre is evaluated.
    """
    pos_x, pos_y = np.asarray(pos_x, np.float64), np.asarray(pos_y, np.float64)
    cx, cy = 16 + 32 * pos_x, 16 + 32 * pos_y
    c0 = np.clip(np.floor(cx).astype(int) - 16, 0, 32)
    r0 = np.clip(np.floor(cy).astype(int) - 16, 0, 32)
    offsets = np.arange(32)
    dx = (c0[:, None] + offsets + 0.5) - cx[:, None]  # (nx, 32)
    dy = (r0[:, None] + offsets + 0.5) - cy[:, None]  # (ny, 32)
    window = sprite_mask(shape, scale, orientation, dx[:, None, None, :], dy[None, :, :, None])
    nx, ny = len(pos_x), len(pos_y)
    canvas = np.zeros((nx, ny, 64, 64), dtype=bool)
    rows = (r0[:, None] + offsets)[None, :, :, None]
    cols = (c0[:, None] + offsets)[:, None, None, :]
    canvas[np.arange(nx)[:, None, None, None], np.arange(ny)[None, :, None, None], rows, cols] = window
    return canvas


def render_grid(classes: list[np.ndarray], threads: int | None = None) -> np.ndarray:
    """Bit-packed images (N, 512) of the grid subset given by the kept classes per factor
    (color, shape, scale, orientation, posX, posY), in grid order."""
    shapes, scales, orients, xs, ys = (classes[i] for i in range(1, 6))
    sv, ov = factor_values("scale"), factor_values("orientation")
    pv = factor_values("posX")
    block = len(xs) * len(ys)
    combos = [(s, a, o) for s in shapes for a in scales for o in orients]
    packed = np.empty((len(classes[0]) * len(combos) * block, 512), dtype=np.uint8)

    def work(item):
        i, (s, a, o) = item
        canvas = render_positions(int(s), sv[a], ov[o], pv[xs], pv[ys])
        packed[i * block:(i + 1) * block] = np.packbits(canvas.reshape(block, -1), axis=1)

    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        list(pool.map(work, enumerate(combos)))
    if len(classes[0]) > 1:  # colour has one class; kept for completeness
        packed[len(combos) * block:] = np.tile(packed[:len(combos) * block], (len(classes[0]) - 1, 1))
    return packed


@register_dataset("dsprites-procedural", factor_names=FACTOR_NAMES, factor_sizes=FACTOR_SIZES,
                  options=[PROTOCOL, GRID_STEP])
class DSpritesProcedural(_PackedDSprites):
    """The dSprites grid rendered with numpy (same factors, values, order and index).

    ``grid_step``: keep every N-th class of each factor (an int or one per factor) for quick
    tests; ``cache_dir``: where the bit-packed render is kept between runs (default
    ``$WTC_CACHE`` or ``~/.cache/wtc``; ``None`` disables it only if ``cache=False``).
    """

    def __init__(self, protocol: str = "paper", grid_step=1, cache: bool = True, cache_dir=None):
        self.classes = subset_steps(FACTOR_SIZES, grid_step)
        sizes = tuple(len(c) for c in self.classes)
        packed = None
        path = None
        if cache:
            tag = "-".join(str(len(c)) for c in self.classes)
            path = cache_root(cache_dir) / f"dsprites-procedural-v1-{tag}.npy"
            if path.exists():
                try:
                    packed = np.load(path, allow_pickle=False)
                    if packed.shape != (int(np.prod(sizes)), 512) or packed.dtype != np.uint8:
                        packed = None
                except (OSError, ValueError):
                    packed = None  # a broken cache is re-rendered
        if packed is None:
            packed = render_grid(self.classes)
            if path is not None:
                save_numpy_atomic(path, packed)
        super().__init__(packed, sizes, protocol, "dsprites-procedural")
