"""PatchSampler(by_image=True): whole images per rank, balanced by patch count.

Matrix: random per-image patch counts (hypothesis; zeros included) x ranks
{1..5}, checked against plain loops: every image with patches on exactly one
rank, each rank's numbers the grid ranges of its images in index order, the
largest load within the greedy bound (and, on few images, within Graham's
4/3 of the optimum found by trying every assignment); dataset kinds
{PatchIndex, FilteredIndex, PatchDataset, PatchDataset with image_ids,
PatchDataset with a foreground filter}; more ranks than images; ``batches``
and a DataLoader; resumption mid-rank (iterated, ``consumed=``) and the
states it refuses; every refused combination of options.
"""

import itertools

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from lazypatch import FilteredIndex, PatchDataset, PatchIndex, PatchSampler
from lazypatch.data.samplers.patch import assign_images
from lazypatch.errors import ParameterError, ParameterTypeError


def index_of(counts):
    """A PatchIndex whose image k has exactly counts[k] patches (1 x (c + 1) images, patch 1 x 2)."""
    return PatchIndex([(1, c + 1) for c in counts], (1, 2), stride=1)


def ranks_of(dataset, num_replicas):
    return [PatchSampler(dataset, shuffle=False, by_image=True, num_replicas=num_replicas, rank=r)
            for r in range(num_replicas)]


def expected_numbers(counts, images):
    """The flat numbers of ``images`` in index order, one grid range after another (plain loops)."""
    numbers = []
    for image in sorted(images):
        start = sum(counts[:image])
        for k in range(counts[image]):
            numbers.append(start + k)
    return numbers


counts_lists = st.lists(st.integers(0, 40), min_size=1, max_size=30).filter(any)


@given(counts_lists, st.integers(1, 5))
@example([5, 1, 3, 3, 0], 2)
@example([7], 3)  # more ranks than images
def test_whole_images_partition_the_patches(counts, num_replicas):
    index = index_of(counts)
    assert index.counts.tolist() == counts
    samplers = ranks_of(index, num_replicas)
    owner = {}
    for rank, sampler in enumerate(samplers):
        images = sampler.image_ids.tolist()
        assert images == sorted(images)
        for image in images:
            assert image not in owner and counts[image] > 0
            owner[image] = rank
        values = list(sampler)
        assert values == expected_numbers(counts, images)
        assert len(sampler) == len(values) == sum(counts[i] for i in images)
        assert sampler.state_dict()["position"] == len(values)
    assert sorted(owner) == [k for k, c in enumerate(counts) if c > 0]
    loads = [len(s) for s in samplers]
    assert sum(loads) == sum(counts)
    # greedy list scheduling: R * max load <= total + (R - 1) * largest image
    assert num_replicas * max(loads) <= sum(counts) + (num_replicas - 1) * max(counts)
    # the same split whichever rank computes it, and the global stream is rank by rank
    stream = samplers[0].indices(np.arange(sum(counts))).tolist()
    assert stream == sum((list(s) for s in samplers), [])
    assert sorted(stream) == list(range(sum(counts)))


@given(st.lists(st.integers(0, 30), min_size=1, max_size=7).filter(any), st.integers(2, 3))
@example([3, 3, 2, 2, 2], 2)  # greedy 7, optimum 6: Graham's worst case for two ranks
def test_largest_load_within_four_thirds_of_the_optimum(counts, num_replicas):
    owners = assign_images(counts, num_replicas)
    loads = np.bincount(owners[owners >= 0], weights=np.asarray(counts)[owners >= 0], minlength=num_replicas)
    best = min(max(sum(c for c, r in zip(counts, choice) if r == rank) for rank in range(num_replicas))
               for choice in itertools.product(range(num_replicas), repeat=len(counts)))
    assert 3 * num_replicas * loads.max() <= (4 * num_replicas - 1) * best


def test_assignment_is_largest_first_onto_the_least_loaded_rank():
    # 9 -> r0, 8 -> r1, 5 -> r2, 4 -> r2 (at 5), 3 -> r1 (at 8), then the 1s in index order:
    # image 0 -> r0 (r0 and r2 at 9: the lower rank), image 3 -> r2; image 7 has no patch
    assert assign_images([1, 9, 4, 1, 8, 5, 3, 0], 3).tolist() == [0, 0, 2, 2, 1, 2, 1, -1]
    assert assign_images([2, 2, 2, 2], 2).tolist() == [0, 1, 0, 1]


def test_filtered_index_counts_kept_patches():
    base = PatchIndex([(4, 8), (4, 4), (6, 6), (2, 2)], patch_size=2)  # 8 + 4 + 9 + 1 patches
    keep = np.zeros(len(base), bool)
    keep[[1, 2, 3, 7, 9, 12, 13, 14, 15, 16, 17, 18]] = True  # image 3 keeps nothing
    kept = FilteredIndex(base, np.packbits(keep))
    counts = kept.counts.tolist()
    assert counts == [4, 1, 7, 0]
    samplers = ranks_of(kept, 2)
    assert [s.image_ids.tolist() for s in samplers] == [[2], [0, 1]]
    assert [list(s) for s in samplers] == [expected_numbers(counts, [2]), expected_numbers(counts, [0, 1])]


