"""PatchDataset: every patch equals numpy slicing of its source, through every API.

Matrix: edges {drop, shift, pad} x with/without masks x ds[i] / __getitems__ /
read_batch / DataLoader (num_workers 0 and 2; fork and spawn; default
collate, lazypatch.collate, batch_size=None + BatchSampler) x
DistributedSampler with 2 replicas. Images are filled with arange so an
off-by-one shows.
"""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler

from lazypatch import PatchDataset, PatchIndex, collate
from lazypatch.testing import arange_image, brute_force_patches, patch_oracle
from lazypatch.testing.internals import (buffer_pool, general_reads, pool_buffers, reads_whole_tiles,
                                         sample_list_batch)

SHAPES = [(37, 50), (16, 16), (9, 70), (64, 33)]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from lazypatch import write_store

    images = [arange_image(s + (3,), np.uint16, start=7919 * k) for k, s in enumerate(SHAPES)]
    masks = [(arange_image(s, np.int64, start=k) % 11).astype(np.uint8) for k, s in enumerate(SHAPES)]
    folder = tmp_path_factory.mktemp("ds")
    with_masks = write_store(folder / "m.h5", images, masks=masks, tile=(8, 12), progress=False)
    plain = write_store(folder / "p.h5", images, tile=16, progress=False)
    return images, masks, with_masks, plain


def expected_sample(images, masks, shapes_ids, flat, patch, stride, edge, pad=0):
    pairs = brute_force_patches(SHAPES, patch, stride, edge)
    image_id, origin = pairs[flat]
    image = patch_oracle(images[image_id], origin, patch, pad)
    mask = patch_oracle(masks[image_id], origin, patch, 0) if masks is not None else None
    return image_id, origin, image, mask


@pytest.mark.parametrize("edge", ["drop", "shift", "pad"])
@pytest.mark.parametrize("which", ["with_masks", "plain"])
def test_every_patch_equals_numpy(source, edge, which):
    images, masks, with_masks, plain = source
    store = with_masks if which == "with_masks" else plain
    masks = masks if which == "with_masks" else None
    patch, stride = (10, 14), (7, 9)
    ds = PatchDataset(store, patch, stride, edge=edge, pad_value=65535)
    pairs = brute_force_patches(SHAPES, patch, stride, edge)
    assert len(ds) == len(pairs)
    batch = ds.read_batch(np.arange(len(ds)))
    samples = ds.__getitems__(list(range(len(ds))))
    for flat, (image_id, origin) in enumerate(pairs):
        sample = ds[flat]
        keys = {"image", "image_id", "origin", "index"} | ({"mask"} if masks else set())
        assert set(sample) == keys
        expected = patch_oracle(images[image_id], origin, patch, 65535)
        assert sample["image"].shape == (3,) + patch and sample["image"].dtype == torch.uint16
        assert np.array_equal(sample["image"].permute(1, 2, 0).numpy(), expected)
        assert sample["image_id"] == image_id and sample["index"] == flat
        assert sample["origin"].dtype == torch.int64 and sample["origin"].tolist() == list(origin)
        for other in (samples[flat], {k: v[flat] for k, v in batch.items()}):
            assert torch.equal(other["image"], sample["image"])
            assert int(other["image_id"]) == image_id and int(other["index"]) == flat
            assert torch.equal(other["origin"], sample["origin"])
        if masks:
            expected_mask = patch_oracle(masks[image_id], origin, patch, 0)
            assert np.array_equal(sample["mask"].numpy(), expected_mask)
            assert torch.equal(samples[flat]["mask"], sample["mask"])
            assert torch.equal(batch["mask"][flat], sample["mask"])


