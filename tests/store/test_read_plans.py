"""Batches of boxes inside their images: every copy plan of the tiled readers
against numpy slicing of random images.

Plans (lazypatch/store/reading/readers.py): whole tiles (boxes equal to tiles, on the tile
grid); segments (row pieces of gcd(tile, size, x offsets) pixels, none
crossing a tile border), with the address patterns kept across batches in the
map; joined rows (the tile rows a box row spans copied side by side into
scratch, then the box's window copied out). Each runs through io="mmap" and
io="pread" on the tiled layout, and through h5py on the chunked one.
"""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lazypatch.store.reading.readers as readers
from lazypatch import ImageStore, write_store
from lazypatch.testing import patch_oracle
from lazypatch.testing.internals import kept_patterns, pixel_reader

DTYPES = ["uint8", "uint16", "float32"]


def random_images(rng, shapes, dtype, channels):
    images = []
    for shape in shapes:
        full = tuple(shape) + ((channels,) if channels else ())
        if np.dtype(dtype).kind == "f":
            images.append(rng.standard_normal(full).astype(dtype))
        else:
            images.append(rng.integers(0, np.iinfo(dtype).max, full, endpoint=True).astype(dtype))
    return images


def check_batch(store, images, ids, origins, size):
    batch = store.read_regions(ids, origins, size)
    for j, (i, o) in enumerate(zip(ids, origins)):
        expected = patch_oracle(images[i], o, size)
        assert np.array_equal(batch[j].reshape(expected.shape), expected), (i, o, size)


