"""Every bad input, as one table per entry point: (call, exception type, message pattern).

Matrix: PatchIndex (sizes, strides, edges, shapes, locate, flat_index,
subset); write_store (images, masks, names, meta, layouts, codecs, paths);
ImageStore and PatchDataset (files that are no store, io options, reads,
indexing); the command line (exit code and message). Each row names the
entry point and the bad value in its id; the message must name the
parameter, the rule and the value. write_store rows also check that nothing
is left at the target path (no store, no temporary file).
"""

import os
import re
from typing import NamedTuple

import h5py
import numpy as np
import pytest
import torch

from lazypatch import ImageStore, PatchDataset, PatchIndex, write_store
from lazypatch.errors import LazypatchError

GOOD = [np.zeros((20, 30, 3), np.uint8)]
SHAPES = [(20, 30)]  # the index rows' one image: 35 patches of 4x4
IMAGE = np.zeros((10, 10, 3), np.uint8)  # the write rows' image


class Place(NamedTuple):
    """What the write, store and command-line rows work on."""

    folder: object  # a folder of files that are no store (see ``files``)
    store: ImageStore  # good.h5: GOOD, no masks
    target: str  # where the write rows write: nothing is there


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    store = write_store(folder / "good.h5", GOOD, masks=None, progress=False)
    (folder / "text.h5").write_text("not hdf5 at all")
    with h5py.File(folder / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    (folder / "a dir").mkdir()
    (folder / "empty").mkdir()
    from PIL import Image

    (folder / "pngs").mkdir()
    (folder / "pngmasks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "pngs" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "pngmasks" / "a_mask.png")
    return Place(folder, store, str(folder / "new.h5"))


INDEX_ROWS = [
    pytest.param(lambda: PatchIndex(SHAPES, 0), ValueError,
                 r"patch_size must be positive integers, got \(0, 0\)", id="patch_size=0"),
    pytest.param(lambda: PatchIndex(SHAPES, -4), ValueError,
                 r"patch_size must be positive integers, got \(-4, -4\)", id="patch_size=-4"),
    pytest.param(lambda: PatchIndex(SHAPES, 4.0), TypeError,
                 r"patch_size must be an int or a sequence of 2 ints, got 4\.0", id="patch_size=4.0"),
    pytest.param(lambda: PatchIndex(SHAPES, True), TypeError,
                 r"patch_size must be an int .* got True", id="patch_size=True"),
    pytest.param(lambda: PatchIndex(SHAPES, (4, 4.5)), TypeError,
                 r"patch_size must be integers, got float 4\.5", id="patch_size=(4, 4.5)"),
    pytest.param(lambda: PatchIndex(SHAPES, (4, True)), TypeError,
                 r"patch_size must be integers, got bool True", id="patch_size=(4, True)"),
    pytest.param(lambda: PatchIndex(SHAPES, (4, 4, 4)), ValueError,
                 r"patch_size must have one entry per spatial axis \(2\), got 3", id="patch_size=(4, 4, 4)"),
    pytest.param(lambda: PatchIndex(SHAPES, "4"), TypeError,
                 r"patch_size must be an int or a sequence", id="patch_size='4'"),
    pytest.param(lambda: PatchIndex(SHAPES, 4, stride=0), ValueError,
                 r"stride must be positive integers, got \(0, 0\)", id="stride=0"),
    pytest.param(lambda: PatchIndex(SHAPES, 4, stride=(2,)), ValueError,
                 r"stride must have one entry per spatial axis \(2\), got 1", id="stride=(2,)"),
    pytest.param(lambda: PatchIndex(SHAPES, 4, stride=1.5), TypeError,
                 r"stride must be an int or a sequence of 2 ints, got 1\.5", id="stride=1.5"),
    pytest.param(lambda: PatchIndex(SHAPES, 4, edge="wrap"), ValueError,
                 r"edge must be one of \('drop', 'shift', 'pad'\), got 'wrap'", id="edge='wrap'"),
    pytest.param(lambda: PatchIndex(SHAPES, 64), ValueError,
                 r"patch_size \(64, 64\) fits in none of the 1 images \(largest is 20x30\) with edge='drop'; "
                 r"use edge='shift' or 'pad'",
                 id="patch_size=64 fits no image"),
    pytest.param(lambda: PatchIndex([(20, 30), (5,)], 4), ValueError, r"shapes must be", id="shapes of 2 and 1 axes"),
    pytest.param(lambda: PatchIndex([(20, 0)], 4), ValueError,
                 r"shapes must be positive, got \(20, 0\) for image 0", id="shape (20, 0)"),
    pytest.param(lambda: PatchIndex([(20.5, 3)], 4), TypeError, r"shapes must be integers", id="shape (20.5, 3)"),
    pytest.param(lambda: PatchIndex(SHAPES, 4).locate(150), IndexError,
                 r"patch index 150 is out of range for 35 patches", id="locate(150)"),
    pytest.param(lambda: PatchIndex(SHAPES, 4).locate(-36), IndexError,
                 r"patch index -36 is out of range for 35 patches", id="locate(-36)"),
    pytest.param(lambda: PatchIndex(SHAPES, 4).locate(1.0), TypeError,
                 r"patch indices must be integers, got an array of float64", id="locate(1.0)"),
    pytest.param(lambda: PatchIndex(SHAPES, 4).locate([True]), TypeError,
                 r"patch indices must be integers, got an array of bool", id="locate([True])"),
    pytest.param(lambda: PatchIndex(SHAPES, 4).flat_index(0, (1, 0)), ValueError,
                 r"origin \(1, 0\) of image 0 is not on the grid", id="flat_index off the grid"),
    pytest.param(lambda: PatchIndex(SHAPES, 4).subset([1]), IndexError,
                 r"image id 1 is out of range for 1 images", id="subset([1])"),
]

WRITE_ROWS = [
    pytest.param(lambda at: write_store(at.target, []), ValueError,
                 r"images is empty: a store needs at least one image", id="no images"),
    pytest.param(lambda at: write_store(at.target, iter([])), ValueError, r"images is empty", id="an empty iterator"),
    pytest.param(lambda at: write_store(at.target, [IMAGE, IMAGE.astype(np.float32)]), ValueError,
                 r"all images must share one dtype: image 0 is uint8, image 1 is float32", id="uint8 and float32"),
    pytest.param(lambda at: write_store(at.target, [IMAGE, np.zeros((10, 10, 4), np.uint8)]), ValueError,
                 r"all images must have the same number of channels: image 0 has 3, image 1 has 4",
                 id="3 and 4 channels"),
    pytest.param(lambda at: write_store(at.target, [np.zeros((5, 5), np.uint8), np.zeros((5, 5, 1), np.uint8)]),
                 ValueError,
                 r"channel axis or none .*image 0 has none, image 1 has a channel axis",
                 id="with and without a channel axis"),
    pytest.param(lambda at: write_store(at.target, [np.zeros((5,), np.uint8)]), ValueError,
                 r"image 0 has shape \(5,\); with spatial_ndim=2 an image is \(H, W\) or \(H, W, C\)",
                 id="a 1-D image"),
    pytest.param(lambda at: write_store(at.target, [np.zeros((5, 5), complex)]), ValueError,
                 r"image 0 has dtype complex128", id="complex128"),
    pytest.param(lambda at: write_store(at.target, [np.zeros((0, 5), np.uint8)]), ValueError,
                 r"image 0 is empty", id="an empty image"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], masks=[np.zeros((10, 9), np.uint8)]), ValueError,
                 r"mask 0 has shape \(10, 9\), its image has spatial shape \(10, 10\)", id="mask of another shape"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], masks=[np.zeros((10, 10), np.float32)]), ValueError,
                 r"mask 0 has dtype float32; masks must be integer or bool", id="float32 mask"),
    pytest.param(lambda at: write_store(at.target, [IMAGE, IMAGE], masks=[np.zeros((10, 10), np.uint8)]), ValueError,
                 r"masks has 1 entries for 2 images", id="1 mask for 2 images"),
    pytest.param(lambda at: write_store(at.target, (i for i in [IMAGE, IMAGE]),
                                        masks=iter([np.zeros((10, 10), np.uint8)])),
                 ValueError, r"masks has 1 entries, fewer than the images", id="fewer masks than images (iterators)"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], names=["a", "b"]), ValueError,
                 r"names has more entries than the 1 images", id="2 names for 1 image"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], names=[3]), TypeError,
                 r"names must be strings, got int at 0", id="names=[3]"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], meta=[{"x": object()}]), ValueError,
                 r"meta 0 cannot be stored as JSON", id="meta not JSON"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], layout="rows"), ValueError,
                 r"layout must be one of \('tiled', 'contiguous', 'chunked'\), got 'rows'", id="layout='rows'"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], compression="gzip"), ValueError,
                 r"compression='gzip' needs layout='chunked' .*got layout='tiled'",
                 id="compression without layout='chunked'"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], layout="contiguous", checksum=True), ValueError,
                 r"checksum=True needs layout='chunked' .*got layout='contiguous'",
                 id="checksum with layout='contiguous'"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], compression="snappy", layout="chunked"), ValueError,
                 r"compression must be None or one of \('gzip', 'lzf', 'zstd', 'lz4', 'blosc', 'bitshuffle'\) "
                 r"\(the last 4 from the hdf5plugin package\), got 'snappy'", id="compression='snappy'"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], layout="contiguous", tile=32), ValueError,
                 r"tile applies to the 'tiled' and 'chunked' layouts, got tile=32 with layout='contiguous'",
                 id="tile with layout='contiguous'"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], tile=0), ValueError,
                 r"tile must be positive integers, got \(0, 0\)", id="tile=0"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], spatial_ndim=4), ValueError,
                 r"spatial_ndim must be 2 or 3, got 4", id="spatial_ndim=4"),
    pytest.param(lambda at: write_store(at.target, [np.full((4, 4), np.nan, np.float32)], check_finite=True),
                 ValueError,
                 r"image 0 holds NaN or infinite values", id="NaN with check_finite"),
    pytest.param(lambda at: write_store(at.target, "images"), TypeError,
                 r"images must be an iterable of arrays, got str", id="images='images'"),
    pytest.param(lambda at: write_store(at.target, IMAGE), ValueError,
                 r"images is one array of shape \(10, 10, 3\), which would be read as 10 images of shape \(10, 3\); "
                 r"pass \[image\] for one image", id="one array as images"),
    pytest.param(lambda at: write_store(123, [IMAGE]), TypeError,
                 r"path must be a str or os.PathLike, got int: 123", id="path=123"),
    pytest.param(lambda at: write_store(at.target, [IMAGE], overwrite="yes"), TypeError,
                 r"overwrite must be True or False", id="overwrite='yes'"),
    pytest.param(lambda at: write_store(at.folder / "good.h5", [IMAGE]), FileExistsError,
                 r"pass overwrite=True", id="existing store"),
    pytest.param(lambda at: write_store(at.folder / "a dir", [IMAGE]), IsADirectoryError,
                 r"a directory", id="path is a directory"),
    pytest.param(lambda at: write_store(at.folder / "missing" / "x.h5", [IMAGE]), FileNotFoundError,
                 r"folder of the store does not exist", id="folder does not exist"),
]

