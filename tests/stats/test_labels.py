"""Label statistics and ClassSampler.

Matrix: statistics computed after the fact, written by write_store and by
`lazypatch index --labels`, against numpy counts (2-D, 3-D, many labels);
building a sampler reads no pixel data (a read counter); centre-pixel label
frequencies match the ratios (two-sided binomial test at p = 1e-4,
derandomized seeds); images lacking a label are skipped and counted; the
weight-map mode; ranks split one stream.
"""

import math

import numpy as np
import pytest

from lazypatch import ImageStore, PatchDataset, write_store
from lazypatch.cli import main
from lazypatch.labels import ClassSampler, LabelStats
from lazypatch.testing.internals import mask_reader, pixel_reader, store_handles


def brute_counts(mask, block):
    rows = {}
    grid = [-(-s // b) for s, b in zip(mask.shape, block)]
    for index in np.ndindex(mask.shape):
        linear = 0
        for a, v in enumerate(index):
            linear = linear * grid[a] + v // block[a]
        key = (linear, int(mask[index]))
        rows[key] = rows.get(key, 0) + 1
    return sorted((b, lab, c) for (b, lab), c in rows.items())


def as_rows(stats, image):
    lo, hi = stats.image_offsets[image], stats.image_offsets[image + 1]
    return sorted(zip(stats.blocks[lo:hi].tolist(), stats.labels[lo:hi].tolist(), stats.counts[lo:hi].tolist()))


@pytest.mark.parametrize("ndim", [2, 3])
def test_statistics_equal_numpy(tmp_path, rng, ndim):
    shapes = [(23, 41), (8, 8), (70, 9)] if ndim == 2 else [(9, 13, 7), (4, 4, 20)]
    masks = [rng.integers(0, 300, size=s).astype(np.uint16) for s in shapes]  # many labels
    images = [np.zeros(s, np.uint8) for s in shapes]
    block = (16,) * ndim
    written = write_store(tmp_path / "s.h5", images, masks=masks, spatial_ndim=ndim, label_stats=16,
                          progress=False)
    for stats in (LabelStats.compute(written, 16), LabelStats.open(written)):
        for k, mask in enumerate(masks):
            assert as_rows(stats, k) == brute_counts(mask, block)
    assert main(["index", str(tmp_path / "s.h5"), "--labels", "--block", "16"]) == 0
    sidecar = LabelStats.open(written, str(tmp_path / "s.h5") + ".labels.h5")
    assert as_rows(sidecar, 0) == brute_counts(masks[0], block)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64])
def test_block_counter_any_label_dtype_and_bands(rng, dtype):
    from lazypatch.labels import BlockCounter

    for shape, block in [((37, 29), (8, 5)), ((6, 11, 9), (4, 4, 3))]:
        if dtype == np.bool_:
            mask = rng.random(shape) < 0.3
        else:
            info = np.iinfo(dtype)
            extremes = np.array([info.min, info.max, 0, -1 if info.min < 0 else 1], dtype)
            mask = rng.choice(extremes, size=shape)
        counter = BlockCounter(shape, block)
        cuts = sorted({0, shape[0], *rng.integers(1, shape[0], 3).tolist()})
        for r0, r1 in zip(cuts[:-1], cuts[1:]):  # bands of any height, not aligned with blocks
            counter.add(r0, mask[r0:r1])
        blocks, labels, counts = counter.rows()
        assert sorted(zip(blocks.tolist(), labels.tolist(), counts.tolist())) == brute_counts(mask, block)
        assert list(zip(blocks.tolist(), labels.tolist())) == sorted(zip(blocks.tolist(), labels.tolist()))


