"""Normalization applied to patches as they are read: ``PatchDataset(normalize=...)``.

The statistics come from :class:`lazypatch.stats.ChannelStats` (stored with the
store or in a sidecar); this module only applies them, on torch tensors.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError, ParameterTypeError

NORMALIZATIONS = ("zscore", "percentile")


class Normalizer:
    """What PatchDataset does to an image batch (B, C, *patch): cast, then normalize.

    ``zscore``: (x - mean) / std per channel. ``percentile``: (x - p1) / (p99 - p1)
    per channel, clipped to [0, 1]. A callable gets the cast tensor and returns
    the result. Channels with zero spread are only shifted.
    """

    def __init__(self, dtype, normalize, stats, store_dtype):
        import torch

        self.normalize = normalize
        if normalize is not None and not callable(normalize) and normalize not in NORMALIZATIONS:
            raise ParameterError(
                f"normalize must be None, one of {NORMALIZATIONS} or a callable, got {normalize!r}"
            )
        if dtype is None:
            dtype = torch.float32 if normalize is not None else None
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ParameterTypeError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
        if normalize is not None and not dtype.is_floating_point:
            raise ParameterError(f"normalize={normalize!r} needs a floating dtype, got dtype={dtype}")
        if dtype is not None and not dtype.is_floating_point and not dtype.is_complex:
            target = torch.empty(0, dtype=dtype).numpy().dtype
            if not np.can_cast(store_dtype, target, "safe"):
                raise ParameterError(
                    f"dtype={dtype} cannot hold every {np.dtype(store_dtype)} value of the store "
                    f"(the cast would wrap around); use a floating dtype such as torch.float32, or "
                    f"an integer dtype at least as wide"
                )
        self.dtype = dtype
        self.shift = self.scale = None
        self.clip = normalize == "percentile"
        if normalize in NORMALIZATIONS:
            if normalize == "zscore":
                shift, spread = stats.mean, stats.std
            else:
                shift = stats.percentile(1)
                spread = stats.percentile(99) - shift
            spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
            self.shift = np.nan_to_num(shift).astype(np.float64)
            self.scale = (1.0 / spread).astype(np.float64)
        self._tensors = None

    @property
    def active(self) -> bool:
        return self.dtype is not None

    def __call__(self, image, batched: bool):
        """A new tensor: ``image`` (B, C, *patch) if batched, else (C, *patch), cast and normalized."""
        import torch

        out = image.to(self.dtype)
        if self.shift is not None:
            if self._tensors is None:
                self._tensors = (torch.from_numpy(self.shift).to(self.dtype),
                                 torch.from_numpy(self.scale).to(self.dtype))
            shift, scale = self._tensors
            axis = 1 if batched else 0
            shape = (1,) * axis + (len(self.shift),) + (1,) * (image.dim() - axis - 1)
            out.sub_(shift.view(shape)).mul_(scale.view(shape))
            if self.clip:
                out.clamp_(0, 1)
        elif callable(self.normalize):
            out = self.normalize(out)
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tensors"] = None
        return state