def test_getitems_order_duplicates_and_index_types(source):
    _, _, store, _ = source
    ds = PatchDataset(store, 8)
    order = [5, 3, 5, 0, len(ds) - 1, -1]
    samples = ds.__getitems__(order)
    assert [s["index"] for s in samples] == [i % len(ds) for i in order]
    assert ds.__getitems__([]) == []
    for key in (np.int64(3), torch.tensor(3), np.array(3), 3):
        assert ds[key]["index"] == 3
    assert ds[-1]["index"] == len(ds) - 1
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(TypeError):
        ds[1.0]
    with pytest.raises(TypeError):
        ds[torch.tensor(1.0)]
    assert ds[torch.tensor([1, 2])]["index"].tolist() == [1, 2]


def test_image_ids_transform_and_pickle(source):
    images, _, store, _ = source
    seen = []

    def transform(sample):
        seen.append(sample["index"])
        sample["image"] = sample["image"].float() / 2
        return sample

    ds = PatchDataset(store, 8, image_ids=[3, 0], transform=transform)
    index = PatchIndex([SHAPES[3], SHAPES[0]], 8)
    assert len(ds) == len(index)
    sample = ds[0]
    assert sample["image_id"] == 3 and sample["image"].dtype == torch.float32
    assert np.array_equal(sample["image"].permute(1, 2, 0).numpy() * 2, images[3][:8, :8])
    assert seen == [0]
    batch = ds.read_batch([0, len(ds) - 1])
    assert batch["image_id"].tolist() == [3, 0] and batch["image"].dtype == torch.float32
    ds.transform = halve
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 64 * 1024
    assert torch.equal(clone[5]["image"], ds[5]["image"])


def halve(sample):
    sample["image"] = sample["image"].float() / 2
    return sample


def _epoch(loader):
    indices = []
    for batch in loader:
        if isinstance(batch, list):  # a list of samples
            batch = collate(batch)
        indices += batch["index"].tolist()
        assert batch["image"].shape[1:] == (3, 12, 12)
    return indices


@pytest.mark.slow
@pytest.mark.system
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_see_each_patch_once(source, context):
    images, _, store, _ = source
    ds = PatchDataset(store, 12, stride=5, edge="shift")
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2,
                        multiprocessing_context=context)
    assert sorted(_epoch(loader)) == list(range(len(ds)))
    for batch in DataLoader(ds, batch_size=16, num_workers=2, multiprocessing_context=context,
                            collate_fn=collate):
        for k in range(len(batch["index"])):
            i, (y, x) = int(batch["image_id"][k]), batch["origin"][k].tolist()
            assert np.array_equal(batch["image"][k].permute(1, 2, 0).numpy(),
                                  patch_oracle(images[i], (y, x), (12, 12)))


def test_dataloader_paths_agree(source):
    _, _, store, _ = source
    ds = PatchDataset(store, 12, stride=5, edge="shift")
    everything = list(range(len(ds)))
    assert sorted(_epoch(DataLoader(ds, batch_size=10, shuffle=True))) == everything
    assert sorted(_epoch(DataLoader(ds, batch_size=10, shuffle=True, collate_fn=collate))) == everything
    sampler = BatchSampler(RandomSampler(ds), batch_size=10, drop_last=False)
    assert sorted(_epoch(DataLoader(ds, batch_size=None, sampler=sampler))) == everything
    batch = next(iter(DataLoader(ds, batch_size=7, pin_memory=True)))
    assert batch["image"].shape == (7, 3, 12, 12)


def test_distributed_sampler_covers_the_set(source):
    _, _, store, _ = source
    ds = PatchDataset(store, 12, stride=5, edge="pad")
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        seen += _epoch(DataLoader(ds, batch_size=9, sampler=sampler))
    assert set(seen) == set(range(len(ds)))
    assert len(seen) - len(ds) <= 1