def test_datasets_by_name_selection_and_filter(make_store):
    from lazypatch.filtering import foreground_filter

    shapes = [(40, 40), (16, 48), (64, 24), (24, 24), (32, 32)]
    images = [np.full(s, k, np.uint8) for k, s in enumerate(shapes)]
    masks = [(np.indices(s)[1] < 12).astype(np.uint8) for s in shapes]  # foreground: the left columns
    store = make_store(images, masks=masks)
    datasets = {"all": PatchDataset(store.path, 8),
                "some": PatchDataset(store.path, 8, image_ids=[4, 0, 2]),
                "filter": PatchDataset(store.path, 8, filter=foreground_filter(store, 8, threshold=0.5))}
    assert len(datasets["filter"]) < len(datasets["all"])
    for kind, dataset in datasets.items():
        counts = dataset.index.counts.tolist()
        samplers = ranks_of(dataset, 2)
        store_ids = np.arange(len(shapes)) if dataset.image_ids is None else dataset.image_ids
        seen = []
        for sampler in samplers:
            local = [int(np.flatnonzero(store_ids == i)[0]) for i in sampler.image_ids]
            values = list(sampler)
            assert values == expected_numbers(counts, local), kind
            # the samples are of this rank's images (the store's numbers), image after image
            loader = DataLoader(dataset, batch_size=5, sampler=sampler)
            got = [int(i) for batch in loader for i in batch["image_id"]]
            assert set(got) == set(sampler.image_ids.tolist()) and got == sorted(got, key=local_order(sampler))
            seen += values
        assert sorted(seen) == list(range(len(dataset))), kind


def local_order(sampler):
    order = {image: k for k, image in enumerate(sampler.image_ids.tolist())}
    return order.__getitem__


def test_more_ranks_than_images_leaves_ranks_empty():
    samplers = ranks_of(index_of([3, 2]), 4)
    assert [len(s) for s in samplers] == [3, 2, 0, 0]
    assert list(samplers[3]) == [] and list(samplers[3].batches(4)) == []
    assert samplers[3].image_ids.tolist() == []


def test_batches_follow_the_iteration():
    counts = [5, 0, 7, 2, 9]
    for sampler in ranks_of(index_of(counts), 2):
        batches = list(sampler.batches(3))
        assert all(b.dtype == np.int64 for b in batches)
        assert np.concatenate(batches).tolist() == list(sampler)


def test_resume_mid_rank():
    counts = [6, 4, 9, 3, 8, 2]
    index = index_of(counts)
    for rank, full in enumerate(ranks_of(index, 2)):
        expected = list(full)
        sampler = ranks_of(index, 2)[rank]
        iterator = iter(sampler)
        done = [next(iterator) for _ in range(5)]
        state = sampler.state_dict()
        assert state["position"] == 5 and state["by_image"] and state["rank"] == rank
        resumed = ranks_of(index, 2)[rank]
        resumed.load_state_dict(state)
        assert len(resumed) == len(expected) - 5
        assert done + list(resumed) == expected
        # consumed= (a DataLoader draws ahead): counted from where the resumed run began
        again = ranks_of(index, 2)[rank]
        again.load_state_dict(resumed.state_dict(consumed=2))
        assert list(again) == expected[7:]
        again.set_epoch(1)  # a new epoch starts from the rank's beginning
        assert list(again) == expected
    finished = ranks_of(index, 2)[0]
    list(finished)
    state = finished.state_dict()
    assert state["position"] == len(finished)
    after = ranks_of(index, 2)[0]
    after.load_state_dict(state)
    assert len(after) == 0 and list(after) == []


def test_resume_refuses_another_split():
    index = index_of([6, 4, 9, 3])
    state = ranks_of(index, 2)[1].state_dict(consumed=3)
    for sampler, message in [
        (ranks_of(index, 3)[1], r"state_dict was made with num_replicas=2, this sampler has num_replicas=3 \(whole images per rank resume on the same ranks\)"),
        (ranks_of(index, 2)[0], r"state_dict was made with rank=1, this sampler has rank=0"),
        (PatchSampler(index, shuffle=False, num_replicas=2, rank=1), r"state_dict was made with by_image=True, this sampler has by_image=False"),
    ]:
        with pytest.raises(ParameterError, match=message):
            sampler.load_state_dict(state)
    ordinary = PatchSampler(index, shuffle=False).state_dict(consumed=3)
    with pytest.raises(ParameterError, match=r"state_dict was made with by_image=False, this sampler has by_image=True"):
        ranks_of(index, 2)[1].load_state_dict(ordinary)
    with pytest.raises(ParameterError, match=r"state_dict position must be in \[0, 10\], got 11"):
        ranks_of(index, 2)[1].load_state_dict({**state, "position": 11})


BY_IMAGE = dict(shuffle=False, by_image=True)


@pytest.mark.parametrize("options, exception, message", [
    (dict(by_image=True), ParameterError, r"by_image=True .* cannot be combined with shuffle=True: pass shuffle=False"),
    (dict(BY_IMAGE, replacement=True), ParameterError, r"cannot be combined with replacement=True"),
    (dict(BY_IMAGE, drop_last=True), ParameterError, r"cannot be combined with drop_last=True"),
    (dict(BY_IMAGE, balance="image"), ParameterError, r"cannot be combined with balance='image'"),
    (dict(BY_IMAGE, num_samples=5), ParameterError, r"cannot be combined with num_samples=5: .* num_samples at len\(dataset\) = 7"),
    (dict(by_image=True, shuffle=True, drop_last=True), ParameterError, r"combined with shuffle=True, drop_last=True"),
    (dict(shuffle=False, by_image="yes"), ParameterTypeError, r"by_image must be True or False, got 'yes'"),
])
def test_refused_options(options, exception, message):
    with pytest.raises(exception, match=message):
        PatchSampler(index_of([3, 4]), **options)


def test_needs_images():
    with pytest.raises(ParameterTypeError, match=r"by_image=True needs a PatchDataset, a PatchIndex or a FilteredIndex .*got range"):
        PatchSampler(range(10), **BY_IMAGE)
    # num_samples equal to the dataset's length is the default, not a conflict
    assert len(PatchSampler(index_of([3, 4]), num_samples=7, **BY_IMAGE)) == 7
