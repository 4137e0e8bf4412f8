"""Integrity, untrusted files, changes while open, locking, shards, odd paths.

Damage is made at byte offsets found from the store's own tables (the
pixels dataset's file offset plus an image's first record), so each test
knows exactly which image it broke and checks that ``verify`` (API and CLI)
names that image and only that one.

Matrix: bit flips x layout {tiled, contiguous} x damaged image {0, 2, 3};
mask, info, statistics and sidecar damage; Fletcher-32 chunks; truncation
{half, minus one byte, header only}; ten crafted files (links, virtual and
external storage, versions, tables that disagree); changes while open
{rewritten in place, replaced, removed} and between pickle and unpickle;
a lock held by another process; shards x layout {tiled, contiguous, chunked};
paths with spaces and non-ASCII names.
"""

import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from lazypatch import ImageStore, PatchDataset, write_store
from lazypatch.cli import main
from lazypatch.errors import IntegrityError, StoreChangedError, StoreFormatError
from lazypatch.testing import arange_image, patch_oracle

SHAPES = [(40, 52), (33, 17), (64, 64), (9, 70)]


def images_for(shapes, channels=3, dtype=np.uint16, start=0):
    return [arange_image(tuple(s) + (channels,), dtype, start=start + 977 * k) for k, s in enumerate(shapes)]


def masks_for(images):
    return [(img[..., 0] % 5).astype(np.uint8) for img in images]


def first_byte(path, image_id, name="pixels") -> int:
    """File offset of the first stored byte of an image (channel 0, pixel 0)."""
    with h5py.File(path, "r") as f:
        data = f[name]
        base = data.id.get_offset()
        item = data.dtype.itemsize
        if "tile_offsets" in f:
            record = int(np.prod(data.shape[1:])) * item
            return base + int(f["tile_offsets"][image_id]) * record
        channels = f.attrs["channels"] if name == "pixels" else 1
        return base + int(f["pixel_offsets"][image_id]) * int(channels) * item


def flip(path, offset, mask=0x5A) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        value = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([value ^ mask]))