def test_batches_are_contiguous_and_collate_is_exact(source):
    images, masks, store, _ = source
    ds = PatchDataset(store, 12, stride=5)
    samples = ds.__getitems__([4, 1, 9])
    assert all(s["image"].is_contiguous() for s in samples)
    expected = {key: torch.stack([s[key] for s in samples]) for key in ("image", "origin", "mask")}
    for batch in (collate(samples), torch.utils.data.default_collate(samples)):
        assert set(batch) == {"image", "image_id", "origin", "index", "mask"}
        for key, value in expected.items():
            assert torch.equal(batch[key], value)
        assert batch["index"].tolist() == [4, 1, 9]
    # a sample replaced or changed after __getitems__ is honoured, not the cached batch
    samples[1]["image"] = torch.zeros_like(samples[1]["image"])
    assert collate(samples)["image"][1].sum() == 0
    samples[2] = {k: v for k, v in samples[2].items()}
    assert torch.equal(collate(samples)["origin"][2], expected["origin"][2])
    # tensors that merely sit side by side in memory are not mistaken for one batch
    pieces = [torch.arange(6).view(2, 3)[0], torch.arange(6).view(2, 3)[1]]
    assert torch.equal(collate([{"x": p} for p in pieces])["x"], torch.arange(6).view(2, 3))
    flipped = [s["image"].transpose(1, 2) for s in ds.__getitems__([0, 1])]
    assert torch.equal(collate([{"image": f} for f in flipped])["image"], torch.stack(flipped))


def test_batch_buffers_are_reused_only_when_released():
    pool = buffer_pool(limit=1 << 20)
    first = torch.from_numpy(pool.take((2, 64 << 20), np.uint8))  # 128 MiB, over the limit
    assert first.data_ptr() % 4096 == 0
    second = pool.take((2, 64 << 20), np.uint8)  # the first is still held: fresh memory
    assert second.ctypes.data != first.data_ptr()
    address = first.data_ptr()
    del first
    third = pool.take((2, 64 << 20), np.uint8)
    assert third.ctypes.data == address  # kept although large
    view, held = second[1, :10], second.ctypes.data
    del second
    fourth = pool.take((2, 64 << 20), np.uint8)  # the third is held, and a view holds the second
    assert fourth.ctypes.data not in (address, held)
    del view
    assert pool.take((2, 64 << 20), np.uint8).ctypes.data == held
    # idle large buffers make room for a new size; held ones stay
    del third, fourth
    small = pool.take((4, 1 << 20), np.uint8)
    assert [b.nbytes for b in pool_buffers(pool)] == [4 << 20]
    assert pool.take((4, 1 << 20), np.uint8).ctypes.data != small.ctypes.data


def test_prefetch_is_harmless(source):
    images, _, store, _ = source
    for io in ("auto", "pread", "mmap"):
        from lazypatch import ImageStore

        ds = PatchDataset(ImageStore(store.path, io=io), 12, stride=5)
        ds.prefetch([0, 3, len(ds) - 1])
        ds.store.prefetch_regions([0, 1], [(-3, -3), (30, 60)], (12, 12))
        assert torch.equal(ds.read_batch([3])["image"][0], ds[3]["image"])


def test_sample_list_behaves_like_the_list_of_samples(source):
    import copy
    import pickle as pk

    _, _, store, _ = source
    ds = PatchDataset(store, 12, stride=5)
    order = [7, 2, 7, 0, 11]
    eager = [ds[i] for i in order]

    def same(a, b):
        return set(a) == set(b) and all(
            torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)

    checks = [
        lambda s: len(s) == 5 and bool(s),
        lambda s: same(s[1], eager[1]) and same(s[-1], eager[-1]),
        lambda s: all(same(a, b) for a, b in zip(s, eager)),
        lambda s: [x["index"] for x in s[1:4]] == [2, 7, 0],
        lambda s: [x["index"] for x in reversed(s)] == [11, 0, 7, 2, 7],
        lambda s: [x["index"] for x in list(s)] == order and len(tuple(s)) == 5,
        lambda s: [x["index"] for x in copy.copy(s)] == order,
        # (torch 2.13 cannot unpickle uint16 tensors; the samples' ints travel fine)
        lambda s: [x["index"] for x in pk.loads(pk.dumps([{"index": x["index"]} for x in s]))] == order,
        lambda s: type(pk.loads(pk.dumps(s.__reduce_ex__(2)[1][0][:0]))) is list,
        lambda s: "image" in repr(s) and "None" not in repr(s),
        lambda s: s[0] in s and s.index(s[0]) == 0,
        lambda s: [x["index"] for x in sorted(s, key=lambda x: x["index"])] == sorted(order),
    ]
    for check in checks:
        assert check(ds.__getitems__(order))
    with pytest.raises(IndexError):
        ds.__getitems__(order)[5]
    samples = ds.__getitems__(order)
    samples.append(samples[0])
    batch = collate(samples)
    assert batch["index"].tolist() == order + [7]
    assert torch.equal(batch["image"][5], eager[0]["image"])


