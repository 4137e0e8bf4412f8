"""TorchvisionTransform: image and mask move together through torchvision.transforms.v2.

The oracle for geometric augmentation is brute force: every output patch must
be a crop of a flip of the patch as stored, and its mask the very same crop of
the same flip of the stored mask.

Matrix: flip + crop through ds[i] / read_batch / __getitems__; interpolating
transforms (labels never blended); seeded x DataLoader {in process, 2 workers
fork, 2 workers spawn} x epochs {0, 1}; unseeded with workers and pinned
memory; 3-D patches; a transform that loses the sample; bad arguments and a
missing torchvision. Needs torchvision (``requires_torchvision``).
"""

import itertools
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lazypatch import ParameterTypeError, PatchDataset, PatchSampler, TorchvisionTransform

PATCH, CROP = 24, 16


@pytest.fixture
def v2():
    pytest.importorskip("torchvision")
    from torchvision.transforms import v2

    return v2


@pytest.fixture
def dataset(make_store, rng):
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (40, 33, 3), dtype=np.uint8)]
    masks = [(im[..., 0] // 64).astype(np.uint8) for im in images]  # labels 0..3, a function of the image
    store = make_store(images, masks=masks)
    return PatchDataset(store, PATCH, stride=9, edge="shift")


def _flip_crop(array: np.ndarray, horizontal: bool, vertical: bool, y: int, x: int) -> np.ndarray:
    if horizontal:
        array = array[..., ::-1]
    if vertical:
        array = array[..., ::-1, :]
    return array[..., y:y + CROP, x:x + CROP]


def _explain(plain: dict, out: dict):
    """The (horizontal, vertical, y, x) that turn the stored patch into ``out``, or None."""
    image, mask = plain["image"].numpy(), plain["mask"].numpy()
    for horizontal, vertical in itertools.product((False, True), repeat=2):
        for y, x in itertools.product(range(PATCH - CROP + 1), repeat=2):
            if np.array_equal(_flip_crop(image, horizontal, vertical, y, x), out["image"].numpy()):
                if np.array_equal(_flip_crop(mask, horizontal, vertical, y, x), out["mask"].numpy()):
                    return horizontal, vertical, y, x
    return None


def _flip_crop_transform(v2):
    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomCrop(CROP)])


@pytest.mark.requires_torchvision
def test_image_and_mask_stay_aligned_through_flip_and_crop(dataset, v2):
    augmented = PatchDataset(dataset.store, PATCH, stride=9, edge="shift",
                             transform=TorchvisionTransform(_flip_crop_transform(v2), seed=3))
    explanations = []
    for k in range(len(dataset)):
        out = augmented[k]
        assert type(out["image"]) is torch.Tensor and type(out["mask"]) is torch.Tensor
        assert out["image"].dtype == torch.uint8 and out["mask"].dtype == torch.uint8
        assert out["index"] == k and torch.equal(out["origin"], dataset[k]["origin"])
        explanation = _explain(dataset[k], out)
        assert explanation is not None, f"sample {k}: image and mask are not the same flip and crop"
        explanations.append(explanation)
    # the transform really was random: both flips happened, and crops at several offsets
    assert {(h, v) for h, v, _, _ in explanations} == set(itertools.product((False, True), repeat=2))
    assert len({(y, x) for _, _, y, x in explanations}) > 5


@pytest.mark.requires_torchvision
def test_batches_through_read_batch_and_getitems_are_aligned(dataset, v2):
    augmented = PatchDataset(dataset.store, PATCH, stride=9, edge="shift",
                             transform=TorchvisionTransform(_flip_crop_transform(v2), seed=1))
    batch = augmented.read_batch([0, 3, 5])
    assert batch["image"].shape == (3, 3, CROP, CROP) and batch["mask"].shape == (3, CROP, CROP)
    for position, k in enumerate([0, 3, 5]):
        out = {"image": batch["image"][position], "mask": batch["mask"][position]}
        assert _explain(dataset[k], out) is not None
    for k, out in zip([2, 4], augmented.__getitems__([2, 4])):
        assert _explain(dataset[k], out) is not None


@pytest.mark.requires_torchvision
def test_mask_labels_survive_interpolating_transforms(make_store, rng, v2):
    # two-valued images and two-label masks: bilinear resampling makes new image values,
    # and any blend of the labels 1 and 7 would show as 2..6
    images = [np.where(rng.random((60, 60, 3)) < 0.5, 0, 200).astype(np.uint8) for _ in range(2)]
    masks = [np.where(image[..., 0] == 0, 1, 7).astype(np.uint8) for image in images]
    transform = v2.Compose([
        v2.RandomResizedCrop(20, scale=(0.3, 1.0), antialias=True),
        v2.RandomRotation(30),  # fills the corners with 0, in the mask too
        v2.ToDtype(torch.float32, scale=True),
    ])
    augmented = PatchDataset(make_store(images, masks=masks), PATCH, stride=9,
                             transform=TorchvisionTransform(transform, seed=0))
    blended = set()
    for k in range(len(augmented)):
        out = augmented[k]
        assert out["image"].dtype == torch.float32 and 0 <= out["image"].min() and out["image"].max() <= 1
        assert out["mask"].dtype == torch.uint8 and out["mask"].shape == (20, 20)
        assert set(out["mask"].unique().tolist()) <= {0, 1, 7}  # labels, never blends of labels
        blended |= set(out["image"].mul(255).round().unique().tolist()) - {0, 200}
    assert blended  # meanwhile the image was resampled bilinearly