# -- integrity ----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["tiled", "contiguous"])
@pytest.mark.parametrize("damaged", [0, 2, 3])
def test_bit_flip_names_exactly_the_damaged_image(tmp_path, layout, damaged, capsys):
    images = images_for(SHAPES)
    path = tmp_path / "s.h5"
    write_store(path, images, masks=masks_for(images), names=[f"img{k}" for k in range(4)],
                layout=layout, tile=16 if layout == "tiled" else None, progress=False)
    assert ImageStore(path).verify() == []
    assert main(["verify", str(path), "--no-progress"]) == 0
    flip(path, first_byte(path, damaged) + 1)  # the high byte of pixel (0, 0), channel 0
    store = ImageStore(path)
    report = store.verify()
    assert [(e["image"], e["what"], e["name"]) for e in report] == [(damaged, "pixels", f"img{damaged}")]
    assert "CRC32" in report[0]["reason"]
    capsys.readouterr()
    assert main(["verify", str(path), "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert f"DAMAGED image {damaged} ('img{damaged}') pixels" in out and "1 of 4 images damaged" in out


def test_mask_and_info_damage(tmp_path):
    images = images_for(SHAPES[:3])
    path = tmp_path / "s.h5"
    write_store(path, images, masks=masks_for(images), names=["a", "b", "c"],
                meta=[{"spacing": [1, 1]}] * 3, progress=False)
    flip(path, first_byte(path, 1, "masks"), 0x01)
    assert [(e["image"], e["what"]) for e in ImageStore(path).verify()] == [(1, "mask")]
    # a name changed in place (same length, so the HDF5 structure stays valid)
    with open(path, "rb") as f:
        data = f.read()
    at = data.index(b'{"spacing"', 0)
    with open(path, "r+b") as f:
        f.seek(at + 2)
        f.write(b"S")  # '{"Spacing"': still JSON, now wrong
    found = {(e["image"], e["what"]) for e in ImageStore(path).verify()}
    assert (1, "mask") in found and any(what == "info" for _, what in found)


def test_statistics_and_sidecars_are_checked(tmp_path, capsys):
    from lazypatch.filtering import foreground_filter
    from lazypatch.labels import LabelStats
    from lazypatch.normalize import ChannelStats

    images = images_for(SHAPES, dtype=np.uint8)
    path = str(tmp_path / "s.h5")
    store = write_store(path, images, masks=masks_for(images), tile=16, label_stats=True,
                        channel_stats=True, progress=False)
    clean = str(tmp_path / "clean.h5")
    shutil.copy(path, clean)
    sidecars = [LabelStats.compute(ImageStore(clean)).write_sidecar(ImageStore(clean)),
                ChannelStats.compute(ImageStore(clean)).write_sidecar(ImageStore(clean)),
                foreground_filter(ImageStore(clean), 8, threshold=0.3)]
    store.close()
    with h5py.File(path, "r") as f:
        hist, counts = f["channel_stats/hist"], f["label_stats/counts"]
        offsets = [hist.id.get_offset() + 1 * hist.shape[1] * 8 + 3 * 8, counts.id.get_offset() + 8]
    for offset in offsets:
        flip(path, offset, 0x01)
    damaged = ImageStore(path).verify(progress=False)
    assert [(d["image"], d["what"]) for d in damaged] == [(None, "statistics")] * 2
    assert "channel_stats/hist: CRC32" in damaged[1]["reason"]
    assert main(["verify", path, "--no-progress"]) == 2
    assert "0 of 4 images damaged, and the stored statistics" in capsys.readouterr().out
    with pytest.raises(IntegrityError, match="channel_stats/hist: CRC32"):
        ChannelStats.open(ImageStore(path))
    with pytest.raises(IntegrityError, match="label_stats/counts: CRC32"):
        LabelStats.open(ImageStore(path))
    # sidecars: a flipped data byte is an IntegrityError, damaged metadata a StoreFormatError
    rng = np.random.default_rng(7)
    opened = [lambda p: LabelStats.open(ImageStore(clean), p), lambda p: ChannelStats.open(ImageStore(clean), p),
              lambda p: PatchDataset(ImageStore(clean), 8, filter=p)]
    for sidecar, load in zip(sidecars, opened):
        load(sidecar)
        size = os.path.getsize(sidecar)
        for trial in range(12):
            mutant = str(tmp_path / f"mutant{trial}.h5")
            shutil.copy(sidecar, mutant)
            flip(mutant, int(rng.integers(0, size)), 1 << int(rng.integers(0, 8)))
            try:
                load(mutant)
            except (IntegrityError, StoreFormatError):
                pass
            os.remove(mutant)
        with h5py.File(sidecar, "r") as f:
            data = f["keep"] if "keep" in f else f[next(name for name in f if f[name].size)]
            offset = data.id.get_offset()
        mutant = str(tmp_path / "data.h5")
        shutil.copy(sidecar, mutant)
        flip(mutant, offset, 0x01)
        with pytest.raises(IntegrityError, match="CRC32"):
            load(mutant)


def test_fletcher32_damage_names_image_and_patch(tmp_path):
    images = images_for(SHAPES, channels=1, dtype=np.uint8)
    path = tmp_path / "c.h5"
    write_store(path, images, layout="chunked", tile=16, checksum=True, progress=False)
    with h5py.File(path, "r") as f:
        first_tile = int(f["tile_offsets"][2])
        chunk = f["pixels"].id.get_chunk_info_by_coord((first_tile + 1, 0, 0, 0))
    flip(path, chunk.byte_offset + 3)  # image 2's second tile: origin (0, 16)
    store = ImageStore(path)
    dataset = PatchDataset(store, 16)
    flat = dataset.index.flat_index(2, (0, 16))
    with pytest.raises(IntegrityError, match=r"chunk of image 2 at \(0, 16\).*patches \[" + str(flat)):
        dataset[flat]
    with pytest.raises(OSError, match=r"image 2 at \(0, 16\).*\(2, \(0, 16\)\)"):
        dataset.read_batch([0, flat])
    assert np.array_equal(dataset[flat + 1]["image"].numpy()[0], images[2][0:16, 32:48, 0])
    report = store.verify()
    assert [(e["image"], e["what"]) for e in report] == [(2, "pixels")]
    assert "cannot be read" in report[0]["reason"]


# -- untrusted files ----------------------------------------------------------------------
@pytest.fixture
def good(tmp_path):
    images = images_for(SHAPES)
    path = tmp_path / "good.h5"
    write_store(path, images, masks=masks_for(images), tile=16, progress=False)
    return path, images


def crafted(good, tmp_path, edit):
    path = tmp_path / "crafted.h5"
    shutil.copy(good, path)
    with h5py.File(path, "r+") as f:  # the test crafts; the library never opens 'r+'
        edit(f, tmp_path)
    return path


@pytest.mark.parametrize("size", ["half", "minus_one", "header_only"])
def test_truncated_file_rejected_before_any_map(good, tmp_path, size):
    path = tmp_path / "t.h5"
    shutil.copy(good[0], path)
    full = os.path.getsize(path)
    keep = {"half": full // 2, "minus_one": full - 1, "header_only": 2048}[size]
    os.truncate(path, keep)
    with pytest.raises(StoreFormatError, match=rf"t\.h5' is truncated.*{keep}"):
        ImageStore(path)


def _external_link(f, folder):
    with h5py.File(folder / "elsewhere.h5", "w") as other:
        other["crc32"] = f["crc32"][()]
    del f["crc32"]
    f["crc32"] = h5py.ExternalLink(str(folder / "elsewhere.h5"), "crc32")


def _soft_link(f, folder):
    f["crc_copy"] = f["crc32"][()]
    del f["crc32"]
    f["crc32"] = h5py.SoftLink("/crc_copy")


def _virtual(f, folder):
    shapes = f["shapes"][()]
    with h5py.File(folder / "source.h5", "w") as other:
        other["shapes"] = shapes
    layout = h5py.VirtualLayout(shape=shapes.shape, dtype=shapes.dtype)
    layout[...] = h5py.VirtualSource(str(folder / "source.h5"), "shapes", shape=shapes.shape)
    del f["shapes"]
    f.create_virtual_dataset("shapes", layout)


def _external_storage(f, folder):
    names = f["crc32"][()]
    (folder / "raw.bin").write_bytes(names.tobytes())
    del f["crc32"]
    f.create_dataset("crc32", shape=names.shape, dtype=names.dtype,
                     external=[(str(folder / "raw.bin"), 0, names.nbytes)])


def _version(f, folder):
    f.attrs["lazypatch_format_version"] = 2


def _minor_version(f, folder):
    f.attrs["lazypatch_format_minor"] = 99


def _offsets(f, folder):
    offsets = f["tile_offsets"][()]
    offsets[2] += 1
    f["tile_offsets"][...] = offsets


def _huge_shape(f, folder):
    shapes = f["shapes"][()]
    shapes[0, 0] = 1 << 50
    f["shapes"][...] = shapes


def _pixels_past_end(f, folder):
    shapes = f["shapes"][()]
    shapes[3, 1] += 500  # more tiles than the file holds: offsets are rewritten to agree
    f["shapes"][...] = shapes
    offsets = f["tile_offsets"][()]
    grid = -(-shapes // 16)
    offsets[1:] = np.cumsum(grid.prod(axis=1))
    del f["tile_offsets"]
    f["tile_offsets"] = offsets


def _channel_axis(f, folder):
    f.attrs.modify("channel_axis", False)  # the store has 3 channels


CRAFTED = [
    pytest.param(_external_link, r"'crc32' is a ExternalLink; a store only holds its own data",
                 id="external link"),
    pytest.param(_soft_link, r"'crc32' is a SoftLink", id="soft link"),
    pytest.param(_virtual, r"dataset 'shapes' uses external or virtual storage", id="virtual dataset"),
    pytest.param(_external_storage, r"dataset 'crc32' uses external or virtual storage", id="external storage"),
    pytest.param(_version, r"store format version 2\.\d+, this lazypatch \(\S+\) reads versions 1\.0 to 1\.\d+ "
                           r"\(newer than this lazypatch", id="format version 2"),
    pytest.param(_minor_version, r"store format version 1\.99, this lazypatch \(\S+\) reads versions 1\.0 to "
                                 r"1\.\d+ \(newer than this lazypatch: upgrade it\)", id="format version 1.99"),
    pytest.param(_offsets, r"'tile_offsets' disagrees with the image shapes", id="tile_offsets off by one"),
    pytest.param(_huge_shape, r"'shapes' holds impossible image sizes", id="shape of 2**50"),
    pytest.param(_pixels_past_end, r"'pixels' has shape", id="pixels past the end"),
    pytest.param(_channel_axis, r"bad header \(channels=3 without a channel axis\)", id="channels without an axis"),
]


@pytest.mark.parametrize("edit,pattern", CRAFTED)
def test_crafted_files_rejected(good, tmp_path, edit, pattern):
    path = crafted(good[0], tmp_path, edit)
    with pytest.raises(StoreFormatError, match=pattern):
        ImageStore(path)


def test_library_never_opens_for_writing():
    import re

    import lazypatch

    root = os.path.dirname(lazypatch.__file__)
    pattern = re.compile(r"""h5py\.File\([^)]*["'](a|r\+)["']""")
    names = [os.path.join(folder, name) for folder, _, files in os.walk(root) for name in files
             if name.endswith(".py")]
    assert len(names) > 30
    for name in names:
        with open(name, encoding="utf-8") as handle:
            assert not pattern.search(handle.read()), name


# -- changed while open ---------------------------------------------------------------------------
def _rewrite_in_place(path):
    flip(path, os.path.getsize(path) // 2)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _replace(path):
    other = str(path) + ".new"
    shutil.copy(path, other)
    os.replace(other, path)


def _remove(path):
    os.unlink(path)


@pytest.mark.parametrize("change", [_rewrite_in_place, _replace, _remove])
def test_store_changed_while_open_is_detected(good, tmp_path, change):
    path = tmp_path / "s.h5"
    shutil.copy(good[0], path)
    store = ImageStore(path)
    dataset = PatchDataset(store, 8)
    dataset[0]
    change(path)
    with pytest.raises(StoreChangedError, match=r"s\.h5. was (modified|removed)"):
        for k in range(1100):  # checked every 1,024 reads, never per patch
            dataset[k % len(dataset)]
    with pytest.raises(StoreChangedError, match="reopen the store"):
        store.verify() if change is _remove else [dataset.read_batch([0]) for _ in range(1100)]


def test_changed_between_pickle_and_worker_open(good, tmp_path):
    import pickle

    path = tmp_path / "s.h5"
    shutil.copy(good[0], path)
    dataset = PatchDataset(ImageStore(path), 8)
    state = pickle.dumps(dataset)
    _replace(path)
    with pytest.raises(StoreChangedError, match="changed since the store was pickled"):
        pickle.loads(state)


# -- locking ---------------------------------------------------------------------------------------
HOLD_WRITER = """
import sys, h5py
f = h5py.File(sys.argv[1], "a", locking=True)
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.mark.system
def test_lock_failure_names_the_environment_variable(good, tmp_path):
    path = tmp_path / "locked.h5"
    shutil.copy(good[0], path)
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    writer = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        with pytest.raises(OSError, match=r"cannot lock '.*locked\.h5'.*HDF5_USE_FILE_LOCKING") as caught:
            ImageStore(path, locking=True)
        assert caught.value.errno in (11, 35, 37, 524, 13)
        # without locks (NFS), HDF5's own write flag still refuses a file being written
        with pytest.raises(OSError, match=r"open for writing in another process.*h5clear -s"):
            ImageStore(path, locking=False)
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)
        writer.stdout.close()
    assert np.array_equal(ImageStore(path, locking=True).read(0), good[1][0])


# -- shards ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["tiled", "contiguous", "chunked"])
def test_shards_behave_like_one_store(tmp_path, layout):
    images = images_for(SHAPES + [(20, 20), (31, 45)])
    masks = masks_for(images)
    names = [f"n{k}" for k in range(len(images))]
    meta = [{"k": k} for k in range(len(images))]
    options = dict(layout=layout, tile=None if layout == "contiguous" else 16, progress=False)
    whole = write_store(tmp_path / "whole.h5", images, masks=masks, names=names, meta=meta, **options)
    parts = [(0, 2), (2, 3), (3, 6)]
    paths = []
    for n, (a, b) in enumerate(parts):
        paths.append(tmp_path / f"part{n}.h5")
        write_store(paths[-1], images[a:b], masks=masks[a:b], names=names[a:b], meta=meta[a:b], **options)
    sharded = ImageStore(paths)
    assert len(sharded) == 6 and sharded.paths == [str(p) for p in paths]
    assert np.array_equal(sharded.shapes, whole.shapes) and sharded.names == names
    assert [sharded.meta(k) for k in range(6)] == meta
    for k in range(6):
        assert np.array_equal(sharded.read(k), images[k]) and np.array_equal(sharded.read_mask(k), masks[k])
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 6, 40)
    origins = np.stack([rng.integers(-8, 40, 40), rng.integers(-8, 40, 40)], axis=1)
    batch = sharded.read_regions(ids, origins, (12, 10), pad_value=3)
    for j in range(40):
        assert np.array_equal(batch[j], patch_oracle(images[ids[j]], origins[j], (12, 10), 3))
    one, many = PatchDataset(whole, 8, stride=5, edge="pad"), PatchDataset(sharded, 8, stride=5, edge="pad")
    assert len(one) == len(many)
    every = np.arange(len(one))
    a, b = one.read_batch(every), many.read_batch(every)
    assert all(np.array_equal(a[key].numpy(), b[key].numpy()) for key in a)
    import pickle

    clone = pickle.loads(pickle.dumps(many))
    assert np.array_equal(clone[len(clone) - 1]["image"], b["image"][-1])
    flip(paths[2], first_byte(paths[2], 1) + 1) if layout != "chunked" else None
    report = ImageStore(paths).verify()
    assert [e["image"] for e in report] == ([4] if layout != "chunked" else [])


def test_shards_must_match_and_sidecars_cover_every_shard(tmp_path):
    from lazypatch.filtering import foreground_filter
    from lazypatch.labels import LabelStats

    images = images_for(SHAPES)
    masks = masks_for(images)
    a = write_store(tmp_path / "a.h5", images[:2], masks=masks[:2], label_stats=8, progress=False)
    b = write_store(tmp_path / "b.h5", images[2:], masks=masks[2:], label_stats=8, progress=False)
    both = ImageStore([a.path, b.path])
    stats = LabelStats.open(both)
    whole = LabelStats.compute(write_store(tmp_path / "w.h5", images, masks=masks, progress=False), 8)
    for key in ("image_offsets", "blocks", "labels", "counts"):
        assert np.array_equal(getattr(stats, key), getattr(whole, key))
    path = foreground_filter(both, 8, threshold=0.2, source="mask")
    dataset = PatchDataset(both, 8, filter=path)
    with pytest.raises(StoreFormatError, match="computed for other content"):
        PatchDataset(ImageStore([a.path, a.path]), 8, filter=path)
    assert len(dataset) > 0
    gray = write_store(tmp_path / "g.h5", [np.zeros((9, 9), np.uint16)], progress=False)
    with pytest.raises(StoreFormatError, match="shards must share channels"):
        ImageStore([a.path, gray.path])
    other = write_store(tmp_path / "o.h5", [np.zeros((9, 9, 3), np.uint8)], progress=False)
    with pytest.raises(StoreFormatError, match="shards must share one dtype"):
        ImageStore([a.path, other.path])


# -- paths ---------------------------------------------------------------------------------
def test_paths_with_spaces_and_non_ascii_round_trip(tmp_path, capsys):
    import pickle

    folder = tmp_path / "my data sets" / "Zürich 画像"
    folder.mkdir(parents=True)
    path = folder / "größe ü 1.h5"
    images = images_for(SHAPES[:2])
    store = write_store(path, images, names=["é 1", "画像 2"], progress=False)
    assert store.path == str(path) and store.names == ["é 1", "画像 2"]
    clone = pickle.loads(pickle.dumps(PatchDataset(store, 8)))
    assert np.array_equal(clone[0]["image"].numpy(), np.moveaxis(images[0][:8, :8], -1, 0))
    assert main(["info", str(path), "--json"]) == 0 and "Zürich" in capsys.readouterr().out
    assert main(["verify", str(path), "--no-progress"]) == 0
