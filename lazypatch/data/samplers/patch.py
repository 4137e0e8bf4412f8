"""Samplers over the flat patch index: seeded, resumable, distributed, O(1) memory.

:class:`PatchSampler` yields flat patch numbers for a map-style dataset. The
order of an epoch is a pure function of ``(seed, epoch)``: rank ``r`` of ``R``
takes global positions ``r, r + R, r + 2R, ...``, so the set of patches an
epoch visits does not depend on the number of ranks, and a run can resume
mid-epoch on a different number of ranks. No list of indices is ever built:
a keyed bijection of ``[0, n)`` (``_shuffle.permute``) is evaluated chunk by
chunk.

For inference, ``by_image=True`` gives each rank whole images instead (NOTE
[whole images per rank]), so that each rank's aggregator finishes its images
and :func:`lazypatch.merge_predictions` joins the ranks' files.
"""

from __future__ import annotations

import heapq
import multiprocessing
import operator

import numpy as np
import torch
from torch.utils.data import Sampler

from .. import _shuffle
from ...grid import ceil_div, is_int
from ...errors import ParameterError, ParameterTypeError

__all__ = ["PatchSampler", "distributed_defaults"]

_CHUNK = 4096
_BALANCES = ("patch", "image")


def distributed_defaults(num_replicas=None, rank=None) -> tuple:
    """(num_replicas, rank), from torch.distributed when initialized, else (1, 0)."""
    initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialized else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialized else 0
    if not is_int(num_replicas) or num_replicas < 1:
        raise ParameterError(f"num_replicas must be a positive integer, got {num_replicas!r}")
    if not is_int(rank) or not 0 <= rank < num_replicas:
        raise ParameterError(f"rank must be an integer in [0, {num_replicas}), got {rank!r}")
    return int(num_replicas), int(rank)


def assign_images(counts, num_replicas: int) -> np.ndarray:
    """The rank of each image when whole images are spread over ranks by patch count.

    Greedy, largest image first, each onto the least-loaded rank (the lowest
    rank among equals; images of equal count in index order): deterministic,
    and no rank holds more than ``sum / R + (1 - 1 / R) * max`` patches.
    Images without a patch get ``-1``.

    >>> assign_images([5, 1, 3, 3, 0], 2).tolist()
    [0, 0, 1, 1, -1]
    """
    counts = np.asarray(counts, dtype=np.int64)
    owners = np.full(len(counts), -1, dtype=np.int64)
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    loads = [(0, rank) for rank in range(num_replicas)]  # a heap of (patches, rank)
    sizes = counts.tolist()
    for image in order.tolist():
        load, rank = loads[0]
        owners[image] = rank
        heapq.heapreplace(loads, (load + sizes[image], rank))
    return owners