STORE_ROWS = [
    pytest.param(lambda at: ImageStore(at.folder / "missing.h5"), FileNotFoundError,
                 r"no such store file", id="missing file"),
    pytest.param(lambda at: ImageStore(at.folder / "a dir"), IsADirectoryError, r"got a directory", id="a directory"),
    pytest.param(lambda at: ImageStore(at.folder / "text.h5"), ValueError,
                 r"'.*text.h5' is not an HDF5 file", id="not HDF5"),
    pytest.param(lambda at: ImageStore(at.folder / "other.h5"), ValueError,
                 r"'.*other.h5' is not a lazypatch store \(no 'lazypatch_format' attribute\)",
                 id="HDF5 but not a store"),
    pytest.param(lambda at: ImageStore(at.store.path, io="fast"), ValueError,
                 r"io must be one of \('auto', 'mmap', 'pread'\), got 'fast'", id="io='fast'"),
    pytest.param(lambda at: ImageStore(at.store.path, io_threads=0), ValueError,
                 r"io_threads must be a positive integer, got 0", id="io_threads=0"),
    pytest.param(lambda at: at.store.read(1), IndexError, r"image id 1 is out of range for 1 images", id="read(1)"),
    pytest.param(lambda at: at.store.read(0.0), TypeError,
                 r"image_id must be an integer, got float 0\.0", id="read(0.0)"),
    pytest.param(lambda at: at.store.read_region(0, (0, 0), (0, 4)), ValueError,
                 r"size must be positive integers, got \(0, 4\)", id="read_region size (0, 4)"),
    pytest.param(lambda at: at.store.read_region(0, (0,), (4, 4)), ValueError,
                 r"origin must have one entry per spatial axis \(2\), got 1", id="read_region origin of 1 axis"),
    pytest.param(lambda at: at.store.read_region(0, (0, 0), (4, 4), pad_value=300), ValueError,
                 r"pad_value must be representable as uint8, got 300", id="read_region pad_value=300"),
    pytest.param(lambda at: at.store.read_region(0, (0, 0), (4, 4), pad_value=0.5), ValueError,
                 r"pad_value must be representable", id="read_region pad_value=0.5"),
    pytest.param(lambda at: at.store.read_mask(0), ValueError, r"has no masks", id="read_mask without masks"),
    pytest.param(lambda at: at.store.read_regions([0, 2], [(0, 0), (0, 0)], 4), IndexError,
                 r"image id 2 is out of range", id="read_regions image 2"),
    pytest.param(lambda at: at.store.read_regions([0], [(0, 0, 0)], 4), ValueError,
                 r"origins must have shape \(1, 2\)", id="read_regions 3-D origins"),
    pytest.param(lambda at: PatchDataset(at.store, 64), ValueError,
                 r"fits in none of the 1 images \(largest is 20x30\)", id="PatchDataset patch_size=64"),
    pytest.param(lambda at: PatchDataset(42, 4), TypeError,
                 r"store must be an ImageStore or a path, got int", id="PatchDataset(42)"),
    pytest.param(lambda at: PatchDataset(at.store, 4, transform=3), TypeError,
                 r"transform must be callable", id="PatchDataset transform=3"),
    pytest.param(lambda at: PatchDataset(at.store, 4, pad_value=-1), ValueError,
                 r"pad_value must be representable as uint8, got -1", id="PatchDataset pad_value=-1"),
    pytest.param(lambda at: PatchDataset(at.store, 4)[35], IndexError,
                 r"patch index 35 is out of range for 35 patches", id="dataset[35]"),
    pytest.param(lambda at: PatchDataset(at.store, 4)[2.0], TypeError,
                 r"patch index must be an integer", id="dataset[2.0]"),
    pytest.param(lambda at: PatchDataset(at.store, 4)[True], TypeError,
                 r"patch index must be an integer", id="dataset[True]"),
    pytest.param(lambda at: PatchDataset(at.store, 4)[torch.tensor(1.0)], TypeError,
                 r"patch index must be an integer", id="dataset[tensor(1.0)]"),
    pytest.param(lambda at: PatchDataset(at.store, 4).read_batch([0, 99]), IndexError,
                 r"patch index 99 is out of range", id="read_batch([0, 99])"),
    pytest.param(lambda at: PatchDataset(at.store, 4).read_batch(np.array([0.0])), TypeError,
                 r"patch indices must be integers", id="read_batch(float array)"),
    pytest.param(lambda at: PatchDataset(at.store, 4, image_ids=[1]), IndexError,
                 r"image id 1 is out of range for 1 images", id="PatchDataset image_ids=[1]"),
]