@pytest.mark.requires_torchvision
@pytest.mark.system
def test_seeded_augmentation_is_reproducible_across_workers_and_epochs(dataset, v2):
    transform = TorchvisionTransform(_flip_crop_transform(v2), seed=11)
    augmented = PatchDataset(dataset.store, PATCH, stride=9, edge="shift", transform=transform)
    sampler = PatchSampler(augmented, seed=0)

    def epoch(number, **options):
        sampler.set_epoch(number)
        loader = DataLoader(augmented, batch_size=5, sampler=sampler, **options)
        return [(batch["index"], batch["image"], batch["mask"]) for batch in loader]

    def same(a, b):
        return all(torch.equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb)) and len(a) == len(b)

    first = epoch(0)
    assert same(first, epoch(0))
    assert same(first, epoch(0, num_workers=2, multiprocessing_context="fork"))
    assert same(first, epoch(0, num_workers=2, multiprocessing_context="spawn"))
    second = epoch(1, num_workers=2, multiprocessing_context="spawn")
    assert same(second, epoch(1))
    assert not same(first, second)
    state = torch.get_rng_state()
    augmented[0]
    assert torch.equal(state, torch.get_rng_state())  # seeded: torch's global generator untouched


@pytest.mark.requires_torchvision
@pytest.mark.system
def test_unseeded_transform_uses_torch_randomness_in_workers_with_pinned_memory(dataset, v2):
    augmented = PatchDataset(dataset.store, PATCH, stride=9, edge="shift",
                             transform=TorchvisionTransform(_flip_crop_transform(v2)))
    loader = DataLoader(augmented, batch_size=8, shuffle=True, num_workers=2, multiprocessing_context="spawn",
                        pin_memory=True, persistent_workers=True)
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (3, CROP, CROP) and batch["mask"].shape[1:] == (CROP, CROP)
        for position, k in enumerate(batch["index"].tolist()):
            out = {"image": batch["image"][position], "mask": batch["mask"][position]}
            assert _explain(dataset[k], out) is not None
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(dataset)))
    torch.manual_seed(5)
    a = augmented[0]["image"]
    torch.manual_seed(5)
    assert torch.equal(a, augmented[0]["image"])  # unseeded: follows torch.manual_seed


@pytest.mark.requires_torchvision
def test_3d_patches_are_flipped_in_plane_with_their_masks(make_store, rng, v2):
    volume = rng.integers(0, 1000, (6, 20, 20, 2), dtype=np.uint16).astype(np.float32)
    store = make_store([volume], masks=[(volume[..., 0] > 500).astype(np.uint8)], spatial_ndim=3)
    plain = PatchDataset(store, (4, 8, 8), stride=(2, 6, 6))
    flipped = PatchDataset(store, (4, 8, 8), stride=(2, 6, 6),
                           transform=TorchvisionTransform(v2.RandomHorizontalFlip(p=1.0)))
    for k in range(len(plain)):
        assert torch.equal(flipped[k]["image"], plain[k]["image"].flip(-1))
        assert torch.equal(flipped[k]["mask"], plain[k]["mask"].flip(-1))


@pytest.mark.requires_torchvision
def test_a_transform_that_loses_the_sample_is_reported(dataset, v2):
    broken = PatchDataset(dataset.store, PATCH, transform=TorchvisionTransform(lambda sample: sample["image"]))
    with pytest.raises(TypeError, match="must return the sample dict"):
        broken[0]


def test_bad_transform_is_a_parameter_error():
    with pytest.raises(ParameterTypeError, match="transform must be a callable.*got int"):
        TorchvisionTransform(3)
    with pytest.raises(ParameterTypeError, match="seed must be an integer"):
        TorchvisionTransform(lambda sample: sample, seed="x")


def test_missing_torchvision_is_an_import_error_with_a_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    transform = TorchvisionTransform(lambda sample: sample)
    with pytest.raises(ImportError, match="pip install torch==2.14.1 torchvision==0.29.1"):
        transform({"image": torch.zeros(1, 2, 2), "index": 0})


@pytest.mark.requires_torchvision
def test_the_docstring_example(v2):
    flip = TorchvisionTransform(v2.RandomHorizontalFlip(p=1.0))
    out = flip({"image": torch.arange(4).view(1, 1, 4), "mask": torch.tensor([[0, 0, 1, 2]]), "index": 0})
    assert (out["image"].tolist(), out["mask"].tolist()) == ([[[3, 2, 1, 0]]], [[2, 1, 0, 0]])


def test_a_sample_that_is_not_a_dict_is_a_parameter_error():
    with pytest.raises(ParameterTypeError, match="sample must be a PatchDataset sample .*got Tensor"):
        TorchvisionTransform(lambda sample: sample)(torch.zeros(3))
