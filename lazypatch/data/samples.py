"""From a batch to samples and back: ``PatchSample``, the sample list, ``collate``.

torch's DataLoader calls ``dataset.__getitems__(indices)`` and hands the list
of samples to ``collate_fn``. Making 256 dicts of tensor views costs more than
reading the patches (about 1.5 us a sample: each tensor view is ~0.6 us), and
``default_collate`` would then copy them back into one batch.

NOTE [lazy samples]: ``__getitems__`` returns a :class:`SampleList`, a real
``list`` subclass whose samples are made on first access (indexing,
iteration, comparison, repr, copying, pickling and mutation all see the
samples). Collating a list whose samples were not changed returns the batch
they view, without a copy; ``default_collate`` dispatches :class:`PatchSample`
to :func:`collate` through torch's ``default_collate_fn_map`` (the extension
point torch documents), so ``DataLoader(ds, batch_size=B)`` gets that too.
C code reading list slots directly (``PySequence_Fast``, ``list + SampleList``)
would see unmade slots as ``None``; call ``list(samples)`` first there.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import default_collate

from ..grid import is_int
from . import _shared

__all__ = ["PatchSample", "SampleList", "collate", "make_samples"]

_KEYS = ("image", "image_id", "origin", "index", "mask")


class PatchSample(dict):
    """One sample: a plain dict, of a type torch's ``default_collate`` can recognize."""

    __slots__ = ()


def make_samples(batch: dict) -> list:
    """Every sample of a batch: dicts whose tensors are views of the batch's tensors."""
    columns = [batch["image"].unbind(0), batch["image_id"].tolist(), batch["origin"].unbind(0),
               batch["index"].tolist()]
    if "mask" in batch:
        columns.append(batch["mask"].unbind(0))
        return [PatchSample(image=im, image_id=i, origin=o, index=j, mask=m)
                for im, i, o, j, m in zip(*columns)]
    return [PatchSample(image=im, image_id=i, origin=o, index=j) for im, i, o, j in zip(*columns)]


def _make_one(batch: dict, position: int) -> PatchSample:
    sample = PatchSample(image=batch["image"][position], image_id=int(batch["image_id"][position]),
                         origin=batch["origin"][position], index=int(batch["index"][position]))
    if "mask" in batch:
        sample["mask"] = batch["mask"][position]
    return sample


def _filled(method):
    def wrapper(self, *args, **kwargs):
        self.fill()
        return getattr(list, method)(self, *args, **kwargs)

    wrapper.__name__ = method
    return wrapper


def _changing(method):
    def wrapper(self, *args, **kwargs):
        self.fill()
        self._changed = True
        return getattr(list, method)(self, *args, **kwargs)

    wrapper.__name__ = method
    return wrapper


class SampleList(list):
    """The samples of one batch, each made on first access (see NOTE [lazy samples])."""

    __slots__ = ("_batch", "_made", "_changed", "_complete")

    def __init__(self, batch: dict):
        list.__init__(self, [None] * len(batch["index"]))
        self._batch = batch
        self._made = {}  # position -> the tensors and index it was made with
        self._changed = False
        self._complete = False

    # making samples ----------------------------------------------------------------------
    def _remember(self, position: int, sample: PatchSample) -> None:
        self._made[position] = (sample, tuple(sample[key] for key in _KEYS if key in sample))

    def fill(self) -> "SampleList":
        """Make every sample not made yet."""
        if not self._complete:
            self._complete = True
            everything = make_samples(self._batch)
            for position, sample in enumerate(everything):
                if position not in self._made:
                    list.__setitem__(self, position, sample)
                    self._remember(position, sample)
        return self

    def _get(self, position: int):
        sample = list.__getitem__(self, position)
        if not self._complete and position not in self._made:
            sample = _make_one(self._batch, position)
            list.__setitem__(self, position, sample)
            self._remember(position, sample)
        return sample

    def __getitem__(self, key):
        if isinstance(key, slice):
            self.fill()
            return list.__getitem__(self, key)
        position = key.__index__()
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError("list index out of range")
        return self._get(position)

    def __iter__(self):
        return list.__iter__(self.fill())

    def __reversed__(self):
        return list.__reversed__(self.fill())

    def __repr__(self):
        return list.__repr__(self.fill())

    def __eq__(self, other):
        if isinstance(other, SampleList):
            other.fill()
        return list.__eq__(self.fill(), other)

    def __ne__(self, other):
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None
    __contains__ = _filled("__contains__")
    __add__ = _filled("__add__")
    __mul__ = _filled("__mul__")
    __rmul__ = _filled("__rmul__")
    __lt__ = _filled("__lt__")
    __le__ = _filled("__le__")
    __gt__ = _filled("__gt__")
    __ge__ = _filled("__ge__")
    index = _filled("index")
    count = _filled("count")
    copy = _filled("copy")
    __setitem__ = _changing("__setitem__")
    __delitem__ = _changing("__delitem__")
    __iadd__ = _changing("__iadd__")
    __imul__ = _changing("__imul__")
    append = _changing("append")
    extend = _changing("extend")
    insert = _changing("insert")
    pop = _changing("pop")
    remove = _changing("remove")
    sort = _changing("sort")
    reverse = _changing("reverse")
    clear = _changing("clear")

    def __copy__(self):
        return list(self.fill())

    def __deepcopy__(self, memo):
        import copy

        return copy.deepcopy(list(self.fill()), memo)

    def __reduce_ex__(self, protocol):
        return (list, (list(self.fill()),))

    # back to a batch ------------------------------------------------------------------------
    def untouched(self) -> bool:
        """Whether every made sample still holds exactly what it was made with."""
        if self._changed or len(self) != len(self._batch["index"]):
            return False
        for position, (sample, values) in self._made.items():
            current = list.__getitem__(self, position)
            if current is not sample or type(sample) is not PatchSample or len(sample) != len(values):
                return False
            keys = [key for key in _KEYS if key in sample]
            if len(keys) != len(sample):
                return False
            for key, value in zip(keys, values):
                now = sample[key]
                if now is not value and not (is_int(now) and is_int(value) and now == value
                                             and key in ("image_id", "index")):
                    return False
        return True


