"""write_store and ImageStore: bit-exact round trips and every read path vs numpy.

Matrix: layout {tiled, contiguous, chunked(+gzip, lzf, fletcher32)} x dtype
{uint8, uint16, float32} x {no channel axis, 1, 3 channels} x {2-D, 3-D} x
variable sizes, written from lists of arrays, generators (spooled),
np.memmap and h5py datasets. Reads: whole images, single regions (inside,
negative, overhanging, disjoint) and batches, through io="mmap" and
io="pread", pixels and masks, compared with numpy slicing of the originals.
"""

import os
import pickle

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lazypatch import ImageStore, ParameterError, StoreExistsError, write_store
from lazypatch.testing import arange_image, patch_oracle

LAYOUTS = [
    dict(layout="tiled", tile=8),
    dict(layout="tiled", tile=(5, 7)),
    dict(layout="contiguous"),
    dict(layout="chunked", tile=8),
    dict(layout="chunked", tile=(6, 9), compression="gzip", checksum=True),
    dict(layout="chunked", tile=8, compression="lzf"),
]
LAYOUTS_3D = [dict(layout="tiled", tile=(3, 4, 5)), dict(layout="contiguous"),
              dict(layout="chunked", tile=4, compression="lzf")]


def make_images(shapes, dtype, channels, ndim=2, start=0):
    images = []
    for k, shape in enumerate(shapes):
        full = tuple(shape) + ((channels,) if channels else ())
        images.append(arange_image(full, dtype, start=start + 1000 * k))
    return images


@pytest.mark.parametrize("options", LAYOUTS, ids=lambda o: "-".join(str(v) for v in o.values()))
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("channels", [0, 1, 3])
def test_round_trip_2d(make_store, options, dtype, channels):
    shapes = [(17, 23), (8, 8), (1, 40), (33, 5)]
    images = make_images(shapes, dtype, channels)
    masks = [(img.reshape(img.shape[:2] + (-1,))[..., 0] % 7).astype(np.uint8) for img in images]
    store = make_store(images, masks=masks, **options)
    assert len(store) == 4 and store.shapes.tolist() == [list(s) for s in shapes]
    assert store.channels == max(channels, 1) and store.channel_axis == bool(channels)
    assert store.dtype == np.dtype(dtype) and store.layout == options["layout"]
    for k, image in enumerate(images):
        read = store.read(k)
        assert read.shape == image.shape and read.dtype == image.dtype
        assert np.array_equal(read, image)
        assert np.array_equal(store.read_mask(k), masks[k])


@pytest.mark.parametrize("options", LAYOUTS_3D, ids=lambda o: "-".join(str(v) for v in o.values()))
@pytest.mark.parametrize("channels", [0, 2])
def test_round_trip_3d(make_store, options, channels):
    shapes = [(5, 9, 11), (3, 4, 5), (7, 2, 13)]
    images = make_images(shapes, np.uint16, channels)
    store = make_store(images, spatial_ndim=3, **options)
    for k, image in enumerate(images):
        assert np.array_equal(store.read(k), image)
    region = store.read_region(0, (-1, 2, 8), (4, 4, 6), pad_value=9)
    full = images[0] if channels else images[0][..., None]
    assert np.array_equal(region, patch_oracle(full, (-1, 2, 8), (4, 4, 6), 9))


def test_array_likes_and_generators(tmp_path):
    images = make_images([(20, 30), (9, 41)], np.uint16, 3)
    mm = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.uint16, shape=(20, 30, 3))
    mm[...] = images[0]
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f["b"] = images[1]
    with h5py.File(tmp_path / "src.h5", "r") as f:
        sources = {
            "list of array-likes": [mm, f["b"]],
            "generator": (im for im in images),
            "stacked h5py": None,
        }
        for name, source in sources.items():
            if source is None:
                continue
            for layout in ("tiled", "contiguous", "chunked"):
                path = tmp_path / f"{name.replace(' ', '_')}-{layout}.h5"
                store = write_store(path, source if name != "generator" else (im for im in images),
                                    layout=layout, progress=False, tile=None if layout == "contiguous" else 8,
                                    names=["first", "second"], meta=[{"spacing": np.float32(0.5)}, None])
                assert store.names == ["first", "second"]
                assert store.meta(0) == {"spacing": 0.5} and store.meta(1) == {}
                for k in range(2):
                    assert np.array_equal(store.read(k), images[k]), (name, layout)
                assert not [p for p in os.listdir(tmp_path) if p.endswith((".tmp", ".spool"))]
        stack = np.stack([images[0][:9, :30], images[0][9:18, :30]])
        store = write_store(tmp_path / "stack.h5", stack, progress=False)
        assert len(store) == 2 and np.array_equal(store.read(1), stack[1])


