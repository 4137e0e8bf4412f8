"""Augmentation: seeded randomness, and joint image + mask transforms with torchvision.

:class:`SeededTransform` gives augmentations randomness that depends on
``(seed, epoch, index)`` only, so an epoch's samples are identical for any
number of DataLoader workers.

torchvision's v2 transforms act on every tensor of a sample according to its
type: a ``tv_tensors.Image`` is flipped, cropped, resized (bilinear) and
colour-jittered; a ``tv_tensors.Mask`` gets the same geometry with
nearest-neighbour resampling and no colour or dtype change, so its labels stay
labels. :class:`TorchvisionTransform` wraps a lazypatch sample that way, runs the
transform, and hands back plain tensors::

    from torchvision.transforms import v2
    augment = TorchvisionTransform(v2.Compose([
        v2.RandomHorizontalFlip(), v2.RandomResizedCrop(96, antialias=True),
        v2.ToDtype(torch.float32, scale=True),     # the image only; the mask keeps its dtype
    ]), seed=0)
    dataset = PatchDataset(store, patch_size=128, transform=augment)

torchvision is imported when the first sample is transformed; lazypatch itself
never requires it.
"""

from __future__ import annotations

import torch

import multiprocessing

from ..errors import ParameterTypeError
from ..grid import is_int
from . import _shuffle

__all__ = ["SeededTransform", "TorchvisionTransform"]


class SeededTransform:
    """Wrap ``fn(sample, generator)`` so its randomness depends on (seed, epoch, index) only.

    The ``torch.Generator`` handed to ``fn`` is seeded from the seed, the
    current epoch and the sample's ``"index"``: the same sample gets the same
    augmentation in an epoch whatever the number of workers, and a different
    one next epoch. The epoch lives in shared memory, so ``set_epoch`` (called
    by ``PatchSampler.set_epoch`` through ``PatchDataset.set_epoch``) reaches
    worker processes, persistent ones included.

    Examples
    --------
    >>> def flip(sample, generator):
    ...     if torch.rand((), generator=generator) < 0.5:
    ...         sample["image"] = sample["image"].flip(-1)
    ...     return sample
    >>> transform = SeededTransform(flip, seed=7)
    >>> a = transform({"image": torch.arange(4.0).view(1, 1, 4), "index": 3})["image"]
    >>> b = transform({"image": torch.arange(4.0).view(1, 1, 4), "index": 3})["image"]
    >>> torch.equal(a, b)
    True
    """

    def __init__(self, fn, seed: int = 0):
        if not callable(fn):
            raise ParameterTypeError(f"fn must be callable, got {type(fn).__name__}")
        if not is_int(seed):
            raise ParameterTypeError(f"seed must be an integer, got {seed!r}")
        self.fn = fn
        self.seed = int(seed)
        self._epoch = multiprocessing.Value("q", 0, lock=False)

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(_shuffle.key(self.seed, self.epoch, index) >> 1)

    def __call__(self, sample: dict) -> dict:
        return self.fn(sample, self.generator(int(sample["index"])))

    def __getstate__(self):
        from multiprocessing import context

        state = self.__dict__.copy()
        if context.get_spawning_popen() is None:  # not handing it to a new process
            state["_epoch"] = self._epoch.value
        return state

    def __setstate__(self, state):
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.Value("q", state["_epoch"], lock=False)
        self.__dict__.update(state)


class TorchvisionTransform(SeededTransform):
    """Apply a ``torchvision.transforms.v2`` transform to a sample's image and mask together.

    Parameters
    ----------
    transform : callable
        A v2 transform (``v2.Compose([...])`` or a single one). It receives the
        sample as a dict whose ``"image"`` is a ``tv_tensors.Image`` (C, H, W)
        and whose ``"mask"`` (when the store has masks) is a
        ``tv_tensors.Mask`` (H, W), so geometric transforms move both alike
        and never interpolate the mask. ``"origin"``, ``"index"`` and
        ``"image_id"`` pass through untouched: they still name the patch as
        read from the store, before augmentation.
    seed : int, optional
        None (default): torchvision's own randomness, i.e. torch's global
        generator, which the DataLoader seeds differently in every worker and
        every epoch. An integer: the random choices depend only on (seed,
        epoch, sample index), as with :class:`lazypatch.SeededTransform`; the
        same run gives the same augmentations whatever the number of workers,
        and ``PatchSampler.set_epoch`` moves it on to the next epoch. Torch's
        global generator is left as it was.

    torchvision is imported on first use (lazypatch does not depend on it);
    without it, calling the transform raises ImportError with the install
    hint. Colour and dtype transforms (``v2.ToDtype``) touch only the image:
    masks keep their integer dtype.

    The returned sample holds plain ``torch.Tensor`` objects (``image`` and
    ``mask`` unwrapped), so the default collate and ``pin_memory`` treat it
    like any other. For 3-D patches (C, Z, Y, X) torchvision sees Z as extra
    leading dimensions: flips, crops and rotations act in-plane, on (Y, X) of
    image and mask alike.

    Example (``tests/data/test_transforms.py`` runs the same)::

        from torchvision.transforms import v2
        flip = TorchvisionTransform(v2.RandomHorizontalFlip(p=1.0))
        out = flip({"image": torch.arange(4).view(1, 1, 4), "mask": torch.tensor([[0, 0, 1, 2]]),
                    "index": 0})
        out["image"].tolist(), out["mask"].tolist()   # ([[[3, 2, 1, 0]]], [[2, 1, 0, 0]])
    """

    def __init__(self, transform, seed: int | None = None):
        if not callable(transform):
            raise ParameterTypeError(
                f"transform must be a callable torchvision.transforms.v2 transform, "
                f"got {type(transform).__name__}"
            )
        super().__init__(transform, seed=0 if seed is None else seed)
        self.seed = seed

    def __call__(self, sample: dict) -> dict:
        if not isinstance(sample, dict) or "image" not in sample or "index" not in sample:
            raise ParameterTypeError(
                f"sample must be a PatchDataset sample (a dict with 'image' and 'index'), got "
                f"{type(sample).__name__}"
            )
        tv_tensors = _tv_tensors()
        wrapped = dict(sample)  # a plain dict: torchvision walks dicts, not their subclasses
        wrapped["image"] = tv_tensors.Image(sample["image"])
        if "mask" in sample:
            wrapped["mask"] = tv_tensors.Mask(sample["mask"])
        if self.seed is None:
            out = self.fn(wrapped)
        else:
            seed = int(torch.randint(2**62, (), generator=self.generator(int(sample["index"]))))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                out = self.fn(wrapped)
        if not isinstance(out, dict) or "image" not in out:
            raise TypeError(
                f"the torchvision transform must return the sample dict it was given, "
                f"got {type(out).__name__}"
            )
        for key in ("image", "mask"):
            if key in out and isinstance(out[key], torch.Tensor):
                out[key] = out[key].as_subclass(torch.Tensor)
        return out

    def __repr__(self) -> str:
        return f"TorchvisionTransform({self.fn!r}, seed={self.seed!r})"


def _tv_tensors():
    try:
        from torchvision import tv_tensors
    except ImportError as exc:
        raise ImportError(
            "TorchvisionTransform needs torchvision >= 0.16 (transforms.v2 and tv_tensors): "
            "install the torchvision build that matches your torch, e.g. "
            "pip install torch==2.14.1 torchvision==0.29.1"
        ) from exc
    return tv_tensors
