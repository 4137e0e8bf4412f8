"""The patch index: flat patch numbers <-> (image, origin). numpy only.

Who uses it: ``lazypatch.data`` (datasets and samplers locate patches through
it), ``lazypatch.stats`` (foreground filters build a :class:`FilteredIndex`)
and ``lazypatch.inference`` (the aggregator maps patches back to images).
Nothing here imports torch or h5py.

- :class:`PatchIndex`: the grid of every image, a cumulative sum and a search
  (:class:`ImageSearch`, see NOTE [bucket search]); O(images) memory.
- :class:`FilteredIndex`: the patches of a base index kept by a bitmap.
- :class:`Index`: the protocol both implement, which the dataset and the
  samplers rely on.
"""

from .. import _compat
from ._filtered import FilteredIndex
from ._patch_index import PatchIndex, as_int_array
from ._protocol import Index
from ._search import ImageSearch

__all__ = ["FilteredIndex", "ImageSearch", "Index", "PatchIndex", "as_int_array"]


def __getattr__(name):  # names of lazypatch 0.1's index module
    return _compat.moved(__name__, name)