def _random_box(data, shape):
    origin = tuple(data.draw(st.integers(-s, s + 2)) for s in shape)
    size = tuple(data.draw(st.integers(1, s + 4)) for s in shape)
    return origin, size


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paths")
    shapes = [(13, 21), (40, 9), (6, 6)]
    images = make_images(shapes, np.uint16, 3)
    masks = [(img[..., 0] % 5).astype(np.int32) for img in images]
    result = {}
    for options in LAYOUTS:
        name = "-".join(str(v) for v in options.values())
        store = write_store(folder / f"{name}.h5", images, masks=masks, progress=False, **options)
        result[name] = store
    return images, masks, result


@settings(max_examples=40)
@given(data=st.data())
def test_every_read_path_equals_numpy(stores, data):
    images, masks, all_stores = stores
    name = data.draw(st.sampled_from(sorted(all_stores)))
    io = data.draw(st.sampled_from(["mmap", "pread", "auto"]))
    store = ImageStore(all_stores[name].path, io=io)
    k = data.draw(st.integers(0, len(images) - 1))
    origin, size = _random_box(data, images[k].shape[:2])
    pad = data.draw(st.integers(0, 60000))
    expected = patch_oracle(images[k], origin, size, pad)
    assert np.array_equal(store.read_region(k, origin, size, pad_value=pad), expected)
    assert np.array_equal(store.read_mask_region(k, origin, size, pad_value=-3),
                          patch_oracle(masks[k], origin, size, -3))
    # a batch of boxes of one size, some inside, some not
    count = data.draw(st.integers(1, 6))
    ids = [data.draw(st.integers(0, len(images) - 1)) for _ in range(count)]
    size = (data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12)))
    origins = []
    for i in ids:
        h, w = images[i].shape[:2]
        inside = data.draw(st.booleans())
        if inside and h >= size[0] and w >= size[1]:
            origins.append((data.draw(st.integers(0, h - size[0])), data.draw(st.integers(0, w - size[1]))))
        else:
            origins.append((data.draw(st.integers(-5, h)), data.draw(st.integers(-5, w))))
    batch = store.read_regions(ids, origins, size, pad_value=pad)
    mask_batch = store.read_mask_regions(ids, origins, size)
    for j, (i, o) in enumerate(zip(ids, origins)):
        assert np.array_equal(batch[j], patch_oracle(images[i], o, size, pad))
        assert np.array_equal(mask_batch[j], patch_oracle(masks[i], o, size, 0))
    store.close()


def test_patch_wider_than_tiles(make_store):
    images = make_images([(50, 70)], np.uint8, 3)
    store = make_store(images, tile=(8, 6))
    for io in ("mmap", "pread"):
        s = ImageStore(store.path, io=io)
        origins = [(0, 0), (3, 5), (10, 13), (1, 29)]
        batch = s.read_regions([0] * 4, origins, (21, 41))
        for j, o in enumerate(origins):
            assert np.array_equal(batch[j], images[0][o[0]:o[0] + 21, o[1]:o[1] + 41])


def test_wide_image_past_uint16(make_store):
    image = arange_image((3, 70_001), np.uint32)
    store = make_store([image], tile=(4, 64))
    for io in ("mmap", "pread"):
        s = ImageStore(store.path, io=io)
        batch = s.read_regions([0, 0], [(0, 65_530), (0, 69_990)], (3, 11))
        assert np.array_equal(batch[0][..., 0], image[:, 65_530:65_541])
        assert np.array_equal(batch[1][..., 0], image[:, 69_990:70_001])


def test_atomic_write_and_overwrite(tmp_path):
    path = tmp_path / "s.h5"
    first = write_store(path, [np.zeros((4, 4), np.uint8)], progress=False)
    before = path.read_bytes()
    with pytest.raises(StoreExistsError):
        write_store(path, [np.ones((4, 4), np.uint8)], progress=False)

    def failing():
        yield np.ones((4, 4), np.uint8)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_store(path, failing(), overwrite=True, progress=False)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]
    with pytest.raises(ValueError, match="dtype"):
        write_store(tmp_path / "new.h5", [np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32)],
                    progress=False)
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]
    write_store(path, [np.ones((5, 5), np.uint8)], overwrite=True, progress=False)
    assert ImageStore(path).shapes.tolist() == [[5, 5]]
    first.close()


