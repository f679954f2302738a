"""Cars3D, SmallNORB, MPI3D and CelebA, read from their standard files."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from wtc.data.base import (
    DataSetError,
    GroundTruthDataset,
    cache_root,
    read_npz_member_header,
    reading_npz,
)
from wtc.data.registry import Option, register_dataset
from wtc.runfiles import save_numpy_atomic


def area_downsample(image: np.ndarray, size: int = 64) -> np.ndarray:
    """uint8 (H, W[, C]) -> (size, size[, C]) by averaging equal blocks (exact area resampling
    when size divides H and W; otherwise PIL's antialiased resize)."""
    h, w = image.shape[:2]
    if h % size == 0 and w % size == 0:
        fh, fw = h // size, w // size
        blocks = image.reshape(size, fh, size, fw, *image.shape[2:]).astype(np.float32)
        return (blocks.mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, reducing_gap=None))


# -- Cars3D ------------------------------------------------------------------------------------

# The car count is list.txt's (183 in the released set): the sizes are read, not declared.
@register_dataset("cars3d", file="list.txt", folders=["cars", "cars3d"], open_folder=True)
class Cars3D(GroundTruthDataset):
    """Cars3D from its folder: ``list.txt`` naming the ``car_*_mesh.mat`` files, each holding
    ``im`` uint8 (128, 128, 3, 24, 4) = (H, W, C, azimuth, elevation). Factors (car fastest):
    elevation (4), azimuth (24), car (one per line of list.txt: 183). Images are resized to 64x64
    (2x2 area averaging) and cached once as a compact uint8 array."""

    name = "cars3d"
    factor_names = ("elevation", "azimuth", "car")
    channels = 3

    def __init__(self, folder, cache: bool = True, cache_dir=None):
        folder = Path(folder)
        listing = folder / "list.txt"
        if not listing.is_file():
            raise DataSetError(f"cars3d: {listing} is missing; the Cars3D folder holds list.txt "
                               "and the car_*_mesh.mat files")
        try:
            text = listing.read_text()
        except UnicodeDecodeError as err:
            raise DataSetError(f"cars3d: {listing} is not a text file ({err}); it should list "
                               "the car_*_mesh.mat files, one a line") from err
        names = [line.strip() for line in text.splitlines() if line.strip()]
        bad = [n for n in names if "/" in n or "\0" in n or not n.isprintable()]
        if bad:
            raise DataSetError(f"cars3d: {listing} names {bad[0]!r}, not a file of its folder")
        if not names:
            raise DataSetError(f"cars3d: {listing} lists no cars")
        self.factor_sizes = (4, 24, len(names))
        tag = zlib.crc32("\n".join([str(folder.resolve())] + names).encode())
        cached = cache_root(cache_dir) / f"cars3d-v1-{len(names)}-{tag:08x}.npy" if cache else None
        if cached is not None and cached.exists():
            images = np.load(cached, allow_pickle=False)
        else:
            images = np.empty((4, 24, len(names), 64, 64, 3), np.uint8)
            for c, name in enumerate(names):
                images[:, :, c] = self._read_car(folder, name)
            images = images.reshape(-1, 64, 64, 3)
            if cached is not None:
                save_numpy_atomic(cached, images)
        if images.shape != (int(np.prod(self.factor_sizes)), 64, 64, 3):
            raise DataSetError(f"cars3d: the cache {cached} does not match {listing}; delete it")
        self._images = images

    @staticmethod
    def _read_car(folder: Path, name: str) -> np.ndarray:
        import scipy.io

        path = folder / (name if name.endswith(".mat") else f"{name}.mat")
        if not path.is_file():
            raise DataSetError(f"cars3d: {path} (listed in list.txt) is missing")
        try:
            im = scipy.io.loadmat(path)["im"]
        except KeyError:
            raise DataSetError(f"cars3d: {path} has no 'im' array") from None
        except Exception as err:  # scipy raises several types for damaged files
            raise DataSetError(f"cars3d: cannot read {path}: {err}") from err
        if im.dtype != np.uint8 or im.shape != (128, 128, 3, 24, 4):
            raise DataSetError(f"cars3d: {path}: expected im uint8 (128, 128, 3, 24, 4), got "
                               f"{im.dtype} {im.shape}")
        out = np.empty((4, 24, 64, 64, 3), np.uint8)
        for e in range(4):
            for a in range(24):
                out[e, a] = area_downsample(im[:, :, :, a, e])
        return out

    def images_uint8(self, indices):
        return self._images[indices]


# -- SmallNORB ---------------------------------------------------------------------------------

NORB_MAGIC = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.int32}
NORB_PREFIXES = ("smallnorb-5x46789x9x18x6x2x96x96-training",
                 "smallnorb-5x01235x9x18x6x2x96x96-testing")