def _bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class PatchSampler(Sampler):
    """Flat patch numbers in a seeded order, split across ranks.

    Parameters
    ----------
    dataset : sized (a PatchDataset, a PatchIndex, or anything with ``len``)
    shuffle : bool
        A keyed random permutation per epoch; ``False`` keeps index order.
    seed : int
    num_samples : int, optional
        Samples per epoch (all ranks together); default ``len(dataset)``.
        Without replacement and larger than the dataset, it continues into
        further permutations.
    replacement : bool
        Independent uniform draws instead of a permutation.
    num_replicas, rank : int, optional
        Defaults from ``torch.distributed`` when initialized, else 1 and 0.
    drop_last : bool
        ``False`` (default): every rank gets ``ceil(num_samples / R)`` samples,
        the stream wrapping to its start (at most ``R - 1`` repeats).
        ``True``: ``num_samples // R`` each, the tail dropped.
    balance : {"patch", "image"}
        ``"patch"``: every patch equally likely. ``"image"``: every image
        (with at least one patch) equally likely, then a patch of it; needs a
        dataset with an ``index`` (a PatchDataset) or a PatchIndex.
    by_image : bool
        Whole images per rank, for inference (NOTE [whole images per rank]):
        each rank gets its images in index order and each image's patches in
        grid order, every patch of the dataset exactly once over all ranks.
        Needs ``shuffle=False``, a dataset with an ``index`` (a PatchDataset,
        with or without a filter) or a PatchIndex or FilteredIndex, and
        leaves ``num_samples``, ``replacement``, ``drop_last`` and
        ``balance`` at their defaults. **Ranks have different lengths**:
        ``len(sampler)`` is this rank's patch count.

    Notes
    -----
    The order of an epoch is a pure function of (seed, epoch): a keyed
    bijection of ``[0, n)`` evaluated on demand (a Feistel network), O(1)
    memory whatever the number of patches. Rank r of R takes the global
    positions r, r + R, r + 2R, ... ``batches(batch_size)`` yields index
    arrays for :meth:`PatchDataset.read_batch`.
    ``set_epoch(epoch)`` changes the order (and calls ``dataset.set_epoch``
    when the dataset has one, for :class:`SeededTransform`).
    ``state_dict()`` records the global position reached; a DataLoader draws
    indices ahead of the batches it returns (``prefetch_factor`` batches per
    worker), so for an exact resume pass the number of samples this rank has
    processed: ``sampler.state_dict(consumed=steps * batch_size)``.

    NOTE [whole images per rank]: with ``by_image=True`` the images are spread
    over ranks by :func:`assign_images` (greedy by patch count, largest first,
    onto the least-loaded rank), so the ranks' lengths differ, by at most the
    largest image's patch count (every rank computes the split, in
    O(images log images): about a second per million images). They are not
    padded to one length as ``drop_last=False`` pads: a repeated patch would
    be predicted twice, and dropping one would leave an image unfinished.
    The global stream is rank 0's patches, then rank 1's, and so on
    (``indices`` takes positions in it); ``image_ids`` lists this rank's
    images, to build its :class:`~lazypatch.PatchAggregator` over exactly
    them (its ``out`` file then holds no image it did not finish). A
    collective operation inside the loop (``all_reduce`` per batch) would
    hang on unequal lengths: gather after the loop. ``state_dict`` records
    the position in this rank's stream, and resumes only on the same number
    of ranks and the same rank.

    Examples
    --------
    >>> sampler = PatchSampler(range(10), seed=1)
    >>> order = list(sampler)
    >>> sorted(order) == list(range(10)), order == list(PatchSampler(range(10), seed=1))
    (True, True)
    >>> ranks = [list(PatchSampler(range(10), seed=1, num_replicas=3, rank=r)) for r in range(3)]
    >>> [len(r) for r in ranks], sorted(set(sum(ranks, []))) == list(range(10))
    ([4, 4, 4], True)

    Whole images per rank, for inference (three images of 6, 2 and 4 patches):

    >>> from lazypatch import PatchIndex
    >>> index = PatchIndex([(4, 6), (2, 4), (4, 4)], patch_size=2)
    >>> ranks = [PatchSampler(index, shuffle=False, by_image=True, num_replicas=2, rank=r)
    ...          for r in range(2)]
    >>> [r.image_ids.tolist() for r in ranks], [list(r) for r in ranks]
    ([[0], [1, 2]], [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    """

    def __init__(self, dataset, *, shuffle: bool = True, seed: int = 0, num_samples=None,
                 replacement: bool = False, num_replicas=None, rank=None, drop_last: bool = False,
                 balance: str = "patch", by_image: bool = False):
        self.dataset = dataset
        self.size = len(dataset)
        if self.size < 1:
            raise ParameterError("the dataset is empty: nothing to sample")
        if not is_int(seed):
            raise ParameterTypeError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.shuffle = _bool(shuffle, "shuffle")
        self.replacement = _bool(replacement, "replacement")
        self.drop_last = _bool(drop_last, "drop_last")
        if num_samples is None:
            num_samples = self.size
        if not is_int(num_samples) or num_samples < 1:
            raise ParameterError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples = int(num_samples)
        if balance not in _BALANCES:
            raise ParameterError(f"balance must be one of {_BALANCES}, got {balance!r}")
        self.balance = balance
        if balance == "image":
            index = getattr(dataset, "index", dataset)
            if not hasattr(index, "offsets"):
                raise ParameterTypeError("balance='image' needs a PatchDataset or a PatchIndex")
            counts = index.counts
            self._images = np.flatnonzero(counts > 0)  # O(images): which images have patches
            self._starts = (index.offsets - counts)[self._images]
            self._counts = counts[self._images]
        self.num_replicas, self.rank = distributed_defaults(num_replicas, rank)
        self.by_image = _bool(by_image, "by_image")
        self.image_ids = None  # with by_image: this rank's images
        if self.by_image:
            self._spread_images()
        if self.drop_last and self.num_samples < self.num_replicas:
            raise ParameterError(
                f"drop_last=True with {self.num_samples} samples for {self.num_replicas} ranks "
                "leaves every rank empty"
            )
        self.epoch = 0
        self._start = 0  # global position this epoch's iteration starts from (by_image: in this rank's part)
        self._progress = (0, None, 0)  # (samples before the current chunk, its iterator, its size)

    def _spread_images(self) -> None:
        """Whole images onto ranks (NOTE [whole images per rank]): O(images) tables."""
        conflicts = [f"{name}={value!r}" for name, value, default in (
            ("shuffle", self.shuffle, False), ("num_samples", self.num_samples, self.size),
            ("replacement", self.replacement, False), ("drop_last", self.drop_last, False),
            ("balance", self.balance, "patch")) if value != default]
        if conflicts:
            raise ParameterError(
                "by_image=True gives each rank whole images in grid order, every patch once; it "
                f"cannot be combined with {', '.join(conflicts)}: pass shuffle=False and leave "
                "replacement, drop_last and balance at their defaults and num_samples at "
                f"len(dataset) = {self.size}")
        index = getattr(self.dataset, "index", self.dataset)
        if not hasattr(index, "offsets") or not hasattr(index, "counts"):
            raise ParameterTypeError("by_image=True needs a PatchDataset, a PatchIndex or a FilteredIndex "
                                     f"(images to keep whole), got {type(self.dataset).__name__}")
        counts = np.asarray(index.counts, dtype=np.int64)
        owners = assign_images(counts, self.num_replicas)
        order = np.argsort(owners, kind="stable")  # rank by rank, images in index order
        order = order[owners[order] >= 0]
        self._span_counts = counts[order]  # the stream's images, one span of patches each
        self._span_starts = (np.asarray(index.offsets, dtype=np.int64) - counts)[order]
        self._span_ends = np.cumsum(self._span_counts)  # global stream position after each image
        loads = np.bincount(owners[order], weights=self._span_counts, minlength=self.num_replicas)
        self._rank_starts = np.concatenate([[0], np.cumsum(loads.astype(np.int64))])
        mine = order[owners[order] == self.rank]
        local_ids = getattr(self.dataset, "image_ids", None)  # a PatchDataset over some images
        self.image_ids = mine if local_ids is None else np.asarray(local_ids, dtype=np.int64)[mine]
        self.image_ids.flags.writeable = False

    # -- sizes ----------------------------------------------------------------------------
    def _per_rank(self, start: int = 0) -> int:
        if self.by_image:
            return max(int(self._rank_starts[self.rank + 1] - self._rank_starts[self.rank]) - start, 0)
        remaining = self.num_samples - start
        if self.drop_last:
            return max(remaining // self.num_replicas, 0)
        return ceil_div(remaining, self.num_replicas)

    def __len__(self) -> int:
        return self._per_rank(self._start)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of an epoch (and reset any resumed position)."""
        if not is_int(epoch) or epoch < 0:
            raise ParameterError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)
        self._start = 0
        self._progress = (0, None, 0)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)

    # -- the global stream ------------------------------------------------------------------
    def indices(self, positions) -> np.ndarray:
        """Flat patch numbers at global positions of this epoch's stream (vectorized).

        With ``by_image``, the stream is rank 0's patches, then rank 1's...
        """
        if self.by_image:
            positions = np.asarray(positions, dtype=np.int64) % self.num_samples
            span = np.searchsorted(self._span_ends, positions, side="right")
            return self._span_starts[span] + positions - (self._span_ends[span] - self._span_counts[span])
        positions = np.asarray(positions, dtype=np.int64) % self.num_samples
        salt = _shuffle.key(self.seed, self.epoch)
        if self.balance == "image":
            return self._image_balanced(positions, salt)
        if not self.shuffle:
            return positions % self.size
        if self.replacement:
            return _shuffle.uniform(positions, self.size, salt)
        lap = positions // self.size  # each pass over the data has its own permutation
        return _shuffle.permute(positions % self.size, self.size, salt, tweak=lap)

    def _image_balanced(self, positions, salt) -> np.ndarray:
        images = len(self._images)
        if self.replacement:
            which = _shuffle.uniform(positions, images, _shuffle.key(salt, 1))
            within = _shuffle.uniform(positions, self._counts[which], _shuffle.key(salt, 2))
            return self._starts[which] + within
        lap, slot = np.divmod(positions, images)
        which = _shuffle.permute(slot, images, _shuffle.key(salt, 3), tweak=lap) if self.shuffle else slot
        counts = self._counts[which]
        step = lap % counts  # the lap-th patch of the image, wrapping for small images
        if self.shuffle:  # each image's patches in an order of their own
            step = _shuffle.permute(step, counts, _shuffle.key(salt, 4), tweak=self._images[which])
        return self._starts[which] + step

    # -- iteration ----------------------------------------------------------------------------
    def positions(self, start: int | None = None) -> range:
        """Global positions this rank visits, from ``start`` (default: where it resumes)."""
        start = self._start if start is None else start
        if self.by_image:  # this rank's own part of the stream (start counts from its beginning)
            first = int(self._rank_starts[self.rank])
            return range(first + start, first + start + self._per_rank(start))
        return range(start + self.rank, start + self.rank + self._per_rank(start) * self.num_replicas,
                     self.num_replicas)

    @property
    def _yielded(self) -> int:
        """Samples this rank has handed out since the epoch (or the resume) began."""
        before, iterator, size = self._progress
        return before if iterator is None else before + size - operator.length_hint(iterator)

    def __iter__(self):
        positions = self.positions()
        self._progress = (0, None, 0)
        for begin in range(0, len(positions), _CHUNK):
            values = self.indices(np.asarray(positions[begin:begin + _CHUNK], dtype=np.int64)).tolist()
            iterator = iter(values)
            self._progress = (begin, iterator, len(values))
            yield from iterator  # no Python work per index
        self._progress = (len(positions), None, 0)

    def batches(self, batch_size: int, drop_last: bool = False):
        """This rank's samples as int64 arrays of ``batch_size`` (for ``read_batch``)."""
        if not is_int(batch_size) or batch_size < 1:
            raise ParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
        positions = self.positions()
        self._progress = (0, None, 0)
        done = 0
        step = max(_CHUNK // batch_size, 1) * batch_size  # draw several batches at once
        for begin in range(0, len(positions), step):
            drawn = self.indices(np.asarray(positions[begin:begin + step], dtype=np.int64))
            for first in range(0, len(drawn), batch_size):
                batch = drawn[first:first + batch_size]
                if drop_last and len(batch) < batch_size:
                    return
                done += len(batch)
                self._progress = (done, None, 0)
                yield batch

    # -- resuming -----------------------------------------------------------------------------
    def state_dict(self, consumed: int | None = None) -> dict:
        """Where the stream stands: seed, epoch and the global position reached.

        ``consumed``: samples this rank has processed since the epoch (or the
        resume) began; default, the samples it has yielded.
        """
        done = self._yielded if consumed is None else consumed
        if not is_int(done) or done < 0:
            raise ParameterError(f"consumed must be a non-negative integer, got {consumed!r}")
        if self.by_image:  # a position in this rank's stream (NOTE [whole images per rank])
            return {"seed": self.seed, "epoch": self.epoch, "num_samples": self.num_samples,
                    "shuffle": self.shuffle, "by_image": True, "num_replicas": self.num_replicas,
                    "rank": self.rank, "position": self._start + min(int(done), len(self))}
        return {"seed": self.seed, "epoch": self.epoch, "num_samples": self.num_samples,
                "shuffle": self.shuffle, "replacement": self.replacement, "balance": self.balance,
                "position": min(self._start + int(done) * self.num_replicas, self.num_samples)}

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` stopped (the number of ranks may differ)."""
        if not isinstance(state, dict) or not is_int(state.get("epoch")):
            raise ParameterTypeError(
                f"state must be a dict from PatchSampler.state_dict() with an integer 'epoch', got "
                f"{state!r:.200}"
            )
        keys = ("seed", "num_samples", "shuffle", "replacement", "balance")
        if self.by_image or state.get("by_image", False):  # one rank's position: the same split only
            keys += ("by_image", "num_replicas", "rank")
        for key in keys:
            if (key in state or key == "by_image") and state.get(key, False) != getattr(self, key):
                raise ParameterError(
                    f"state_dict was made with {key}={state.get(key, False)!r}, this sampler has "
                    f"{key}={getattr(self, key)!r}"
                    + (" (whole images per rank resume on the same ranks)" if self.by_image else "")
                )
        position = state.get("position", 0)
        bound = self._per_rank() if self.by_image else self.num_samples
        if not is_int(position) or not 0 <= position <= bound:
            raise ParameterError(f"state_dict position must be in [0, {bound}], got {position!r}")
        self.set_epoch(state["epoch"])
        self._start = int(position)