def test_pickle_close_and_context(make_store):
    images = make_images([(10, 10)], np.uint8, 3)
    store = make_store(images)
    clone = pickle.loads(pickle.dumps(store))
    assert np.array_equal(clone.read(0), images[0])
    store.read(0)
    clone = pickle.loads(pickle.dumps(store))  # after use: still only a path
    assert len(pickle.dumps(store)) < 1000
    with ImageStore(store.path) as opened:
        assert np.array_equal(opened.read(0), images[0])
    with pytest.raises(ValueError, match="closed"):
        opened.read(0)
    opened.close()  # harmless twice
    assert "closed" in repr(opened)
    clone.close()


def test_format_attributes(make_store):
    store = make_store(make_images([(9, 9)], np.uint8, 0), masks=[np.zeros((9, 9), np.uint16)])
    with h5py.File(store.path, "r") as f:
        assert f.attrs["lazypatch_format"] == b"lazypatch-store"  # fixed-length: no global heap
        assert f.id.get_create_plist().get_version()[0] == 3  # superblock v3: checksummed metadata
        assert f["names"].dtype == np.uint8 and f["name_offsets"][()].tolist() == [0, 1]
        assert f.attrs["lazypatch_format_version"] == 1
        assert f["pixels"].shape == (1, 1, 64, 64)  # (tiles, C, *tile): channel-planar
        assert f["shapes"][()].tolist() == [[9, 9]]
        assert f["tile_offsets"][()].tolist() == [0, 1]
        assert f["crc32"].dtype == np.uint32
        assert f["masks"].dtype == np.uint16
        assert f["pixels"].id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs preadv(RWF_NOWAIT)")
def test_auto_mode_follows_the_page_cache(make_store, monkeypatch):
    from lazypatch.testing import cached_fraction, evict

    images = make_images([(64, 64)] * 40, np.uint8, 3)
    store = make_store(images, tile=16)
    fresh = ImageStore(store.path, io="auto")
    ids, origins = np.arange(40), np.zeros((40, 2), np.int64)
    with open(store.path, "rb") as f:
        f.read()  # everything cached
    handles = fresh._get_handles()
    assert fresh._batch_mode(handles, ids, origins) == "mmap"
    for _ in range(40):  # a long warm streak: probed every 4th batch only
        assert fresh._batch_mode(handles, ids, origins) == "mmap"
    evict(store.path)
    if cached_fraction(store.path, probes=1) > 0:
        pytest.skip("the file system kept the pages (tmpfs?)")
    modes = [fresh._batch_mode(handles, ids, origins) for _ in range(8)]
    assert "pread" in modes[:4] and set(modes[modes.index("pread"):]) == {"pread"}, modes
    fresh.close()
    store.close()
    evict(store.path)
    cold = ImageStore(store.path, io="auto")
    if cached_fraction(store.path, probes=1) > 0:
        pytest.skip("the file system kept the pages (tmpfs?)")
    assert cold._batch_mode(cold._get_handles(), ids, origins) == "pread"
    batch = cold.read_regions(ids, origins, (16, 16))
    assert all(np.array_equal(batch[k], images[k][:16, :16]) for k in range(40))


@pytest.mark.parametrize("io", ["mmap", "pread"])
def test_boxes_many_tiles_wide_read_by_segments(make_store, io):
    images = make_images([(70, 90), (64, 64)], np.uint16, 3)
    store = ImageStore(make_store(images, tile=8).path, io=io)
    ids = [0, 0, 1, 0]
    origins = [(0, 0), (4, 12), (32, 28), (37, 56)]  # x offsets share the divisor 4 with the tile
    batch = store.read_regions(ids, origins, (33, 32))
    for j, (i, o) in enumerate(zip(ids, origins)):
        assert np.array_equal(batch[j], patch_oracle(images[i], o, (33, 32)))


class _VirtualImage:
    """A large array-like computed on demand, recording the largest slice asked for."""

    def __init__(self, shape):
        self.shape, self.dtype, self.ndim = shape, np.dtype(np.uint8), len(shape)
        self.largest = 0

    @staticmethod
    def values(rows, columns, channels):
        return ((rows[:, None, None] * 7 + columns[None, :, None] * 3 + channels) % 251).astype(np.uint8)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        ranges = [np.arange(self.shape[a])[key[a]] if a < len(key) else np.arange(self.shape[a])
                  for a in range(self.ndim)]
        self.largest = max(self.largest, int(np.prod([len(r) for r in ranges])))
        return self.values(*ranges)

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole image was asked for")