def _stack_views(tensors):
    """Stack tensors; free when they are consecutive views of one buffer."""
    first = tensors[0]
    count = len(tensors)
    if count > 1 and first.is_contiguous():
        step = first.numel() * first.element_size()
        start = first.data_ptr()
        storage = first.untyped_storage()
        layout = (first.shape, first.stride(), first.dtype)
        if (
            start - storage.data_ptr() + count * step <= storage.nbytes()
            and [t.data_ptr() for t in tensors] == list(range(start, start + count * step, step))
            and all((t.shape, t.stride(), t.dtype) == layout for t in tensors)
        ):
            # every tensor sits where a view of this storage would: the batch *is* that view
            return first.as_strided((count,) + tuple(first.shape),
                                    (first.numel(),) + tuple(first.stride()))
    return torch.stack(tensors)


def collate(samples, *, collate_fn_map=None):
    """A ``collate_fn`` for PatchDataset samples: torch's default, minus the copy.

    The samples of :meth:`PatchDataset.__getitems__` are views of one batch,
    which is returned as is when they were not changed; other dicts of
    tensors are re-batched as a view when their tensors are consecutive views
    of one buffer, else stacked. Anything else goes to ``default_collate``.
    """
    arena = _shared.worker_arena()  # in a DataLoader worker (NOTE [worker batches])
    if isinstance(samples, SampleList) and samples.untouched():
        batch = dict(samples._batch)
        return batch if arena is None else arena.pack(batch, arena.lease_of(batch.get("image")))
    if not len(samples) or not isinstance(samples[0], dict):
        return default_collate(samples)
    samples = list(samples)
    if arena is not None:
        return _collate_into_slot(arena, samples)
    batch = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        if torch.is_tensor(values[0]):
            batch[key] = _stack_views(values)
        elif all(is_int(v) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[key] = default_collate(values)
    return batch


def _collate_into_slot(arena, samples: list) -> dict:
    """Samples of equal keys stacked straight into a worker's slot, then handed over."""
    count, first = len(samples), samples[0]
    columns = {key: [sample[key] for sample in samples] for key in first}
    plan, nbytes = {}, 512
    for key, values in columns.items():
        head = values[0]
        if torch.is_tensor(head) and all(torch.is_tensor(v) and v.shape == head.shape and v.dtype == head.dtype
                                         and v.device.type == "cpu" for v in values):
            plan[key] = ((count,) + tuple(head.shape), head.dtype)
        elif all(is_int(v) for v in values):
            plan[key] = ((count,), torch.int64)
        else:
            continue
        nbytes += math.prod(plan[key][0]) * torch.empty((), dtype=plan[key][1]).element_size() + 64
    lease = arena.lease(nbytes)
    batch = {}
    for key, values in columns.items():
        if key not in plan:
            batch[key] = default_collate(values)
            continue
        shape, dtype = plan[key]
        out = torch.from_numpy(lease.take(shape, torch.empty((), dtype=dtype).numpy().dtype))
        if dtype == torch.int64 and not torch.is_tensor(values[0]):
            out.copy_(torch.tensor(values, dtype=torch.int64))
        else:
            torch.stack(values, out=out)
        batch[key] = out
    return arena.pack(batch, lease)


def _register() -> None:
    # torch's documented extension point of default_collate (its docstring shows
    # ``default_collate_fn_map`` being extended) has no public import path
    try:
        from torch.utils.data._utils.collate import default_collate_fn_map
    except ImportError:  # pragma: no cover - a torch without the extension point
        return
    default_collate_fn_map.setdefault(PatchSample, collate)


_register()