def counting(store):
    """Count every read of pixel or mask data a store makes."""
    calls = {"n": 0}
    handles = store_handles(store)
    for name in ("records", "pread_into", "populate"):
        original = getattr(handles, name)

        def wrapper(*args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(*args, **kwargs)
        setattr(handles, name, wrapper)
    for reader in (pixel_reader(store), mask_reader(store)):
        for name in ("read_box", "read_boxes"):
            original = getattr(reader, name)

            def wrapper(*args, _original=original, **kwargs):
                calls["n"] += 1
                return _original(*args, **kwargs)
            setattr(reader, name, wrapper)
    return calls


def binomial_two_sided_p(successes, trials, p):
    """Exact two-sided binomial p-value (sum of outcomes no more likely than the observed)."""
    logs = [math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
            + k * math.log(p) + (trials - k) * math.log1p(-p) for k in range(trials + 1)]
    observed = logs[successes]
    return min(1.0, sum(math.exp(v) for v in logs if v <= observed + 1e-9))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    rng = np.random.default_rng(5)
    folder = tmp_path_factory.mktemp("labels")
    masks = []
    for k in range(6):
        mask = np.zeros((96, 112), np.uint8)
        if k != 4:  # image 4 has no label 2 at all
            mask[30:50, 40:70] = 2
        mask[rng.random(mask.shape) < 0.02] = 1  # rare speckles
        masks.append(mask)
    images = [np.zeros((96, 112), np.uint8) for _ in masks]
    store = write_store(folder / "l.h5", images, masks=masks, label_stats=True, progress=False)
    return store, masks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_centre_labels_follow_the_ratios(labelled, seed):
    store, masks = labelled
    ds = PatchDataset(ImageStore(store.path), 16, stride=1)
    calls = counting(ds.store)
    ratios = {0: 0.5, 1: 0.3, 2: 0.2}
    sampler = ClassSampler(ds, ratios, num_samples=1500, seed=seed)
    assert calls["n"] == 0  # building read no pixel data
    assert sampler.summary[2]["images_without"] == 1 and sampler.summary[2]["images"] == 5
    indices = np.asarray(list(sampler))
    ids, origins = ds.index.locate(indices)
    centres = origins + 8
    labels = np.asarray([masks[i][y, x] for i, (y, x) in zip(ids, centres.tolist())])
    for label, ratio in ratios.items():
        p_value = binomial_two_sided_p(int((labels == label).sum()), len(labels), ratio / sum(ratios.values()))
        assert p_value > 1e-4, (label, (labels == label).mean())
    assert list(ClassSampler(ds, ratios, num_samples=50, seed=seed)) == list(
        ClassSampler(ds, ratios, num_samples=50, seed=seed))


def test_weights_and_ranks(labelled):
    store, masks = labelled
    ds = PatchDataset(store, 8, stride=1)
    sampler = ClassSampler(ds, weights={1: 1.0, 2: 0.0}, num_samples=400, seed=3)
    ids, origins = ds.index.locate(np.asarray(list(sampler)))
    assert all(masks[i][y + 4, x + 4] == 1 for i, (y, x) in zip(ids, origins.tolist()))
    whole = ClassSampler(ds, {1: 1, 2: 1}, num_samples=101, seed=4)
    stream = whole.indices(np.arange(101)).tolist()
    parts = [list(ClassSampler(ds, {1: 1, 2: 1}, num_samples=101, seed=4, num_replicas=2, rank=r))
             for r in range(2)]
    assert parts[0] == stream[0::2] + [] and parts[1] == stream[1::2] + stream[:1]


def test_bad_arguments(labelled):
    store, _ = labelled
    ds = PatchDataset(store, 8, stride=1)
    with pytest.raises(ValueError, match="num_samples is required"):
        ClassSampler(ds, {1: 1})
    with pytest.raises(ValueError, match="exactly one of"):
        ClassSampler(ds, num_samples=5)
    with pytest.raises(ValueError, match="no image has label 7"):
        ClassSampler(ds, {7: 1}, num_samples=5)
    with pytest.raises(TypeError, match="integer labels"):
        ClassSampler(ds, {"tumour": 1}, num_samples=5)
    plain = write_store(store.path + ".plain.h5", [np.zeros((8, 8), np.uint8)], masks=[np.zeros((8, 8), np.uint8)],
                        progress=False)
    with pytest.raises(FileNotFoundError, match="lazypatch index"):
        LabelStats.open(plain)