@pytest.mark.parametrize("layout", ["tiled", "contiguous", "chunked"])
def test_a_large_array_like_is_copied_in_bounded_pieces(tmp_path, layout):
    from lazypatch.testing import proc_status

    image = _VirtualImage((6000, 7000, 3))  # 126 MB, never materialized
    before = proc_status().get("RssAnon", 0.0)
    store = write_store(tmp_path / "big.h5", [image], layout=layout, progress=False)
    grown = proc_status().get("RssAnon", 0.0) - before
    assert image.largest * image.dtype.itemsize <= 16 << 20  # bands of at most 16 MiB
    if before:
        assert grown < 60, f"RssAnon grew {grown:.0f} MiB while writing a 126 MB image"
    for origin in [(0, 0), (5937, 6950), (3001, 64 * 50 - 5)]:
        rows, columns = np.arange(origin[0], origin[0] + 50), np.arange(origin[1], origin[1] + 50)
        rows, columns = rows[rows < 6000], columns[columns < 7000]
        expected = _VirtualImage.values(rows, columns, np.arange(3))
        got = store.read_region(0, origin, (len(rows), len(columns)))
        assert np.array_equal(got, expected)


def test_torch_tensors_are_images_too(tmp_path):
    import torch

    images = [torch.arange(6 * 7 * 2, dtype=torch.int16).reshape(6, 7, 2), torch.zeros(3, 4, 2, dtype=torch.int16)]
    store = write_store(tmp_path / "t.h5", images, masks=[torch.ones(6, 7, dtype=torch.uint8), torch.zeros(3, 4, dtype=torch.uint8)],
                        progress=False)
    assert store.dtype == np.int16 and np.array_equal(store.read(0), images[0].numpy())
    assert np.array_equal(store.read_mask(0), np.ones((6, 7), np.uint8))


@pytest.mark.parametrize("layout", ["tiled", "contiguous", "chunked"])
@pytest.mark.parametrize("io", ["mmap", "pread"])
def test_out_arrays_of_any_layout_are_filled(make_store, layout, io):
    images = make_images([(40, 50)], np.uint8, 3)
    masks = [(images[0][..., 0] % 7).astype(np.uint8)]
    store = ImageStore(make_store(images, masks=masks, layout=layout,
                                  tile=None if layout == "contiguous" else 16).path, io=io)
    origins = [(3, 5), (10, 20), (-2, 44)]
    expected = [patch_oracle(masks[0], o, (8, 8)) for o in origins]
    strided = np.zeros((8, 8, 3), np.uint8).transpose(2, 0, 1)  # (3, 8, 8), not contiguous
    assert store.read_mask_regions([0] * 3, origins, (8, 8), out=strided) is strided
    assert all(np.array_equal(strided[j], expected[j]) for j in range(3))
    pixels = np.zeros((8, 8, 3, 3), np.uint8).transpose(2, 0, 1, 3)
    assert store.read_regions([0] * 3, origins, (8, 8), out=pixels) is pixels
    assert all(np.array_equal(pixels[j], patch_oracle(images[0], o, (8, 8))) for j, o in enumerate(origins))
    one = np.zeros((8, 8), np.uint8).T
    assert np.array_equal(store.read_mask_region(0, (3, 5), (8, 8), out=one), expected[0])
    frozen = np.zeros((3, 8, 8), np.uint8)
    frozen.flags.writeable = False
    with pytest.raises(ParameterError, match="out must be a writable array"):
        store.read_mask_regions([0] * 3, origins, (8, 8), out=frozen)


@pytest.mark.parametrize("layout", ["tiled", "contiguous", "chunked"])
def test_pixels_start_on_a_page_and_batches_are_page_aligned(make_store, layout):
    # NOTE [page-aligned data] and [page-aligned buffers]: a 12 KiB tile is 3 pages, and
    # records copy into destinations at the same offset in a page (see _readers)
    from lazypatch import PatchDataset

    images = make_images([(256, 256)] * 6, np.uint8, 3)
    masks = [(image[..., 0] % 5).astype(np.uint8) for image in images]
    store = make_store(images, masks=masks, layout=layout)
    with h5py.File(store.path, "r") as f:
        for name in ("pixels", "masks"):
            offset = f[name].id.get_offset()
            if layout == "chunked":  # one chunk per tile, packed: no page of padding each
                assert offset is None and os.path.getsize(store.path) < 1.1 * sum(i.nbytes * 4 / 3 for i in images)
            else:
                assert offset % 4096 == 0
    batch = PatchDataset(store, 64).read_batch(range(40))
    assert batch["image"].data_ptr() % 4096 == 0 and batch["mask"].data_ptr() % 4096 == 0
    origins = [(0, 0), (64, 128), (192, 64)]
    expected = [patch_oracle(masks[2], o, (64, 64)) for o in origins]
    unaligned = np.zeros(3 * 64 * 64 + 16, np.uint8)[16:].reshape(3, 64, 64)
    assert store.read_mask_regions([2] * 3, origins, (64, 64), out=unaligned) is unaligned
    assert all(np.array_equal(unaligned[j], expected[j]) for j in range(3))
