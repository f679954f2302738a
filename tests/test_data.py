"""Data sets: loaders against small files in the real formats, the procedural look-alikes, the
ground-truth interface, and the `wtc data` command."""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from wtc.cli import main as wtc_main
from wtc.data import DataSetError, GroundTruthDataset, load
from wtc.data.dsprites import FILE_NAME as DSPRITES_FILE
from wtc.data.dsprites import DSpritesProcedural, factor_values, render_grid, render_positions
from wtc.data.shapes3d import Shapes3DProcedural

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    # No user data roots or caches leak into the tests.
    for var in ("WTC_DATA", "DISENTANGLEMENT_LIB_DATA", "DISENT_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WTC_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


# -- dSprites ----------------------------------------------------------------------------------

SMALL_DSPRITES = [np.arange(1), np.arange(3), np.array([0, 5]), np.array([0, 10]),
                  np.array([0, 31]), np.array([3, 20])]


def write_dsprites(folder: Path, classes=SMALL_DSPRITES) -> np.ndarray:
    """A dSprites npz with the real keys and dtypes over a small grid; returns the images."""
    packed = render_grid(classes)
    sizes = tuple(len(c) for c in classes)
    imgs = np.unpackbits(packed, axis=1, count=4096).reshape(-1, 64, 64).astype(np.uint8)
    latents_classes = np.stack(np.unravel_index(np.arange(len(imgs)), sizes), 1).astype(np.int64)
    names = ["color", "shape", "scale", "orientation", "posX", "posY"]
    values = np.stack([factor_values(n)[c[i]] for n, c, i in
                       zip(names, classes, latents_classes.T)], 1)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = np.array({"description": "test"}, dtype=object)
    np.savez(folder / DSPRITES_FILE, imgs=imgs, latents_classes=latents_classes,
             latents_values=values, metadata=metadata)
    return imgs


def test_dsprites_loader_reads_the_real_format(tmp_path):
    imgs = write_dsprites(tmp_path / "data" / "dsprites")
    ds = load("dsprites", root=tmp_path / "data")
    assert ds.factor_names == ("color", "shape", "scale", "orientation", "posX", "posY")
    assert ds.factor_sizes == (1, 3, 2, 2, 2, 2) and len(ds) == len(imgs)
    batch = ds.batch(np.arange(len(ds)))
    assert batch.shape == (len(imgs), 1, 64, 64) and batch.dtype == torch.float32
    assert torch.equal(batch[:, 0], torch.from_numpy(imgs).float())
    image, factors = ds[7]
    assert torch.equal(factors, torch.from_numpy(ds.index_to_factors([7])[0]))
    dlib = load("dsprites", root=tmp_path / "data", protocol="dlib")
    assert dlib.factor_sizes == (3, 2, 2, 2, 2)
    assert torch.equal(dlib.batch([7]), ds.batch([7]))


def test_dsprites_via_environment_variable(tmp_path, monkeypatch):
    write_dsprites(tmp_path / "elsewhere")
    monkeypatch.setenv("WTC_DATA", str(tmp_path / "elsewhere"))
    assert len(load("dsprites")) == 48


def test_missing_file_error_says_where_and_what_instead(tmp_path):
    with pytest.raises(DataSetError) as err:
        load("dsprites", root=tmp_path / "nowhere")
    message = str(err.value)
    assert DSPRITES_FILE in message and str(tmp_path / "nowhere") in message
    assert "WTC_DATA" in message and "dsprites-procedural" in message


def test_truncated_or_wrong_files_are_clear_errors(tmp_path):
    write_dsprites(tmp_path)
    path = tmp_path / DSPRITES_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataSetError, match="cannot read|truncated"):
        load("dsprites", root=tmp_path)
    np.savez(path, images=np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(DataSetError, match="keys"):
        load("dsprites", root=tmp_path)
    np.savez(path, imgs=np.zeros((2, 32, 32), np.uint8), latents_classes=np.zeros((2, 6), np.int64))
    with pytest.raises(DataSetError, match=r"uint8 \(N, 64, 64\)"):
        load("dsprites", root=tmp_path)
    path.write_text("not a zip file")
    with pytest.raises(DataSetError):
        load("dsprites", root=tmp_path)


def test_index_factor_round_trips_and_range_errors():
    ds = DSpritesProcedural(grid_step=(1, 1, 3, 10, 8, 8))
    idx = np.arange(len(ds))
    assert np.array_equal(ds.factors_to_index(ds.index_to_factors(idx)), idx)
    rng = np.random.default_rng(0)
    factors = ds.sample_factors(50, rng)
    assert np.array_equal(ds.index_to_factors(ds.factors_to_index(factors)), factors)
    with pytest.raises(ValueError, match="'scale' class 2 is out of range"):
        ds.factors_to_index([[0, 0, 2, 0, 0, 0]])
    with pytest.raises(IndexError):
        ds.batch([len(ds)])


def test_sample_observations_show_the_requested_factors():
    ds = DSpritesProcedural(grid_step=(1, 1, 5, 13, 10, 10))
    factors = ds.sample_factors(20, np.random.default_rng(1))
    images = ds.sample_observations_from_factors(factors, np.random.default_rng(2))
    sv, ov, pv = factor_values("scale"), factor_values("orientation"), factor_values("posX")
    for image, f in zip(images, factors):
        cls = [c[i] for c, i in zip(ds.classes, f)]
        expected = render_positions(cls[1], sv[cls[2]], ov[cls[3]], pv[[cls[4]]], pv[[cls[5]]])
        assert torch.equal(image[0] > 0.5, torch.from_numpy(expected[0, 0]))


def test_procedural_dsprites_is_cached_atomically(tmp_path):
    DSpritesProcedural(grid_step=(1, 1, 3, 20, 16, 16))
    files = list((tmp_path / "cache").glob("dsprites-procedural-*.npy"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob("*.tmp*"))
    mtime = files[0].stat().st_mtime_ns
    again = DSpritesProcedural(grid_step=(1, 1, 3, 20, 16, 16))
    assert files[0].stat().st_mtime_ns == mtime and len(again) == 3 * 2 * 2 * 2 * 2


@pytest.mark.skipif(not (REFERENCE / "dsprites.gif").exists(),
                    reason="../shared/reference/dsprites.gif is not present")
def test_procedural_dsprites_matches_the_real_animation():
    from PIL import Image, ImageSequence

    frames = [np.array(f.convert("L")) > 127
              for f in ImageSequence.Iterator(Image.open(REFERENCE / "dsprites.gif"))]
    assert len(frames) == 320

    def block(shape, heart):  # the animation's factor sequence (REFERENCE.md)
        seq = [(shape, s, 0, 0, 0) for s in [*range(6), *range(5, -1, -1), *range(6)]]
        seq += [(shape, 5, o, 0, 0) for o in range(40)]
        if heart:
            seq += [(shape, 5, 0, 0, y) for y in range(32)]
            seq += [(shape, 5, 0, x, 31) for x in range(32)]
            seq += [(shape, 5, 0, 31, y) for y in range(31, -1, -1)]
            seq += [(shape, 5, 0, x, 0) for x in range(31, -1, -1)]
        return seq + [(shape, s, 0, 0, 0) for s in range(5, -1, -1)]

    sequence = block(2, True) + block(1, False) + block(0, False)
    sv, ov, pv = factor_values("scale"), factor_values("orientation"), factor_values("posX")
    ious = []
    for frame, (shape, scale, orient, x, y) in zip(frames, sequence):
        mask = render_positions(shape, sv[scale], ov[orient], pv[[x]], pv[[y]])[0, 0]
        ious.append((mask & frame).sum() / (mask | frame).sum())
    print(f"\nprocedural dSprites vs dsprites.gif: mean mask IoU {np.mean(ious):.3f}")
    assert np.mean(ious) >= 0.95, np.mean(ious)
    assert min(np.mean(ious[:192]), np.mean(ious[192:256]), np.mean(ious[256:])) >= 0.95


# -- Shapes3D ----------------------------------------------------------------------------------

def write_shapes3d(path: Path, sizes=(2, 2, 2, 2, 2, 3)):
    import h5py

    grids = [np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10),
             np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15)]
    classes = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), 1)
    labels = np.stack([g[c] for g, c in zip(grids, classes.T)], 1)
    labels[:, 0] += 1e-16 * (classes[:, 0] == 1)  # the real file's float noise
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 64, 64, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["images"] = images
        f["labels"] = labels
    return images, classes