def read_norb_matrix(path: Path) -> np.ndarray:
    """A NORB binary-matrix file: int32 magic, int32 ndim, max(3, ndim) int32 dims, data."""
    try:
        with open(path, "rb") as f:
            header = f.read(8)
            if len(header) < 8:
                raise DataSetError(f"smallnorb: {path} is truncated (no header)")
            magic, ndim = struct.unpack("<ii", header)
            if magic not in NORB_MAGIC or not 1 <= ndim <= 8:
                raise DataSetError(f"smallnorb: {path} is not a NORB matrix file (magic "
                                   f"{magic:#x}, ndim {ndim})")
            raw = f.read(4 * max(3, ndim))
            if len(raw) < 4 * max(3, ndim):
                raise DataSetError(f"smallnorb: {path} is truncated (in its header)")
            dims = struct.unpack(f"<{max(3, ndim)}i", raw)[:ndim]
            if min(dims) < 0:
                raise DataSetError(f"smallnorb: {path}: negative dimensions {dims} in its "
                                   "header")
            dtype = np.dtype(NORB_MAGIC[magic]).newbyteorder("<")
            count = int(np.prod(dims, dtype=object))
            available = (path.stat().st_size - f.tell()) // dtype.itemsize
            if count > available:  # before allocating what a damaged header claims
                raise DataSetError(f"smallnorb: {path} is truncated: its header claims "
                                   f"{count:,} values, the file holds {available:,}")
            data = np.fromfile(f, dtype=dtype, count=count)
    except OSError as err:
        raise DataSetError(f"smallnorb: cannot read {path}: {err}") from err
    if data.size != count:
        raise DataSetError(f"smallnorb: {path} is truncated: {data.size} of {count} values")
    return data.reshape(dims)


@register_dataset("smallnorb", file=f"{NORB_PREFIXES[0]}-dat.mat",
                  folders=["small_norb", "smallnorb"], open_folder=True)
