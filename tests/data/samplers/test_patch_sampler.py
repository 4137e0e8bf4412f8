"""PatchSampler and SeededTransform.

Matrix: shuffle {on, off} x replacement {off, on} x balance {patch, image} x
ranks {1, 2, 3, 4} x drop_last {off, on}; checked: the epoch order is a pure
function of (seed, epoch) and independent of the number of ranks; ranks
partition the stream with at most R - 1 repeats; a permutation is a
bijection (hypothesis over sizes); resume mid-epoch, also on another number
of ranks; image-to-image transitions like a uniform permutation's; O(1)
memory; deterministic augmentation across worker counts.
"""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from lazypatch import PatchDataset, PatchIndex, PatchSampler, SeededTransform
from lazypatch.testing.internals import shuffle_permute


@given(st.integers(1, 5000), st.integers(0, 2**40), st.integers(0, 5))
def test_permute_is_a_bijection(n, salt, tweak):
    values = shuffle_permute(np.arange(n), n, salt, tweak=tweak)
    assert np.array_equal(np.sort(values), np.arange(n))


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = list(PatchSampler(range(1000), seed=3))
    assert a == list(PatchSampler(range(1000), seed=3))
    assert a != list(PatchSampler(range(1000), seed=4))
    sampler = PatchSampler(range(1000), seed=3)
    sampler.set_epoch(1)
    b = list(sampler)
    assert sorted(b) == list(range(1000)) and b != a
    assert list(PatchSampler(range(10), shuffle=False)) == list(range(10))


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("replacement", [False, True])
def test_ranks_split_one_global_stream(ranks, drop_last, replacement):
    n = 1003
    single = PatchSampler(range(n), seed=11, replacement=replacement)
    stream = single.indices(np.arange(n))
    parts = [list(PatchSampler(range(n), seed=11, num_replicas=ranks, rank=r, drop_last=drop_last,
                               replacement=replacement)) for r in range(ranks)]
    lengths = {len(p) for p in parts}
    assert len(lengths) == 1
    length = lengths.pop()
    assert length == (n // ranks if drop_last else -(-n // ranks))
    for r, part in enumerate(parts):
        positions = np.arange(r, r + length * ranks, ranks) % n
        assert part == stream[positions].tolist()
    merged = sum(parts, [])
    if not replacement:
        if drop_last:
            assert len(set(merged)) == len(merged) == length * ranks
        else:
            assert set(merged) == set(range(n)) and len(merged) - n <= ranks - 1


def test_resume_mid_epoch_on_another_number_of_ranks():
    n = 997
    first = PatchSampler(range(n), seed=5, num_replicas=2, rank=0)
    first.set_epoch(3)
    iterator = iter(first)
    for _ in range(100):
        next(iterator)
    state = first.state_dict()
    assert state["position"] == 200 and state["epoch"] == 3
    resumed = []
    for rank in range(3):
        sampler = PatchSampler(range(n), seed=5, num_replicas=3, rank=rank)
        sampler.load_state_dict(state)
        resumed.append(list(sampler))
    reference = PatchSampler(range(n), seed=5)
    reference.set_epoch(3)
    stream = reference.indices(np.arange(n)).tolist()
    done = stream[:200]
    rest = sum(resumed, [])
    assert set(done) | set(rest) == set(range(n))
    assert set(done).isdisjoint(set(rest) - set(stream[:2]))  # the wrap may repeat the start
    assert PatchSampler(range(n), seed=5).state_dict(consumed=7)["position"] == 7
    with pytest.raises(ValueError, match="seed=6"):
        PatchSampler(range(n), seed=6).load_state_dict(state)
    with pytest.raises(TypeError, match="state must be a dict from PatchSampler.state_dict.. with an integer 'epoch', got"):
        PatchSampler(range(n), seed=5).load_state_dict({"x": 1})


def test_num_samples_with_and_without_replacement():
    sampler = PatchSampler(range(10), seed=1, num_samples=25)
    values = list(sampler)
    assert len(values) == 25
    assert sorted(values[:10]) == list(range(10)) and sorted(values[10:20]) == list(range(10))
    drawn = list(PatchSampler(range(10), seed=1, num_samples=5000, replacement=True))
    counts = np.bincount(drawn, minlength=10)
    assert counts.min() > 400 and counts.max() < 600


def test_transitions_between_images_like_a_uniform_permutation():
    shapes = np.random.default_rng(0).integers(64, 2048, size=(5000, 2))
    index = PatchIndex(shapes, 32, stride=16)
    n = len(index)
    assert n > 10**7
    sampler = PatchSampler(index, seed=2)
    positions = np.arange(2_000_000)
    images, _ = index.locate(sampler.indices(positions))
    changes = np.mean(images[1:] != images[:-1])
    # a uniform permutation changes image unless two draws fall in the same image
    counts = index.counts.astype(np.float64)
    expected = 1 - np.sum((counts / n) ** 2)
    assert abs(changes - expected) <= 0.05 * expected


def test_image_balance():
    index = PatchIndex([(64, 64)] * 3 + [(1024, 1024)], 16)  # one huge image
    drawn = PatchSampler(index, seed=3, num_samples=8000, balance="image", replacement=True)
    images, _ = index.locate(np.asarray(list(drawn)))
    assert np.all(np.abs(np.bincount(images) / 8000 - 0.25) < 0.03)
    exact = PatchSampler(index, seed=3, num_samples=4 * 16, balance="image")
    values = list(exact)
    images, _ = index.locate(np.asarray(values))
    assert np.all(np.bincount(images) == 16)
    small = [v for v, i in zip(values, images) if i < 3]
    assert len(set(small)) == len(small)  # no patch twice before an image is exhausted


def test_sampler_memory_is_constant_and_pickles():
    sampler = PatchSampler(range(10**9), seed=1)
    assert len(pickle.dumps(sampler)) < 2000
    assert len(sampler) == 10**9
    batch = next(sampler.batches(256))
    assert batch.shape == (256,) and batch.min() >= 0 and batch.max() < 10**9


@pytest.mark.parametrize("dataset, options, kind, pattern", [
    pytest.param(range(10), {"num_samples": 0}, ValueError, "num_samples", id="num_samples=0"),
    pytest.param(range(10), {"seed": 1.5}, TypeError, "seed", id="seed=1.5"),
    pytest.param(range(10), {"num_replicas": 2, "rank": 2}, ValueError, "rank", id="rank=2 of 2 replicas"),
    pytest.param(range(10), {"balance": "class"}, ValueError, "balance", id="balance='class'"),
    pytest.param(range(10), {"shuffle": "yes"}, TypeError, "shuffle", id="shuffle='yes'"),
    pytest.param([], {}, ValueError, "empty", id="an empty dataset"),
])
def test_bad_arguments(dataset, options, kind, pattern):
    with pytest.raises(kind, match=pattern):
        PatchSampler(dataset, **options)


def noisy(sample, generator):
    sample["image"] = sample["image"].float() + torch.rand(sample["image"].shape, generator=generator)
    return sample


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.system)])
def test_seeded_transform_is_the_same_for_any_number_of_workers(make_store, workers):
    images = [np.zeros((32, 32), np.uint8)] * 4
    dataset = PatchDataset(make_store(images), 16, transform=SeededTransform(noisy, seed=9))
    sampler = PatchSampler(dataset, seed=1)

    def epoch(number):
        sampler.set_epoch(number)
        loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=workers,
                            persistent_workers=workers > 0)
        return {int(i): img for batch in loader for i, img in zip(batch["index"], batch["image"])}

    first, second = epoch(0), epoch(1)
    dataset.transform.set_epoch(0)
    again = {i: dataset[i]["image"] for i in range(len(dataset))}
    assert all(torch.equal(first[i], again[i]) for i in first)
    assert not all(torch.equal(first[i], second[i]) for i in first)
    assert len(pickle.dumps(dataset)) < 64 * 1024  # outside a spawn, the epoch pickles as an int