@pytest.mark.parametrize("call, kind, pattern", INDEX_ROWS)
def test_index_bad_input(call, kind, pattern):
    with pytest.raises(kind, match=pattern) as caught:
        call()
    assert isinstance(caught.value, LazypatchError)


@pytest.mark.parametrize("call, kind, pattern", WRITE_ROWS)
def test_write_store_bad_input_leaves_nothing(files, call, kind, pattern):
    before = sorted(os.listdir(files.folder))
    with pytest.raises(kind, match=pattern):
        call(files)
    assert sorted(os.listdir(files.folder)) == before  # nothing written, nothing left behind


@pytest.mark.parametrize("call, kind, pattern", STORE_ROWS)
def test_store_and_dataset_bad_input(files, call, kind, pattern):
    with pytest.raises(kind, match=pattern):
        call(files)


# argv with {folder} (the files above) and {store} (good.h5) filled in; the exit code; stderr
CLI_ROWS = [
    pytest.param(["info", "{folder}/missing.h5"], 1,
                 r"lazypatch info: error: .*no such store file.*missing\.h5", id="info missing.h5"),
    pytest.param(["info", "{folder}/a dir"], 1, r"a store is an HDF5 file, got a directory", id="info a directory"),
    pytest.param(["info", "{folder}/text.h5"], 1, r"text\.h5' is not an HDF5 file", id="info not HDF5"),
    pytest.param(["verify", "{folder}/other.h5"], 1, r"other\.h5' is not a lazypatch store", id="verify not a store"),
    pytest.param(["build", "{folder}/empty", "{folder}/x.h5"], 1,
                 r"no image files \(PNG, JPEG, TIFF, BMP, WebP, \.npy, slide, NIfTI or DICOM\) in", id="build no images"),
    pytest.param(["info", "{store}", "--patch", "0"], 1,
                 r"patch_size must be positive integers, got \(0, 0\)", id="info --patch 0"),
    pytest.param(["info", "{store}", "--patch", "64"], 1,
                 r"patch_size \(64, 64\) fits in none of the 1 images", id="info --patch 64"),
    pytest.param(["info", "{store}", "--patch", "abc"], 2,
                 r"argument --patch: expected an int or comma-separated ints, got 'abc'", id="info --patch abc"),
    pytest.param(["info", "{store}", "--edge", "wrap"], 2,
                 r"argument --edge: invalid choice: 'wrap'", id="info --edge wrap"),
    pytest.param(["index", "{store}"], 1,
                 r"choose one of --labels, --stats or --foreground", id="index without a choice"),
    pytest.param(["index", "{store}", "--labels"], 1,
                 r"label statistics need masks; .*good\.h5. has none", id="index --labels without masks"),
    pytest.param(["index", "{store}", "--foreground", "--from", "intensity"], 1,
                 r"--foreground needs --patch", id="index --foreground without --patch"),
    pytest.param(["build", "{folder}/pngs", "{folder}/x.h5", "--mask-suffix", "_m"], 1,
                 r"--mask-suffix '_m' needs --masks FOLDER", id="build --mask-suffix without --masks"),
    pytest.param(["build", "{folder}/pngs", "{folder}/x.h5", "--label-stats"], 1,
                 r"--label-stats counts mask labels: it needs --masks FOLDER",
                 id="build --label-stats without --masks"),
    pytest.param(["build", "{folder}/pngs", "{folder}/x.h5", "--shard-size", "0"], 1,
                 r"--shard-size must be positive, got '0'", id="build --shard-size 0"),
    pytest.param(["build", "{folder}/text.h5", "{folder}/x.h5"], 1,
                 r"text\.h5' is not a supported image file \(suffixes: \.png", id="build a file that is no image"),
    pytest.param(["build", "{folder}/pngs", "{folder}/x.h5", "--spatial-ndim", "3"], 1,
                 r"a\.png': PNG and JPEG images are 2-D; spatial_ndim=3 takes TIFF stacks and \.npy volumes",
                 id="build PNG with --spatial-ndim 3"),
    pytest.param(["build", "{folder}/pngs", "{folder}/x.h5", "--masks", "{folder}/pngmasks"], 1,
                 r"no mask for .*a\.png(.|\n)*1 mask\(s\) match no image(.|\n)*did you mean --mask-suffix '_mask'\?",
                 id="build masks named a_mask.png"),
]


@pytest.mark.parametrize("argv, code, pattern", CLI_ROWS)
def test_cli_bad_input(files, argv, code, pattern, capsys):
    from lazypatch.cli import main

    argv = [word.format(folder=files.folder, store=files.store.path) for word in argv]
    try:
        result = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        result = exc.code
    assert result == code
    assert re.search(pattern, capsys.readouterr().err)


@pytest.mark.parametrize("table", [INDEX_ROWS, WRITE_ROWS, STORE_ROWS, CLI_ROWS],
                         ids=["index", "write_store", "store and dataset", "command line"])
def test_every_row_has_its_own_id(table):
    # (each row is its own test: no hard-coded count to keep in step with the table)
    ids = [row.id for row in table]
    assert all(ids) and len(set(ids)) == len(ids)