@pytest.mark.parametrize("in_memory", [True, False])
def test_shapes3d_loader_reads_the_real_format(tmp_path, in_memory):
    images, classes = write_shapes3d(tmp_path / "shapes3d" / "3dshapes.h5")
    ds = load("shapes3d", root=tmp_path, in_memory=in_memory)
    assert ds.factor_sizes == (2, 2, 2, 2, 2, 3) and ds.channels == 3
    assert np.array_equal(ds.index_to_factors(np.arange(len(ds))), classes)
    idx = np.array([5, 0, 5, 47])
    expected = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(ds.batch(idx), expected)


def test_shapes3d_bad_files(tmp_path):
    path = tmp_path / "3dshapes.h5"
    write_shapes3d(path)
    data = path.read_bytes()
    path.write_bytes(data[:2000])
    with pytest.raises(DataSetError):
        load("shapes3d", root=tmp_path)
    import h5py

    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 64, 64, 3), np.uint8)
        f["labels"] = np.zeros((4, 6))
    with pytest.raises(DataSetError, match="enumerate"):
        load("shapes3d", root=tmp_path)


def test_shapes3d_lookalike_differs_along_every_factor():
    ds = Shapes3DProcedural()
    base = np.array([[2, 5, 8, 3, 0, 7]])
    image = ds.sample_observations_from_factors(base)
    assert image.shape == (1, 3, 64, 64) and 0 <= image.min() and image.max() <= 1
    for k, size in enumerate(ds.factor_sizes):
        for value in (0, size - 1):
            if value == base[0, k]:
                continue
            other = base.copy()
            other[0, k] = value
            changed = (ds.sample_observations_from_factors(other) - image).abs()
            assert changed.max() > 0.1, (ds.factor_names[k], value)
    # Every shape looks different from every other.
    shapes = [ds.sample_observations_from_factors([[2, 5, 8, 3, s, 7]]) for s in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert (shapes[i] - shapes[j]).abs().sum() > 20


# -- Cars3D, SmallNORB, MPI3D, CelebA ----------------------------------------------------------

def test_cars3d_loader(tmp_path):
    import scipy.io

    folder = tmp_path / "cars"
    folder.mkdir()
    rng = np.random.default_rng(0)
    ims = []
    for name in ("car_001_mesh", "car_002_mesh"):
        im = rng.integers(0, 256, (128, 128, 3, 24, 4), dtype=np.uint8)
        scipy.io.savemat(folder / f"{name}.mat", {"im": im})
        ims.append(im)
    (folder / "list.txt").write_text("car_002_mesh\ncar_001_mesh\n")  # list.txt decides order
    ds = load("cars3d", root=tmp_path)
    assert ds.factor_names == ("elevation", "azimuth", "car") and ds.factor_sizes == (4, 24, 2)
    index = ds.factors_to_index([[3, 10, 0]])[0]
    expected = ims[1][:, :, :, 10, 3].reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    got = ds.images_uint8(np.array([index]))[0].astype(float)
    assert np.abs(got - expected).max() <= 0.5 + 1e-9
    assert len(list((tmp_path / "cache").glob("cars3d-*.npy"))) == 1
    assert torch.equal(load("cars3d", root=tmp_path).batch([index]), ds.batch([index]))
    (folder / "car_001_mesh.mat").unlink()
    for f in (tmp_path / "cache").glob("*"):
        f.unlink()
    with pytest.raises(DataSetError, match="car_001_mesh.mat"):
        load("cars3d", root=tmp_path)


def write_norb(path: Path, array: np.ndarray):
    magic = 0x1E3D4C55 if array.dtype == np.uint8 else 0x1E3D4C54
    dims = list(array.shape) + [1] * max(0, 3 - array.ndim)
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", magic, array.ndim))
        f.write(struct.pack(f"<{len(dims)}i", *dims))
        f.write(array.astype(array.dtype.newbyteorder("<")).tobytes())


def test_smallnorb_loader(tmp_path):
    from wtc.data.others import NORB_PREFIXES

    folder = tmp_path / "small_norb"
    folder.mkdir()
    rng = np.random.default_rng(0)
    expected = []
    for prefix, n in zip(NORB_PREFIXES, (6, 4)):
        dat = rng.integers(0, 256, (n, 2, 96, 96), dtype=np.uint8)
        cat = rng.integers(0, 5, n).astype(np.int32)
        info = np.stack([rng.integers(0, 10, n), rng.integers(0, 9, n),
                         rng.integers(0, 18, n) * 2, rng.integers(0, 6, n)], 1).astype(np.int32)
        write_norb(folder / f"{prefix}-dat.mat", dat)
        write_norb(folder / f"{prefix}-cat.mat", cat)
        write_norb(folder / f"{prefix}-info.mat", info)
        expected.append(np.stack([cat, info[:, 1], info[:, 2] // 2, info[:, 3]], 1))
    ds = load("smallnorb", root=tmp_path)
    factors = np.concatenate(expected)
    assert len(ds) == 10 and np.array_equal(ds.index_to_factors(np.arange(10)), factors)
    images = ds.sample_observations_from_factors(factors[[3, 8]], np.random.default_rng(0))
    assert images.shape == (2, 1, 64, 64)
    picked = ds.factors_to_index(factors[[3, 8]], np.random.default_rng(0))
    assert np.array_equal(ds.index_to_factors(picked), factors[[3, 8]])
    with pytest.raises(ValueError, match="no image has the factors"):
        missing = next(f for f in np.ndindex(*ds.factor_sizes)
                       if not (factors == f).all(1).any())
        ds.factors_to_index([missing])
    # A truncated matrix file is an error, not garbage.
    dat = folder / f"{NORB_PREFIXES[0]}-dat.mat"
    dat.write_bytes(dat.read_bytes()[:5000])
    with pytest.raises(DataSetError, match="truncated"):
        load("smallnorb", root=tmp_path)


@pytest.mark.parametrize("compressed", [False, True])
def test_mpi3d_loader(tmp_path, compressed):
    sizes = (2, 2, 1, 1, 1, 2, 2)
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "mpi3d_toy.npz", images=images)
    ds = load("mpi3d", root=tmp_path, factor_sizes=sizes)
    assert isinstance(ds._images, np.memmap) != compressed
    assert np.array_equal(ds.images_uint8(np.array([3, 15])), images[[3, 15]])
    with pytest.raises(DataSetError, match="expected images uint8"):
        load("mpi3d", root=tmp_path)  # the full grid's size does not match this file


def test_celeba_loader(tmp_path):
    from PIL import Image

    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(3):
        pixels = np.zeros((218, 178, 3), np.uint8)
        pixels[20:198] = 200  # the centre 178x178 crop is bright, the rest dark
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg")
    ds = load("celeba", root=tmp_path)
    assert len(ds) == 3 and ds.factor_sizes == ()
    batch = ds.batch([0, 2])
    assert batch.shape == (2, 3, 64, 64) and batch.min() > 0.7
    with pytest.raises(ValueError, match="no ground-truth factors"):
        ds.sample_factors(4, np.random.default_rng(0))


# -- CLI ---------------------------------------------------------------------------------------

def test_wtc_data_show(tmp_path, capsys):
    out = tmp_path / "examples.png"
    assert wtc_main(["data", "dsprites-procedural", "--grid-step", "4", "--show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "posY" in text and "orientation" in text and out.stat().st_size > 1000
    assert wtc_main(["data", "dsprites", "--root", str(tmp_path)]) == 2
    assert "dsprites-procedural" in capsys.readouterr().err


# -- the registry ------------------------------------------------------------------------------

def test_registry_derives_todays_names_files_and_options():
    import wtc.data
    from wtc.data.registry import DATASETS

    assert wtc.data.NAMES == ("dsprites", "shapes3d", "cars3d", "smallnorb", "mpi3d", "celeba",
                              "dsprites-procedural", "shapes3d-procedural")
    assert wtc.data.CLI_OPTIONS == ("grid_step", "protocol", "variant")
    # What _FILES and _PROCEDURAL held before the registry.
    files = {name: (e.file, list(e.folders)) for name, e in DATASETS.items() if not e.procedural}
    assert files == {
        "dsprites": ("dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", ["dsprites"]),
        "shapes3d": ("3dshapes.h5", ["shapes3d", "3dshapes"]),
        "cars3d": ("list.txt", ["cars", "cars3d"]),
        "smallnorb": ("smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat",
                      ["small_norb", "smallnorb"]),
        "mpi3d": ("mpi3d_{variant}.npz", ["mpi3d_{variant}", "mpi3d"]),
        "celeba": ("img_align_celeba", ["celeba", "CelebA"]),
    }
    assert {n: e.lookalike for n, e in DATASETS.items() if e.lookalike} == {
        "dsprites": "dsprites-procedural", "shapes3d": "shapes3d-procedural"}
    assert DATASETS["shapes3d"].factor_sizes == (10, 10, 10, 8, 4, 15)
    assert DATASETS["dsprites"].factor_names[0] == "color"


def test_an_option_a_data_set_does_not_take_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(DataSetError, match=r"does not take the option 'variant' \(--variant\); "
                                           r"dsprites-procedural takes: protocol, grid_step"):
        load("dsprites-procedural", variant="real")
    with pytest.raises(DataSetError, match="'in_memory'.*takes: grid_step"):
        load("shapes3d-procedural", in_memory=False)
    with pytest.raises(DataSetError, match="variant must be one of toy, realistic, real"):
        load("mpi3d", root=tmp_path, variant="big")  # before looking for a file
    # Options from Python only are still accepted.
    assert len(load("dsprites-procedural", grid_step=(1, 3, 6, 40, 32, 32), cache=False)) == 1
    assert wtc_main(["data", "shapes3d-procedural", "--protocol", "dlib"]) == 2
    err = capsys.readouterr().err
    assert "'protocol' (--protocol)" in err and "shapes3d-procedural takes: grid_step" in err


class Bars(GroundTruthDataset):
    """A tiny procedural data set, registered from outside the package: one vertical bar."""

    name = "bars"
    factor_names = ("position",)
    channels = 1

    def __init__(self, bar_width=8):
        self.bar_width = bar_width
        self.factor_sizes = (64 // bar_width,)

    def images_uint8(self, indices):
        images = np.zeros((len(indices), 64, 64), np.uint8)
        for i, k in enumerate(indices):
            images[i, :, k * self.bar_width:(k + 1) * self.bar_width] = 255
        return images


@pytest.fixture
def bars():
    from wtc.data import Option, register_dataset, unregister_dataset

    # The one place a new data set is declared.
    register_dataset("bars", Bars, options=[Option("bar_width", int, 8, help="bar width")])
    yield
    unregister_dataset("bars")


def test_a_data_set_registered_from_outside_is_loadable_and_on_the_command_line(bars, capsys):
    import wtc.data

    assert "bars" in wtc.data.NAMES and wtc.data.NAMES[-1] == "bars"
    assert "bar_width" in wtc.data.CLI_OPTIONS
    ds = load("bars", bar_width=16)
    assert ds.factor_sizes == (4,) and ds.batch([2])[0, 0, 0, 32:48].eq(1).all()
    with pytest.raises(SystemExit):
        wtc_main(["data", "--help"])
    text = capsys.readouterr().out
    assert "bars (--bar-width)" in text and "--bar-width BAR_WIDTH" in text
    assert wtc_main(["data", "bars", "--bar-width", "32"]) == 0
    assert "position           2" in capsys.readouterr().out
    assert wtc_main(["data", "bars", "--bar_width", "16"]) == 0  # the spelling sweeps pass
    assert wtc_main(["data", "bars", "--step", "2"]) == 2
    assert "bars does not take the option 'grid_step'" in capsys.readouterr().err
    # A train run gets the same flags.
    from wtc.cli import _data_options, build_parser

    args = build_parser().parse_args(["train", "--model", "beta-vae", "--data", "bars",
                                      "--bar-width", "4", "--out", "x"])
    assert _data_options(args) == {"bar_width": 4}
    with pytest.raises(ValueError, match="already registered"):
        wtc.data.register_dataset("bars", Bars)


def test_a_file_data_set_registered_from_outside_is_found(bars, tmp_path):
    from wtc.data import Option, find_file, register_dataset, unregister_dataset

    def open_bars(path, bar_width=8):
        assert path.read_text() == "bars"
        return Bars(bar_width)

    register_dataset("bars-file", open_bars, file="bars_{bar_width}.txt", folders=["bars"],
                     lookalike="bars", factor_names=["position"],
                     options=[Option("bar_width", int, 8, help="bar width")])
    try:
        with pytest.raises(DataSetError) as err:
            load("bars-file", root=tmp_path)
        message = str(err.value)
        assert "bars_8.txt" in message and str(tmp_path / "bars" / "bars_8.txt") in message
        assert "WTC_DATA" in message and "'bars'" in message
        (tmp_path / "bars").mkdir()
        (tmp_path / "bars" / "bars_16.txt").write_text("bars")
        assert find_file("bars-file", tmp_path, bar_width=16) == tmp_path / "bars" / "bars_16.txt"
        assert load("bars-file", root=tmp_path, bar_width=16).factor_sizes == (4,)
    finally:
        unregister_dataset("bars-file")


def test_registration_mistakes_are_caught_when_made(bars):
    import wtc.data
    from wtc.data import Option, register_dataset

    with pytest.raises(ValueError, match="differs in type or choices"):
        register_dataset("other", Bars, options=[Option("bar_width", str, "8")])
    with pytest.raises(ValueError, match="declares default 4 but .*Bars defaults to 8"):
        register_dataset("other", Bars, options=[Option("bar_width", int, 4)], replace=True)
    assert "other" not in wtc.data.NAMES


# -- damaged and hostile files: each a clear DataSetError, never a traceback or a huge allocation

def _npz_with_member_header(path: Path, key: str, shape, dtype="|u1"):
    """An npz whose member ``key`` has a header claiming ``shape`` but holds 16 bytes."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                               "shape": tuple(shape)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", buf.getvalue() + bytes(16))
        classes = io.BytesIO()
        np.save(classes, np.zeros((1, 6), np.int64))
        zf.writestr("latents_classes.npy", classes.getvalue())


def test_dsprites_damaged_files_are_clear_errors(tmp_path):
    folder = tmp_path / "dsprites"
    folder.mkdir()
    path = folder / DSPRITES_FILE
    _npz_with_member_header(path, "imgs", (100_000_000, 64, 64))  # 381 GiB claimed
    with pytest.raises(DataSetError, match="claims"):
        load("dsprites", root=tmp_path)
    imgs = np.zeros((2, 64, 64), np.uint8)
    cases = {"negative": np.array([[0] * 6, [0, 0, 0, 0, 0, -1]], np.int64),
             "integer latents_classes": np.zeros((2, 6), np.float64),
             "no images": np.zeros((0, 6), np.int64)}
    for match, classes in cases.items():
        n = len(classes)
        np.savez(path, imgs=imgs[:n], latents_classes=classes)
        with pytest.raises(DataSetError, match=match):
            load("dsprites", root=tmp_path)


def test_shapes3d_images_as_a_group_or_string_labels_are_clear_errors(tmp_path):
    import h5py

    path = tmp_path / "3dshapes.h5"
    with h5py.File(path, "w") as f:
        f.create_group("images")
        f["labels"] = np.zeros((4, 6))
    with pytest.raises(DataSetError, match="'images' is a Group"):
        load("shapes3d", root=tmp_path)
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 64, 64, 3), np.uint8)
        f["labels"] = np.array([[b"a"] * 6] * 4)
    with pytest.raises(DataSetError, match="numeric labels"):
        load("shapes3d", root=tmp_path)


def test_cars3d_binary_list_is_a_clear_error(tmp_path):
    folder = tmp_path / "cars"
    folder.mkdir()
    (folder / "list.txt").write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataSetError, match="not a text file"):
        load("cars3d", root=tmp_path)


def test_smallnorb_truncated_or_lying_headers_are_clear_errors(tmp_path):
    folder = tmp_path / "small_norb"
    folder.mkdir()
    prefix = "smallnorb-5x46789x9x18x6x2x96x96-training"
    for name in ("dat", "cat", "info"):
        (folder / f"{prefix}-{name}.mat").write_bytes(b"")
    path = folder / f"{prefix}-dat.mat"
    path.write_bytes(struct.pack("<ii", 0x1E3D4C55, 4) + struct.pack("<i", 10))  # cut short
    with pytest.raises(DataSetError, match="truncated"):
        load("smallnorb", root=tmp_path)
    # a header claiming 10^12 values over a file of a few bytes: refused before allocating
    path.write_bytes(struct.pack("<ii", 0x1E3D4C55, 4) + struct.pack("<4i", 10**4, 2, 10**4,
                                                                      10**4) + bytes(8))
    with pytest.raises(DataSetError, match="claims"):
        load("smallnorb", root=tmp_path)
    path.write_bytes(struct.pack("<ii", 0x1E3D4C55, 3) + struct.pack("<3i", 2, -2, 2))
    with pytest.raises(DataSetError, match="negative"):
        load("smallnorb", root=tmp_path)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data follows)."""
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [5_000, 20_000])  # 25 and 400 megapixels
def test_celeba_huge_image_is_a_clear_error(tmp_path, side):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    (folder / "000001.jpg").write_bytes(_png_header(side, side))
    with pytest.raises(DataSetError, match="000001.jpg"):
        load("celeba", root=tmp_path, cache=False)
