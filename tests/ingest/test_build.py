"""lazypatch build: real files in, identical stores out, shards, statistics, codecs.

Sources are PNG and JPEG photographs from scikit-image, a tiled and a
planar 16-bit TIFF, .npy arrays and a multi-page TIFF stack; every stored
image is compared with the decoded file. Two builds (with and without
decoding threads) must give byte-identical datasets.

Matrix: sources {PNG, JPEG, .npy, tiled / planar / striped TIFF, TIFF stack as
3-D or as its first page} x masks {paired by stem, by place in mirrored
folders, palette PNG, unmatched, shared} x output {one store, shards by count,
by size, one shard of several, dry run} x statistics and normalization x the
hdf5plugin codecs {zstd, lz4, blosc, bitshuffle}.
"""

import glob
import hashlib
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import skimage.data
import tifffile
import torch
from PIL import Image

from lazypatch import ImageStore, PatchDataset
from lazypatch.cli import main
from lazypatch.errors import ParameterError
from lazypatch.normalize import ChannelStats

DATASETS = ("pixels", "masks", "shapes", "tile_offsets", "crc32", "mask_crc32", "names", "name_offsets",
            "meta", "meta_offsets", "info_crc32")


@pytest.fixture
def folder(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    (images / "b").mkdir(parents=True)
    masks.mkdir()
    rgb = {"a_astronaut.png": skimage.data.astronaut(), "b/coffee.jpg": skimage.data.coffee(),
           "c_chelsea.png": skimage.data.chelsea(), "d_rocket.npy": skimage.data.rocket()}
    for name, array in rgb.items():
        path = images / name
        if name.endswith(".npy"):
            np.save(path, array)
        else:
            Image.fromarray(array).save(path, quality=95)
    for name, array in rgb.items():
        shape = array.shape[:2]
        label = (np.arange(np.prod(shape)) // 997 % 4).astype(np.uint8).reshape(shape)
        Image.fromarray(label).save(masks / f"{os.path.splitext(os.path.basename(name))[0]}_mask.png")
    return tmp_path


def decoded(path):
    if path.endswith(".npy"):
        return np.load(path)
    return np.asarray(Image.open(path))


def digest(path) -> dict:
    with h5py.File(path, "r") as f:
        return {name: hashlib.sha256(f[name][()].tobytes()).hexdigest() for name in DATASETS if name in f}


def test_build_round_trip_report_and_determinism(folder, capsys):
    src, masks = str(folder / "images"), str(folder / "masks")
    out1, out2 = str(folder / "one.h5"), str(folder / "two.h5")
    assert main(["build", src, out1, "--masks", masks, "--mask-suffix", "_mask", "--no-progress",
                 "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "4 images in" in text and "masks: 4 paired by stem (uint8)" in text and "wrote 4 images" in text
    store = ImageStore(out1)
    assert store.names == ["a_astronaut.png", "b/coffee.jpg", "c_chelsea.png", "d_rocket.npy"]
    for k, name in enumerate(store.names):
        assert np.array_equal(store.read(k), decoded(str(folder / "images" / name)))
    assert np.array_equal(store.read_mask(1), decoded(str(folder / "masks" / "coffee_mask.png")))
    provenance = json.loads(store.attrs["provenance"])
    assert provenance["source"] == os.path.abspath(src) and provenance["mask_suffix"] == "_mask"
    # the same input in a fresh build, decoded in the writing process: identical datasets
    assert main(["build", src, out2, "--masks", masks, "--mask-suffix", "_mask", "--no-progress",
                 "--workers", "0"]) == 0
    first, second = digest(out1), digest(out2)
    assert set(first) == set(DATASETS) and first == second


def test_unmatched_masks_error_or_skip(folder, capsys):
    os.remove(folder / "masks" / "c_chelsea_mask.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "masks" / "stray_mask.png")
    src, masks, out = str(folder / "images"), str(folder / "masks"), str(folder / "s.h5")
    assert main(["build", src, out, "--masks", masks, "--mask-suffix", "_mask"]) == 1
    err = capsys.readouterr().err
    assert "1 image(s) without a mask" in err and "c_chelsea.png" in err and "--allow-unmatched" in err
    assert not os.path.exists(out)
    assert main(["build", src, out, "--masks", masks, "--mask-suffix", "_mask", "--allow-unmatched",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "1 image(s) without a mask, left out" in text and "1 mask(s) matching no image, ignored" in text
    assert ImageStore(out).names == ["a_astronaut.png", "b/coffee.jpg", "d_rocket.npy"]


def test_palette_masks_keep_their_labels(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    label = (np.arange(40 * 60) // 300 % 21).astype(np.uint8).reshape(40, 60)  # VOC: 21 classes
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    palette = Image.fromarray(label, mode="P")
    palette.putpalette(list(np.random.default_rng(0).integers(0, 255, 768, dtype=np.uint8)))
    palette.save(tmp_path / "mask" / "a.png")
    colour = Image.fromarray(label, mode="P")
    colour.putpalette(list(range(256)) * 3)
    colour.save(tmp_path / "img" / "b.png")  # a palette image: its colours
    Image.fromarray(label).save(tmp_path / "mask" / "b.png")
    out = str(tmp_path / "s.h5")
    assert main(["build", str(tmp_path / "img"), out, "--masks", str(tmp_path / "mask"), "--no-progress"]) == 0
    store = ImageStore(out)
    assert np.array_equal(store.read_mask(0), label)
    assert np.array_equal(store.read(1), np.asarray(colour.convert("RGB")))


def test_a_mask_named_by_several_images_is_an_error(tmp_path, capsys):
    for folder in ("img/cat", "img/dog", "mask"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("img/cat/001.png", "img/dog/001.png", "img/dog/002.png", "mask/001.png", "mask/002.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name)
    src, masks, out = str(tmp_path / "img"), str(tmp_path / "mask"), str(tmp_path / "s.h5")
    assert main(["build", src, out, "--masks", masks]) == 1
    err = capsys.readouterr().err
    assert "0 image(s) without a mask, 0 with several and 2 sharing one" in err and "001.png" in err
    assert not os.path.exists(out)
    assert main(["build", src, out, "--masks", masks, "--allow-unmatched", "--no-progress"]) == 0
    assert "1 mask(s) each named by several images, those images left out" in capsys.readouterr().out
    assert ImageStore(out).names == ["dog/002.png"]


def test_mirrored_mask_folders_pair_by_place(tmp_path):
    for folder in ("img/s1", "img/s2", "mask/s1", "mask/s2"):
        (tmp_path / folder).mkdir(parents=True)
    for k, part in enumerate(("s1", "s2")):
        Image.fromarray(np.full((8, 8), k, np.uint8)).save(tmp_path / "img" / part / "b.png")
        Image.fromarray(np.full((8, 8), 10 + k, np.uint8)).save(tmp_path / "mask" / part / "b.png")
    out = str(tmp_path / "s.h5")
    assert main(["build", str(tmp_path / "img"), out, "--masks", str(tmp_path / "mask"), "--no-progress"]) == 0
    store = ImageStore(out)
    assert store.names == ["s1/b.png", "s2/b.png"]
    assert [int(store.read_mask(k)[0, 0]) for k in range(2)] == [10, 11]


def test_dry_run_writes_nothing(folder, capsys):
    out = folder / "dry.h5"
    assert main(["build", str(folder / "images"), str(out), "--dry-run", "--tile", "128"]) == 0
    text = capsys.readouterr().out
    assert "dry run: nothing written" in text and "in layout 'tiled'" in text
    assert not out.exists() and not [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_shards_by_count_size_and_index(folder, capsys):
    src, out = str(folder / "images"), str(folder / "s.h5")
    assert main(["build", src, str(folder / "whole.h5"), "--no-progress"]) == 0
    assert main(["build", src, out, "--shards", "3", "--no-progress"]) == 0
    assert "a manifest of 3 shard(s)" in capsys.readouterr().out
    paths = sorted(glob.glob(str(folder / "s.h5.shards" / "*.h5")))
    assert len(paths) == 3
    whole, sharded = ImageStore(folder / "whole.h5"), ImageStore(out)  # the manifest opens as one store
    assert sharded.paths == paths and sharded.path == out
    assert sharded.names == whole.names and np.array_equal(sharded.shapes, whole.shapes)
    a, b = PatchDataset(whole, 64), PatchDataset(sharded, 64)
    every = np.arange(len(a))
    assert torch.equal(a.read_batch(every)["image"], b.read_batch(every)["image"])
    # one machine per shard: only shard 1, no manifest (lazypatch manifest makes it later)
    assert main(["build", src, str(folder / "m.h5"), "--shards", "2", "--shard-index", "1", "--no-progress"]) == 0
    assert "when every shard is written: lazypatch manifest" in capsys.readouterr().out
    assert [n[-9:] for n in os.listdir(folder / "m.h5.shards")] == ["-00001.h5"]
    assert not (folder / "m.h5").exists()
    assert main(["build", src, str(folder / "z.h5"), "--shard-size", "1MB", "--no-progress"]) == 0
    assert len(glob.glob(str(folder / "z.h5.shards" / "*.h5"))) == 4  # every image exceeds 1 MB
    assert main(["build", src, str(folder / "n.h5"), "--shards", "9"]) == 1
    assert "--shards must be between 1 and the 4 images, got 9" in capsys.readouterr().err


def test_tiled_and_planar_tiff_read_tile_by_tile(tmp_path, monkeypatch):
    big = (np.arange(1100 * 1500 * 3, dtype=np.uint32) * 2654435761 % 65521).astype(np.uint16)
    big = big.reshape(1100, 1500, 3)
    folder = tmp_path / "tif"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", big, tile=(256, 256), compression="zlib")
    tifffile.imwrite(folder / "b.tif", np.moveaxis(big[:300, :700], -1, 0).copy(),
                     planarconfig="separate", photometric="rgb", tile=(128, 128))
    tifffile.imwrite(folder / "c.tif", big[:500, :400], rowsperstrip=33)
    # never the whole page at once
    monkeypatch.setattr(tifffile.TiffPage, "asarray", lambda *a, **k: pytest.fail("whole-page decode"))
    out = tmp_path / "t.h5"
    assert main(["build", str(folder), str(out), "--no-progress", "--workers", "0"]) == 0
    store = ImageStore(out)
    assert np.array_equal(store.read(0), big)
    assert np.array_equal(store.read(1), big[:300, :700])
    assert np.array_equal(store.read(2), big[:500, :400])


def test_tiff_stack_as_3d(tmp_path, capsys):
    folder = tmp_path / "stacks"
    folder.mkdir()
    volume = (np.arange(9 * 40 * 50) % 4093).astype(np.uint16).reshape(9, 40, 50)
    tifffile.imwrite(folder / "v.tif", volume)
    out = tmp_path / "v.h5"
    assert main(["build", str(folder), str(out), "--spatial-ndim", "3", "--tile", "4,16,16",
                 "--no-progress"]) == 0
    store = ImageStore(out)
    assert store.spatial_ndim == 3 and np.array_equal(store.read(0), volume)
    capsys.readouterr()
    # tifffile's QYX pages may be channels or slices: in 2-D the build asks (--pages), see
    # tests/ingest/test_tiff_files.py; with --pages first it reads the first page, and says so
    assert main(["build", str(folder), str(tmp_path / "ask.h5"), "--no-progress"]) == 1
    assert "--pages channels, --pages z" in capsys.readouterr().err
    assert main(["build", str(folder), str(tmp_path / "first.h5"), "--pages", "first", "--no-progress"]) == 0
    assert "1 multi-page TIFF(s), e.g. " in capsys.readouterr().out  # 2-D: the first page, said so
    assert np.array_equal(ImageStore(tmp_path / "first.h5").read(0), volume[0])


def test_channel_statistics_and_normalization(folder, capsys):
    src, out = str(folder / "images"), str(folder / "s.h5")
    assert main(["build", src, out, "--stats", "--no-progress"]) == 0
    capsys.readouterr()
    store = ImageStore(out)
    pixels = np.concatenate([store.read(k).reshape(-1, 3) for k in range(len(store))]).astype(np.float64)
    stats = ChannelStats.open(store)
    assert np.allclose(stats.mean, pixels.mean(axis=0)) and np.allclose(stats.std, pixels.std(axis=0))
    for q in (0, 1, 50, 99, 100):
        assert np.allclose(stats.percentile(q), np.percentile(pixels, q, axis=0))
    assert main(["info", out, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert np.allclose(facts["channel_stats"]["mean"], pixels.mean(axis=0), atol=1e-3)
    zscore = PatchDataset(store, 32, normalize="zscore")
    sample = zscore[7]
    raw = PatchDataset(store, 32)[7]["image"].double()
    expected = (raw - torch.tensor(pixels.mean(0))[:, None, None]) / torch.tensor(pixels.std(0))[:, None, None]
    assert sample["image"].dtype == torch.float32 and torch.allclose(sample["image"].double(), expected, atol=1e-4)
    batch = zscore.read_batch([7, 8])
    assert torch.allclose(batch["image"][0], sample["image"])
    clipped = PatchDataset(store, 32, normalize="percentile").read_batch(range(50))["image"]
    assert clipped.min() >= 0 and clipped.max() <= 1
    halves = PatchDataset(store, 32, dtype=torch.float16, normalize=lambda x: x / 2)[7]["image"]
    assert halves.dtype == torch.float16 and torch.allclose(halves.double(), raw / 2)
    as_float = PatchDataset(store, 32, dtype=torch.float32)[7]["image"]
    assert torch.equal(as_float, raw.float())
    # statistics computed afterwards, into a sidecar, agree with the build's
    plain = str(folder / "plain.h5")
    assert main(["build", src, plain, "--no-progress"]) == 0
    with pytest.raises(ParameterError, match="normalize='zscore' needs.*lazypatch index .* --stats"):
        PatchDataset(plain, 32, normalize="zscore")
    with pytest.raises(ParameterError, match="dtype=torch.int8 cannot hold every uint8 value"):
        PatchDataset(plain, 32, dtype=torch.int8)  # 128..255 would wrap around
    assert torch.equal(PatchDataset(plain, 32, dtype=torch.int16)[7]["image"], raw.short())
    assert main(["index", plain, "--stats"]) == 0
    assert np.allclose(ChannelStats.open(plain).mean, stats.mean)
    with pytest.raises(ValueError, match=r"normalize must be None, one of \('zscore', 'percentile'\)"):
        PatchDataset(store, 32, normalize="minmax")
    with pytest.raises(ValueError, match="needs a floating dtype"):
        PatchDataset(store, 32, dtype=torch.int32, normalize="zscore")
    with pytest.raises(TypeError, match="dtype must be a torch.dtype"):
        PatchDataset(store, 32, dtype="float32")


@pytest.mark.system
@pytest.mark.parametrize("codec", ["zstd", "lz4", "blosc", "bitshuffle"])
def test_hdf5plugin_codecs(tmp_path, codec):
    pytest.importorskip("hdf5plugin")
    from lazypatch import write_store

    images = [skimage.data.camera(), skimage.data.moon()]
    store = write_store(tmp_path / "c.h5", images, layout="chunked", compression=codec, tile=64,
                        progress=False)
    assert store.compression == codec
    assert all(np.array_equal(store.read(k), image) for k, image in enumerate(images))
    assert os.path.getsize(store.path) < sum(i.nbytes for i in images)
    # reading it without the plugin: a clear ImportError with the install hint
    script = ("import sys; sys.modules['hdf5plugin'] = None\n"
              "from lazypatch import ImageStore\n"
              "try:\n    ImageStore(sys.argv[1])\nexcept ImportError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", script, store.path], capture_output=True, text=True)
    assert f"compression '{codec}' is an hdf5plugin codec: install it with `pip install hdf5plugin`" \
        in result.stdout


def test_a_failed_sharded_build_leaves_nothing(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    for name in "abcd":
        Image.fromarray(np.full((64, 64, 3), ord(name), np.uint8)).save(tmp_path / "src" / f"{name}.png")
    data = (tmp_path / "src" / "d.png").read_bytes()
    (tmp_path / "src" / "d.png").write_bytes(data[: len(data) // 2])  # the header still reads
    assert main(["build", str(tmp_path / "src"), str(tmp_path / "s.h5"), "--shards", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cannot decode image" in err and "d.png" in err
    assert not (tmp_path / "s.h5").exists()  # no manifest, and the shard written before is removed
    assert not (tmp_path / "s.h5.shards").exists() or os.listdir(tmp_path / "s.h5.shards") == []
