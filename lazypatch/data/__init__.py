"""The torch layer: datasets, samples and collation, normalization, augmentation, samplers.

Who uses it: training code, through ``torch.utils.data.DataLoader``.

- :mod:`.dataset`: :class:`PatchDataset`, a map-style dataset with a batched
  path (``__getitems__``, ``read_batch``).
- :mod:`.samples`: samples as dicts, and :func:`collate`.
- :mod:`.normalize`: normalization from stored channel statistics.
- :mod:`.transforms`: :class:`SeededTransform`, :class:`TorchvisionTransform`.
- :mod:`.samplers`: :class:`PatchSampler`, :class:`ClassSampler`.
"""

from .dataset import PatchDataset
from .samples import collate
from .samplers import ClassSampler, PatchSampler
from .transforms import SeededTransform, TorchvisionTransform

__all__ = ["ClassSampler", "PatchDataset", "PatchSampler", "SeededTransform", "TorchvisionTransform",
           "collate"]
