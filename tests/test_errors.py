"""Every bad input, as one table: (call, exception type, message pattern).

Each row names the entry point and the bad value; the message must name the
parameter, the rule and the value. write_store rows also check that nothing
is left at the target path (no store, no temporary file).
"""

import os
import re

import h5py
import numpy as np
import pytest
import torch

from lazypatch import ImageStore, PatchDataset, PatchIndex, write_store
from lazypatch.errors import LazypatchError

GOOD = [np.zeros((20, 30, 3), np.uint8)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    store = write_store(folder / "good.h5", GOOD, masks=None, progress=False)
    (folder / "text.h5").write_text("not hdf5 at all")
    with h5py.File(folder / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    (folder / "a dir").mkdir()
    from PIL import Image

    (folder / "pngs").mkdir()
    (folder / "pngmasks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "pngs" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "pngmasks" / "a_mask.png")
    return folder, store


def index_rows():
    shapes = [(20, 30)]
    return [
        (lambda: PatchIndex(shapes, 0), ValueError, r"patch_size must be positive integers, got \(0, 0\)"),
        (lambda: PatchIndex(shapes, -4), ValueError, r"patch_size must be positive integers, got \(-4, -4\)"),
        (lambda: PatchIndex(shapes, 4.0), TypeError, r"patch_size must be an int or a sequence of 2 ints, got 4\.0"),
        (lambda: PatchIndex(shapes, True), TypeError, r"patch_size must be an int .* got True"),
        (lambda: PatchIndex(shapes, (4, 4.5)), TypeError, r"patch_size must be integers, got float 4\.5"),
        (lambda: PatchIndex(shapes, (4, True)), TypeError, r"patch_size must be integers, got bool True"),
        (lambda: PatchIndex(shapes, (4, 4, 4)), ValueError, r"patch_size must have one entry per spatial axis \(2\), got 3"),
        (lambda: PatchIndex(shapes, "4"), TypeError, r"patch_size must be an int or a sequence"),
        (lambda: PatchIndex(shapes, 4, stride=0), ValueError, r"stride must be positive integers, got \(0, 0\)"),
        (lambda: PatchIndex(shapes, 4, stride=(2,)), ValueError, r"stride must have one entry per spatial axis \(2\), got 1"),
        (lambda: PatchIndex(shapes, 4, stride=1.5), TypeError, r"stride must be an int or a sequence of 2 ints, got 1\.5"),
        (lambda: PatchIndex(shapes, 4, edge="wrap"), ValueError, r"edge must be one of \('drop', 'shift', 'pad'\), got 'wrap'"),
        (lambda: PatchIndex(shapes, 64), ValueError,
         r"patch_size \(64, 64\) fits in none of the 1 images \(largest is 20x30\) with edge='drop'; use edge='shift' or 'pad'"),
        (lambda: PatchIndex([(20, 30), (5,)], 4), ValueError, r"shapes must be"),
        (lambda: PatchIndex([(20, 0)], 4), ValueError, r"shapes must be positive, got \(20, 0\) for image 0"),
        (lambda: PatchIndex([(20.5, 3)], 4), TypeError, r"shapes must be integers"),
        (lambda: PatchIndex(shapes, 4).locate(150), IndexError, r"patch index 150 is out of range for 35 patches"),
        (lambda: PatchIndex(shapes, 4).locate(-36), IndexError, r"patch index -36 is out of range for 35 patches"),
        (lambda: PatchIndex(shapes, 4).locate(1.0), TypeError, r"patch indices must be integers, got an array of float64"),
        (lambda: PatchIndex(shapes, 4).locate([True]), TypeError, r"patch indices must be integers, got an array of bool"),
        (lambda: PatchIndex(shapes, 4).flat_index(0, (1, 0)), ValueError, r"origin \(1, 0\) of image 0 is not on the grid"),
        (lambda: PatchIndex(shapes, 4).subset([1]), IndexError, r"image id 1 is out of range for 1 images"),
    ]


def write_rows(folder):
    target = str(folder / "new.h5")
    image = np.zeros((10, 10, 3), np.uint8)
    return [
        (lambda: write_store(target, []), ValueError, r"images is empty: a store needs at least one image"),
        (lambda: write_store(target, iter([])), ValueError, r"images is empty"),
        (lambda: write_store(target, [image, image.astype(np.float32)]), ValueError,
         r"all images must share one dtype: image 0 is uint8, image 1 is float32"),
        (lambda: write_store(target, [image, np.zeros((10, 10, 4), np.uint8)]), ValueError,
         r"all images must have the same number of channels: image 0 has 3, image 1 has 4"),
        (lambda: write_store(target, [np.zeros((5, 5), np.uint8), np.zeros((5, 5, 1), np.uint8)]), ValueError,
         r"channel axis or none .*image 0 has none, image 1 has a channel axis"),
        (lambda: write_store(target, [np.zeros((5,), np.uint8)]), ValueError,
         r"image 0 has shape \(5,\); with spatial_ndim=2 an image is \(H, W\) or \(H, W, C\)"),
        (lambda: write_store(target, [np.zeros((5, 5), complex)]), ValueError, r"image 0 has dtype complex128"),
        (lambda: write_store(target, [np.zeros((0, 5), np.uint8)]), ValueError, r"image 0 is empty"),
        (lambda: write_store(target, [image], masks=[np.zeros((10, 9), np.uint8)]), ValueError,
         r"mask 0 has shape \(10, 9\), its image has spatial shape \(10, 10\)"),
        (lambda: write_store(target, [image], masks=[np.zeros((10, 10), np.float32)]), ValueError,
         r"mask 0 has dtype float32; masks must be integer or bool"),
        (lambda: write_store(target, [image, image], masks=[np.zeros((10, 10), np.uint8)]), ValueError,
         r"masks has 1 entries for 2 images"),
        (lambda: write_store(target, (i for i in [image, image]), masks=iter([np.zeros((10, 10), np.uint8)])),
         ValueError, r"masks has 1 entries, fewer than the images"),
        (lambda: write_store(target, [image], names=["a", "b"]), ValueError, r"names has more entries than the 1 images"),
        (lambda: write_store(target, [image], names=[3]), TypeError, r"names must be strings, got int at 0"),
        (lambda: write_store(target, [image], meta=[{"x": object()}]), ValueError, r"meta 0 cannot be stored as JSON"),
        (lambda: write_store(target, [image], layout="rows"), ValueError,
         r"layout must be one of \('tiled', 'contiguous', 'chunked'\), got 'rows'"),
        (lambda: write_store(target, [image], compression="gzip"), ValueError,
         r"compression='gzip' needs layout='chunked' .*got layout='tiled'"),
        (lambda: write_store(target, [image], layout="contiguous", checksum=True), ValueError,
         r"checksum=True needs layout='chunked' .*got layout='contiguous'"),
        (lambda: write_store(target, [image], compression="snappy", layout="chunked"), ValueError,
         r"compression must be None or one of \('gzip', 'lzf', 'zstd', 'lz4', 'blosc', 'bitshuffle'\) "
         r"\(the last 4 from the hdf5plugin package\), got 'snappy'"),
        (lambda: write_store(target, [image], layout="contiguous", tile=32), ValueError,
         r"tile applies to the 'tiled' and 'chunked' layouts, got tile=32 with layout='contiguous'"),
        (lambda: write_store(target, [image], tile=0), ValueError, r"tile must be positive integers, got \(0, 0\)"),
        (lambda: write_store(target, [image], spatial_ndim=4), ValueError, r"spatial_ndim must be 2 or 3, got 4"),
        (lambda: write_store(target, [np.full((4, 4), np.nan, np.float32)], check_finite=True), ValueError,
         r"image 0 holds NaN or infinite values"),
        (lambda: write_store(target, "images"), TypeError, r"images must be an iterable of arrays, got str"),
        (lambda: write_store(target, image), ValueError,
         r"images is one array of shape \(10, 10, 3\), which would be read as 10 images of shape \(10, 3\); "
         r"pass \[image\] for one image"),
        (lambda: write_store(123, [image]), TypeError, r"path must be a str or os.PathLike, got int: 123"),
        (lambda: write_store(target, [image], overwrite="yes"), TypeError, r"overwrite must be True or False"),
        (lambda: write_store(folder / "good.h5", [image]), FileExistsError, r"pass overwrite=True"),
        (lambda: write_store(folder / "a dir", [image]), IsADirectoryError, r"a directory"),
        (lambda: write_store(folder / "missing" / "x.h5", [image]), FileNotFoundError, r"folder of the store does not exist"),
    ]


def store_rows(folder, store):
    return [
        (lambda: ImageStore(folder / "missing.h5"), FileNotFoundError, r"no such store file"),
        (lambda: ImageStore(folder / "a dir"), IsADirectoryError, r"got a directory"),
        (lambda: ImageStore(folder / "text.h5"), ValueError, r"'.*text.h5' is not an HDF5 file"),
        (lambda: ImageStore(folder / "other.h5"), ValueError,
         r"'.*other.h5' is not a lazypatch store \(no 'lazypatch_format' attribute\)"),
        (lambda: ImageStore(store.path, io="fast"), ValueError, r"io must be one of \('auto', 'mmap', 'pread'\), got 'fast'"),
        (lambda: ImageStore(store.path, io_threads=0), ValueError, r"io_threads must be a positive integer, got 0"),
        (lambda: store.read(1), IndexError, r"image id 1 is out of range for 1 images"),
        (lambda: store.read(0.0), TypeError, r"image_id must be an integer, got float 0\.0"),
        (lambda: store.read_region(0, (0, 0), (0, 4)), ValueError, r"size must be positive integers, got \(0, 4\)"),
        (lambda: store.read_region(0, (0,), (4, 4)), ValueError, r"origin must have one entry per spatial axis \(2\), got 1"),
        (lambda: store.read_region(0, (0, 0), (4, 4), pad_value=300), ValueError,
         r"pad_value must be representable as uint8, got 300"),
        (lambda: store.read_region(0, (0, 0), (4, 4), pad_value=0.5), ValueError, r"pad_value must be representable"),
        (lambda: store.read_mask(0), ValueError, r"has no masks"),
        (lambda: store.read_regions([0, 2], [(0, 0), (0, 0)], 4), IndexError, r"image id 2 is out of range"),
        (lambda: store.read_regions([0], [(0, 0, 0)], 4), ValueError, r"origins must have shape \(1, 2\)"),
        (lambda: PatchDataset(store, 64), ValueError, r"fits in none of the 1 images \(largest is 20x30\)"),
        (lambda: PatchDataset(42, 4), TypeError, r"store must be an ImageStore or a path, got int"),
        (lambda: PatchDataset(store, 4, transform=3), TypeError, r"transform must be callable"),
        (lambda: PatchDataset(store, 4, pad_value=-1), ValueError, r"pad_value must be representable as uint8, got -1"),
        (lambda: PatchDataset(store, 4)[35], IndexError, r"patch index 35 is out of range for 35 patches"),
        (lambda: PatchDataset(store, 4)[2.0], TypeError, r"patch index must be an integer"),
        (lambda: PatchDataset(store, 4)[True], TypeError, r"patch index must be an integer"),
        (lambda: PatchDataset(store, 4)[torch.tensor(1.0)], TypeError, r"patch index must be an integer"),
        (lambda: PatchDataset(store, 4).read_batch([0, 99]), IndexError, r"patch index 99 is out of range"),
        (lambda: PatchDataset(store, 4).read_batch(np.array([0.0])), TypeError, r"patch indices must be integers"),
        (lambda: PatchDataset(store, 4, image_ids=[1]), IndexError, r"image id 1 is out of range for 1 images"),
    ]




@pytest.mark.parametrize("row", range(len(index_rows())))
def test_index_bad_input(row):
    call, kind, pattern = index_rows()[row]
    with pytest.raises(kind, match=pattern) as caught:
        call()
    assert isinstance(caught.value, LazypatchError)


@pytest.mark.parametrize("row", range(30))
def test_write_store_bad_input_leaves_nothing(files, row):
    folder, _ = files
    rows = write_rows(folder)
    assert len(rows) == 30
    before = sorted(os.listdir(folder))
    call, kind, pattern = rows[row]
    with pytest.raises(kind, match=pattern):
        call()
    assert sorted(os.listdir(folder)) == before  # nothing written, nothing left behind


@pytest.mark.parametrize("row", range(26))
def test_store_and_dataset_bad_input(files, row):
    folder, store = files
    rows = store_rows(folder, store)
    assert len(rows) == 26
    call, kind, pattern = rows[row]
    with pytest.raises(kind, match=pattern):
        call()


def cli_rows(folder, store):
    (folder / "empty").mkdir(exist_ok=True)
    good = str(store.path)
    return [
        (["info", str(folder / "missing.h5")], 1, r"lazypatch info: error: .*no such store file.*missing\.h5"),
        (["info", str(folder / "a dir")], 1, r"a store is an HDF5 file, got a directory"),
        (["info", str(folder / "text.h5")], 1, r"text\.h5' is not an HDF5 file"),
        (["verify", str(folder / "other.h5")], 1, r"other\.h5' is not a lazypatch store"),
        (["build", str(folder / "empty"), str(folder / "x.h5")], 1, r"no PNG, JPEG, TIFF or \.npy files in"),
        (["info", good, "--patch", "0"], 1, r"patch_size must be positive integers, got \(0, 0\)"),
        (["info", good, "--patch", "64"], 1, r"patch_size \(64, 64\) fits in none of the 1 images"),
        (["info", good, "--patch", "abc"], 2, r"argument --patch: expected an int or comma-separated ints, got 'abc'"),
        (["info", good, "--edge", "wrap"], 2, r"argument --edge: invalid choice: 'wrap'"),
        (["index", good], 1, r"choose one of --labels, --stats or --foreground"),
        (["index", good, "--labels"], 1, r"label statistics need masks; .*good\.h5. has none"),
        (["index", good, "--foreground", "--from", "intensity"], 1, r"--foreground needs --patch"),
        (["build", str(folder / "pngs"), str(folder / "x.h5"), "--mask-suffix", "_m"], 1,
         r"--mask-suffix '_m' needs --masks FOLDER"),
        (["build", str(folder / "pngs"), str(folder / "x.h5"), "--label-stats"], 1,
         r"--label-stats counts mask labels: it needs --masks FOLDER"),
        (["build", str(folder / "pngs"), str(folder / "x.h5"), "--shard-size", "0"], 1,
         r"--shard-size must be positive, got '0'"),
        (["build", str(folder / "text.h5"), str(folder / "x.h5")], 1,
         r"text\.h5' is not a supported image file \(suffixes: \.png"),
        (["build", str(folder / "pngs"), str(folder / "x.h5"), "--spatial-ndim", "3"], 1,
         r"a\.png': PNG and JPEG images are 2-D; spatial_ndim=3 takes TIFF stacks and \.npy volumes"),
        (["build", str(folder / "pngs"), str(folder / "x.h5"), "--masks", str(folder / "pngmasks")], 1,
         r"no mask for .*a\.png(.|\n)*1 mask\(s\) match no image(.|\n)*did you mean --mask-suffix '_mask'\?"),
    ]


@pytest.mark.parametrize("row", range(18))
def test_cli_bad_input(files, row, capsys):
    from lazypatch.cli import main

    folder, store = files
    rows = cli_rows(folder, store)
    assert len(rows) == 18
    argv, code, pattern = rows[row]
    try:
        result = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        result = exc.code
    assert result == code
    assert re.search(pattern, capsys.readouterr().err)