def grid_origins(rng, images, size, step, count):
    """``count`` random (image, origin) on a grid of ``step`` with boxes inside."""
    ids, origins = [], []
    while len(ids) < count:
        i = int(rng.integers(len(images)))
        room = [images[i].shape[a] - size[a] for a in range(len(size))]
        if min(room) < 0:
            continue
        ids.append(i)
        origins.append(tuple(int(rng.integers(r // s + 1)) * s for r, s in zip(room, step)))
    return ids, origins


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Random RGB uint8 images on 16 x 32 tiles, tiled and chunked."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("plans")
    images = random_images(rng, [(70, 90), (64, 64), (50, 131), (33, 40)], "uint8", 3)
    paths = {}
    for layout in ("tiled", "chunked"):
        paths[layout] = write_store(folder / f"{layout}.h5", images, layout=layout, tile=(16, 32),
                                    progress=False).path
    return images, paths


READS = [("tiled", "mmap"), ("tiled", "pread"), ("chunked", "auto")]


@pytest.mark.parametrize("layout,io", READS)
@pytest.mark.parametrize("size,step", [
    pytest.param((16, 32), (16, 32), id="whole tiles"),
    # x offsets 0, 16: up to 3 tiles a row
    pytest.param((32, 48), (16, 16), id="segments of 16 pixels"),
    # nearly one pattern per box: no patterns kept
    pytest.param((20, 32), (1, 16), id="segments, rows anywhere"),
    # elements where aligned, else joined rows
    pytest.param((24, 24), (12, 8), id="8-byte segments"),
    pytest.param((16, 16), (12, 12), id="joined rows 16x16"),
    pytest.param((20, 17), (3, 5), id="joined rows 20x17"),
    pytest.param((33, 50), (1, 1), id="joined rows of up to 3 tiles"),
])
def test_grid_batches_equal_numpy(stores, layout, io, size, step):
    images, paths = stores
    store = ImageStore(paths[layout], io=io)
    rng = np.random.default_rng(size + step)
    for _ in range(4):  # later batches reuse (and extend) the kept patterns
        ids, origins = grid_origins(rng, images, size, step, 40)
        check_batch(store, images, ids, origins, size)
    store.close()


def test_segments_keep_patterns_across_batches(stores, monkeypatch):
    images, paths = stores
    store = ImageStore(paths["tiled"], io="mmap")
    patterns = kept_patterns(pixel_reader(store))
    rng = np.random.default_rng(3)
    size = (32, 32)  # x offsets 0 and 16 on 32-pixel tiles: 16-pixel (16-byte) segments
    for _ in range(3):
        ids, origins = grid_origins(rng, images, size, (16, 16), 32)
        check_batch(store, images, ids, origins, size)
    kept = patterns[(size, 16)]
    assert kept is not None and 2 <= len(kept[0]) <= 2 * 3  # x offset 0 or 16, 3 grid widths
    # too many patterns to keep: the plan falls back to computing every address
    monkeypatch.setattr(readers, "PATTERN_TABLE_BYTES", 1)
    patterns.clear()
    for _ in range(2):
        ids, origins = grid_origins(rng, images, size, (16, 16), 32)
        check_batch(store, images, ids, origins, size)
    assert patterns[(size, 16)] is None
    store.close()


def test_random_batches_do_not_grow_the_kept_patterns(stores):
    images, paths = stores
    store = ImageStore(paths["tiled"], io="mmap")
    patterns = kept_patterns(pixel_reader(store))
    rng = np.random.default_rng(4)
    size = (32, 32)
    ids, origins = grid_origins(rng, images, size, (16, 16), 32)
    check_batch(store, images, ids, origins, size)
    kept = len(patterns[(size, 16)][0])
    # rows anywhere, x offsets 0 or 16: nearly one pattern per box, read without keeping them
    ids, origins = grid_origins(rng, images, size, (1, 16), 32)
    check_batch(store, images, ids, origins, size)
    assert len(patterns[(size, 16)][0]) == kept
    store.close()


@pytest.mark.parametrize("layout,io", READS)
@pytest.mark.parametrize("size,step", [((32, 48), (16, 16)), ((20, 17), (3, 5)), ((16, 32), (16, 32))])
def test_threads_reading_one_store(stores, layout, io, size, step):
    """Each thread has its own scratch: concurrent batches do not mix their addresses."""
    images, paths = stores
    store = ImageStore(paths[layout], io=io)
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(15):
                ids, origins = grid_origins(rng, images, size, step, 48)
                check_batch(store, images, ids, origins, size)
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    store.close()


def test_segment_threshold_chooses_between_plans(stores, monkeypatch):
    """The same batch read by segments and by joined rows (in one gather or box by box)
    gives the same bytes."""
    images, paths = stores
    rng = np.random.default_rng(11)
    ids, origins = grid_origins(rng, images, (32, 40), (8, 8), 64)
    results = []
    for threshold, joined in ((1, 16 << 20), (10**6, 16 << 20), (10**6, 1)):
        monkeypatch.setattr(readers, "SEGMENT_BYTES", threshold)
        monkeypatch.setattr(readers, "ELEMENT_SEGMENT_BYTES", threshold)
        monkeypatch.setattr(readers, "JOINED_BYTES", joined)
        for layout, io in READS:
            store = ImageStore(paths[layout], io=io)
            results.append(store.read_regions(ids, origins, (32, 40)))
            store.close()
    for result in results[1:]:
        assert np.array_equal(result, results[0])
    check_batch(ImageStore(paths["tiled"]), images, ids, origins, (32, 40))


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_interior_batches_equal_numpy(tmp_path_factory, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    ndim = data.draw(st.sampled_from([2, 2, 3]))
    dtype = data.draw(st.sampled_from(DTYPES))
    channels = data.draw(st.sampled_from([0, 1, 3]))
    tile = tuple(data.draw(st.sampled_from([4, 8, 16])) for _ in range(ndim))
    shapes = [tuple(data.draw(st.integers(tile[a], 3 * tile[a] + 5)) for a in range(ndim))
              for _ in range(data.draw(st.integers(1, 4)))]
    images = random_images(rng, shapes, dtype, channels)
    layout = data.draw(st.sampled_from(["tiled", "tiled", "chunked"]))
    io = data.draw(st.sampled_from(["mmap", "pread"]))
    path = tmp_path_factory.mktemp("interior") / "s.h5"
    written = write_store(path, images, tile=tile, layout=layout, spatial_ndim=ndim, progress=False)
    store = ImageStore(written.path, io=io)
    smallest = np.min(shapes, axis=0)
    size = tuple(data.draw(st.integers(1, int(smallest[a]))) for a in range(ndim))
    step = tuple(data.draw(st.sampled_from([1, 2, tile[a] // 2, tile[a], 3 * tile[a] // 4]))
                 for a in range(ndim))
    for _ in range(data.draw(st.integers(1, 3))):
        ids, origins = grid_origins(rng, images, size, step, data.draw(st.integers(1, 24)))
        check_batch(store, images, ids, origins, size)
    store.close()


@pytest.mark.parametrize("io", ["mmap", "pread"])
@pytest.mark.parametrize("dtype,channels,size,step,widths", [
    pytest.param("uint8", 3, (32, 48), (16, 16), {16}, id="16-pixel segments of 16 bytes"),
    pytest.param("uint16", 0, (24, 24), (8, 4), {8}, id="4-pixel segments of 8 bytes"),
    pytest.param("float32", 2, (12, 20), (3, 1), {4}, id="1-pixel segments of 4 bytes"),
    pytest.param("uint16", 1, (16, 17), (5, 1), {2}, id="1-pixel segments of 2 bytes"),
])
def test_element_gathers_equal_numpy(tmp_path, monkeypatch, io, dtype, channels, size, step, widths):
    """Narrow segments at aligned addresses are gathered as 2- to 16-byte elements
    (NOTE [element gathers]); the same batches as byte rows give the same bytes."""
    rng = np.random.default_rng(len(widths) + size[0])
    # over 1 MiB of pixels: the store places them on a page, so every segment is aligned
    images = random_images(rng, [(600, 610), (513, 600), (400, 811)], dtype, channels)
    store = ImageStore(write_store(tmp_path / "s.h5", images, tile=(16, 32), progress=False).path, io=io)
    assert pixel_reader(store).array.offset % 4096 == 0
    used = []
    gather = readers.gather_elements
    monkeypatch.setattr(readers, "gather_elements",
                        lambda source, indices, width, out: used.append(width) or gather(source, indices, width, out))
    batches = [grid_origins(rng, images, size, step, 48) for _ in range(3)]
    for ids, origins in batches:  # default thresholds: elements from ELEMENT_SEGMENT_BYTES on
        check_batch(store, images, ids, origins, size)
    assert set(used) == {w for w in widths if w >= readers.ELEMENT_SEGMENT_BYTES}
    monkeypatch.setattr(readers, "SEGMENT_BYTES", 1)
    monkeypatch.setattr(readers, "ELEMENT_SEGMENT_BYTES", 1)
    used.clear()
    kept_patterns(pixel_reader(store)).clear()
    for ids, origins in batches:
        check_batch(store, images, ids, origins, size)
    assert set(used) == widths
    monkeypatch.setattr(readers, "element_unit", lambda width, base: 1)
    used.clear()
    kept_patterns(pixel_reader(store)).clear()
    for ids, origins in batches:
        check_batch(store, images, ids, origins, size)
    assert not used
    store.close()