def test_default_loader_path_batches_without_copying(source):
    _, _, store, _ = source
    ds = PatchDataset(store, 12, stride=5)
    samples = ds.__getitems__([3, 4, 5])
    collated = torch.utils.data.default_collate(samples)  # looks at samples[0] only
    assert collated["image"].data_ptr() == sample_list_batch(samples)["image"].data_ptr()
    assert collated["index"].tolist() == [3, 4, 5]


def test_sample_list_pickles_as_a_plain_list(make_store):
    import pickle as pk

    ds = PatchDataset(make_store([np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3) % 251]), 16)
    samples = pk.loads(pk.dumps(ds.__getitems__([1, 5])))
    assert type(samples) is list and [s["index"] for s in samples] == [1, 5]
    assert torch.equal(samples[1]["image"], ds[5]["image"])


@pytest.mark.parametrize("io", ["mmap", "pread", "auto"])
def test_whole_tile_grids_read_whole_records(make_store, io):
    """Patch = stride = tile on images the tile divides: batches are read as whole
    records (NOTE [whole-tile grids]), equal to numpy and to the general path, with
    masks, a split of the images and a foreground filter; other grids do not use it."""
    from lazypatch import ImageStore
    from lazypatch.filtering import foreground_filter

    shapes = [(32, 48), (16, 16), (48, 32), (64, 16)]
    images = [arange_image(s + (2,), np.uint16, start=1000 * k) for k, s in enumerate(shapes)]
    # labels 1-3 in the first 20 columns: the filter keeps the first column of tiles
    masks = [((np.indices(s)[1] < 20) * (1 + arange_image(s, np.int64) % 3)).astype(np.uint8) for s in shapes]
    written = make_store(images, masks=masks, tile=16)
    store = ImageStore(written.path, io=io)
    filter_path = foreground_filter(store, 16, threshold=0.5)
    cases = [dict(), dict(image_ids=[3, 0, 2]), dict(edge="pad"), dict(filter=filter_path)]
    for options in cases:
        ds = PatchDataset(store, 16, **options)
        assert reads_whole_tiles(ds) and 0 < len(ds) <= 18
        if "filter" in options:
            assert len(ds) < 18  # some patches filtered out
        flat = np.random.default_rng(0).permutation(np.repeat(np.arange(len(ds)), 2))
        fast = ds.read_batch(flat)
        for k, i in enumerate(flat.tolist()):
            image_id, origin = int(fast["image_id"][k]), tuple(fast["origin"][k].tolist())
            assert ds.index.locate(i)[1] == origin
            expected = patch_oracle(images[image_id], origin, (16, 16))
            assert np.array_equal(fast["image"][k].permute(1, 2, 0).numpy(), expected)
            assert np.array_equal(fast["mask"][k].numpy(), patch_oracle(masks[image_id], origin, (16, 16)))
        with general_reads(ds):
            general = ds.read_batch(flat)
        assert all(torch.equal(fast[key], general[key]) for key in general)
        assert reads_whole_tiles(ds)  # back on the fast path after the block
    assert not reads_whole_tiles(PatchDataset(store, 16, stride=8))
    assert not reads_whole_tiles(PatchDataset(store, 8))
    odd = make_store([arange_image((20, 32, 2), np.uint16)], tile=16)
    assert not reads_whole_tiles(PatchDataset(odd, 16, edge="pad"))
    chunked = make_store(images, tile=16, layout="chunked")
    assert not reads_whole_tiles(PatchDataset(chunked, 16))