class SmallNORB(GroundTruthDataset):
    """SmallNORB from the training and testing binary-matrix files (both, as disentanglement_lib
    does): the first camera of each stereo pair, resized to 64x64. Factors: category (5),
    elevation (9), azimuth (18; stored as 0, 2, .., 34), lighting (6); the instance (10) is a
    nuisance: several images share each factor combination, and sampling picks one at random."""

    name = "smallnorb"
    factor_names = ("category", "elevation", "azimuth", "lighting")
    factor_sizes = (5, 9, 18, 6)
    channels = 1

    def __init__(self, folder):
        folder = Path(folder)
        images, factors = [], []
        for prefix in NORB_PREFIXES:
            parts = {k: folder / f"{prefix}-{k}.mat" for k in ("dat", "cat", "info")}
            for path in parts.values():
                if not path.is_file():
                    raise DataSetError(f"smallnorb: {path} is missing")
            dat, cat, info = (read_norb_matrix(parts[k]) for k in ("dat", "cat", "info"))
            if dat.ndim != 4 or dat.shape[1] != 2 or dat.dtype != np.uint8:
                raise DataSetError(f"smallnorb: {parts['dat']}: expected uint8 (N, 2, H, W), "
                                   f"got {dat.dtype} {dat.shape}")
            if cat.shape != (dat.shape[0],) or info.shape != (dat.shape[0], 4):
                raise DataSetError(f"smallnorb: {prefix}: cat/info do not match dat's "
                                   f"{dat.shape[0]} images")
            images.append(np.stack([area_downsample(im) for im in dat[:, 0]]))
            # info: instance, elevation, azimuth (0, 2, .., 34), lighting
            factors.append(np.stack([cat, info[:, 1], info[:, 2] // 2, info[:, 3]], 1))
        self._images = np.concatenate(images)
        self.factors = np.concatenate(factors).astype(np.int64)
        self.check_factors(self.factors)
        # Images grouped by factor combination, for sampling.
        codes = np.ravel_multi_index(tuple(self.factors.T), self.factor_sizes)
        self._order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=int(np.prod(self.factor_sizes)))
        self._starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self):
        return len(self._images)

    def index_to_factors(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"smallnorb: index out of range [0, {len(self)})")
        return self.factors[indices]

    def factors_to_index(self, factors, rng=None):
        """An image index for each factor row (a random instance among those that match)."""
        factors = self.check_factors(factors)
        codes = np.ravel_multi_index(tuple(factors.T), self.factor_sizes)
        rng = np.random.default_rng(rng)
        lo, hi = self._starts[codes], self._starts[codes + 1]
        if (hi == lo).any():
            missing = factors[np.flatnonzero(hi == lo)[0]]
            raise ValueError(f"smallnorb: no image has the factors {missing.tolist()}")
        return self._order[lo + (rng.random(len(codes)) * (hi - lo)).astype(np.int64)]

    def observation_indices(self, factors, rng=None):
        """The images sample_observations_from_factors returns, by index (the same draws), so
        an evaluation can look their codes up instead of encoding them again."""
        return self.factors_to_index(factors, rng)

    def sample_observations_from_factors(self, factors, rng=None):
        return self.batch(self.observation_indices(factors, rng))

    def images_uint8(self, indices):
        return self._images[indices]


# -- MPI3D -------------------------------------------------------------------------------------

MPI3D_FACTORS = ("object_color", "object_shape", "object_size", "camera_height",
                 "background_color", "horizontal_axis", "vertical_axis")
MPI3D_SIZES = (6, 6, 2, 3, 3, 40, 40)
MPI3D_VARIANTS = ("toy", "realistic", "real")
VARIANT = Option("variant", str, "toy", MPI3D_VARIANTS, help="MPI3D variant")


def memmap_npz_member(path: Path, key: str):
    """A read-only memory map of an uncompressed npz member (np.load cannot map npz files)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        shape, fortran, dtype, header_size = read_npz_member_header(zf, info)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
    data_start = info.header_offset + 30 + name_len + extra_len
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start + header_size, shape=shape,
                     order="F" if fortran else "C")


@register_dataset("mpi3d", file="mpi3d_{variant}.npz", folders=["mpi3d_{variant}", "mpi3d"],
                  factor_sizes=MPI3D_SIZES, options=[VARIANT])
class MPI3D(GroundTruthDataset):
    """MPI3D (``mpi3d_{toy,realistic,real}.npz``, key ``images`` uint8 (1036800, 64, 64, 3)),
    memory-mapped when the npz is stored uncompressed, as the released files are.
    ``factor_sizes`` may be given for a file holding a smaller grid."""

    factor_names = MPI3D_FACTORS
    channels = 3

    def __init__(self, path, variant: str = "toy", factor_sizes=None):
        path = Path(path)
        self.name = f"mpi3d-{variant}"
        self.factor_sizes = tuple(factor_sizes or MPI3D_SIZES)
        with reading_npz("mpi3d", path):
            with zipfile.ZipFile(path) as zf:
                if "images.npy" not in zf.namelist():
                    raise DataSetError(f"mpi3d: {path} has no 'images' array (found "
                                       f"{zf.namelist()})")
            images = memmap_npz_member(path, "images")
            if images is None:
                with np.load(path, allow_pickle=False) as data:
                    images = data["images"]
        expected = (int(np.prod(self.factor_sizes)), 64, 64, 3)
        if images.dtype != np.uint8 or images.shape != expected:
            raise DataSetError(f"mpi3d: {path}: expected images uint8 {expected}, got "
                               f"{images.dtype} {images.shape}")
        self._images = images

    def images_uint8(self, indices):
        return np.asarray(self._images[indices])


# -- CelebA ------------------------------------------------------------------------------------

CELEBA_MAX_PIXELS = 4096 * 4096


@register_dataset("celeba", file="img_align_celeba", folders=["celeba", "CelebA"])
class CelebA(GroundTruthDataset):
    """CelebA aligned images (``img_align_celeba/*.jpg``, 178x218): the centre 178x178 crop,
    resized to 64x64, cached once. No ground-truth factors: for training and traversals."""

    name = "celeba"
    channels = 3

    def __init__(self, folder, cache: bool = True, cache_dir=None):
        from PIL import Image

        folder = Path(folder)
        files = sorted(folder.glob("*.jpg"))
        if not files:
            raise DataSetError(f"celeba: no .jpg images in {folder}")
        tag = zlib.crc32(str(folder.resolve()).encode())
        cached = cache_root(cache_dir) / f"celeba-v1-{len(files)}-{tag:08x}.npy" if cache else None
        if cached is not None and cached.exists():
            images = np.load(cached, mmap_mode="r", allow_pickle=False)
        else:
            images = np.empty((len(files), 64, 64, 3), np.uint8)
            for i, file in enumerate(files):
                try:
                    with Image.open(file) as im:
                        # Checked before decoding: CelebA's images are 178x218, and a huge one
                        # would take gigabytes (PIL only warns below ~179 megapixels).
                        if im.size[0] * im.size[1] > CELEBA_MAX_PIXELS:
                            raise DataSetError(f"celeba: {file} is {im.size[0]}x{im.size[1]} "
                                               "pixels; CelebA's aligned images are 178x218")
                        im = im.convert("RGB")
                        w, h = im.size
                        side = min(w, h)
                        left, top = (w - side) // 2, (h - side) // 2
                        im = im.crop((left, top, left + side, top + side))
                        images[i] = np.asarray(im.resize((64, 64), Image.LANCZOS))
                except (OSError, Image.DecompressionBombError) as err:
                    raise DataSetError(f"celeba: cannot read {file}: {err}") from err
            if cached is not None:
                save_numpy_atomic(cached, images)
        if images.shape[0] != len(files):
            raise DataSetError(f"celeba: the cache {cached} does not match {folder}; delete it")
        self._images = images

    def __len__(self):
        return len(self._images)

    def index_to_factors(self, indices):
        return np.zeros((len(np.atleast_1d(indices)), 0), np.int64)

    def images_uint8(self, indices):
        return np.asarray(self._images[indices])
