"""Per-channel statistics of a store, for the normalizations PatchDataset applies.

``ChannelStats`` is accumulated band by band while a store is written
(``write_store(..., channel_stats=True)``, ``lazypatch build --stats``) or
afterwards from a finished store (``lazypatch index STORE --stats``, into a
sidecar). Integer images of at most 16 bits keep an exact histogram per
channel, so their percentiles are exact; other dtypes keep exact count, sum,
sum of squares, minimum and maximum, and a deterministic subsample (every
k-th pixel, at most 2^20 per channel) for percentiles. NaN pixels are left out.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ParameterError, ParameterTypeError, StoreFormatError
from ..grid import ceil_div

from ..store import ImageStore, sidecar
from ..store import format as fmt

__all__ = ["ChannelStats"]

GROUP = fmt.G_CHANNEL_STATS  # the old name
_SAMPLE_PER_IMAGE = 1 << 14
_SAMPLE_MAX = 1 << 20


class ChannelStats:
    """Count, sum, sum of squares, min, max and a histogram or sample, per channel.

    Attributes
    ----------
    count : int
        Pixels counted per channel (NaN excluded, per channel).
    mean, std : float64 (C,)
    minimum, maximum : float64 (C,)
        Also as ``min`` and ``max``; ``percentile(q)`` gives any percentile.

    Notes
    -----
    Made while writing (``write_store(..., channel_stats=True)``, ``lazypatch
    build --stats``) or for an existing store (``lazypatch index STORE
    --stats``, a sidecar); :meth:`open` finds either, merging the shards of a
    sharded store. Exact for integer images of at most 16 bits (a histogram
    per channel); other dtypes keep exact moments and extremes and take
    percentiles from a deterministic subsample of at most 2**20 pixels per
    channel. ``PatchDataset(normalize=...)`` uses them.
    """

    def __init__(self, channels: int, dtype, count=None, sums=None, sumsq=None, minimum=None,
                 maximum=None, hist=None, sample=None):
        self.channels = int(channels)
        self.dtype = np.dtype(dtype)
        self.exact = self.dtype.kind in "biu" and self.dtype.itemsize <= 2
        c = self.channels
        self.count = np.zeros(c, np.int64) if count is None else np.asarray(count, np.int64)
        self.sums = np.zeros(c) if sums is None else np.asarray(sums, np.float64)
        self.sumsq = np.zeros(c) if sumsq is None else np.asarray(sumsq, np.float64)
        self.minimum = np.full(c, np.inf) if minimum is None else np.asarray(minimum, np.float64)
        self.maximum = np.full(c, -np.inf) if maximum is None else np.asarray(maximum, np.float64)
        if self.exact:
            bins = 1 << (8 * self.dtype.itemsize)
            self.hist = np.zeros((c, bins), np.int64) if hist is None else np.asarray(hist, np.int64)
            self._parts = None
        else:
            self.hist = None
            self._parts = [] if sample is None else [np.asarray(sample, np.float64)]
        if self.count.shape != (c,) or (self.exact and self.hist.shape[0] != c):
            raise StoreFormatError(f"channel statistics for {c} channels have inconsistent shapes")

    # -- accumulating ---------------------------------------------------------------
    def add(self, band: np.ndarray) -> None:
        """Count a band of one image, channels last (..., C) (or no channel axis)."""
        values = np.asarray(band).reshape(-1, self.channels)
        if self.exact:
            offset = -int(np.iinfo(self.dtype).min) if self.dtype.kind == "i" else 0
            bins = self.hist.shape[1]
            for c in range(self.channels):
                column = values[:, c].astype(np.int64) + offset if offset or self.dtype.kind == "b" \
                    else values[:, c]
                self.hist[c] += np.bincount(column, minlength=bins)
            return
        finite = ~np.isnan(values) if values.dtype.kind == "f" else None
        for c in range(self.channels):
            column = values[:, c] if finite is None else values[finite[:, c], c]
            if column.size == 0:
                continue
            column64 = column.astype(np.float64)
            self.count[c] += column.size
            self.sums[c] += column64.sum()
            self.sumsq[c] += np.square(column64).sum()
            self.minimum[c] = min(self.minimum[c], float(column.min()))
            self.maximum[c] = max(self.maximum[c], float(column.max()))
        step = max(1, len(values) // _SAMPLE_PER_IMAGE)
        self._parts.append(values[::step].astype(np.float64).T)

    def merge(self, other: "ChannelStats") -> "ChannelStats":
        """These statistics and another's, as if counted together (shards)."""
        if (other.channels, other.dtype) != (self.channels, self.dtype):
            raise StoreFormatError("channel statistics of different channels or dtypes cannot merge")
        if self.exact:
            return ChannelStats(self.channels, self.dtype, hist=self.hist + other.hist)
        return ChannelStats(self.channels, self.dtype, self.count + other.count, self.sums + other.sums,
                            self.sumsq + other.sumsq, np.minimum(self.minimum, other.minimum),
                            np.maximum(self.maximum, other.maximum),
                            sample=np.concatenate([self.sample, other.sample], axis=1))

    # -- results ---------------------------------------------------------------------
    def _values(self) -> np.ndarray:
        offset = -int(np.iinfo(self.dtype).min) if self.dtype.kind == "i" else 0
        return np.arange(self.hist.shape[1], dtype=np.float64) - offset

    @property
    def sample(self) -> np.ndarray:
        """The subsample (C, k) used for percentiles of non-exact dtypes."""
        if self.exact:
            raise AttributeError("exact statistics keep a histogram, not a sample")
        parts = [p for p in self._parts if p.size]
        sample = np.concatenate(parts, axis=1) if parts else np.zeros((self.channels, 0))
        if sample.shape[1] > _SAMPLE_MAX:
            sample = sample[:, :: ceil_div(sample.shape[1], _SAMPLE_MAX)]
        self._parts = [sample]
        return sample

    def _moments(self):
        if self.exact:
            values = self._values()
            count = self.hist.sum(axis=1)
            return count, self.hist @ values, self.hist @ np.square(values)
        return self.count, self.sums, self.sumsq

    @property
    def total(self) -> np.ndarray:
        return self._moments()[0]

    @property
    def mean(self) -> np.ndarray:
        count, sums, _ = self._moments()
        return sums / np.maximum(count, 1)

    @property
    def std(self) -> np.ndarray:
        count, sums, sumsq = self._moments()
        mean = sums / np.maximum(count, 1)
        return np.sqrt(np.maximum(sumsq / np.maximum(count, 1) - np.square(mean), 0.0))

    @property
    def min(self) -> np.ndarray:
        if self.exact:
            return np.array([self._values()[np.flatnonzero(h)[0]] if h.any() else np.nan for h in self.hist])
        return self.minimum

    @property
    def max(self) -> np.ndarray:
        if self.exact:
            return np.array([self._values()[np.flatnonzero(h)[-1]] if h.any() else np.nan for h in self.hist])
        return self.maximum

    def percentile(self, q) -> np.ndarray:
        """The q-th percentile (0..100) of each channel: exact from the histogram, else
        from the subsample (``numpy.percentile``'s linear interpolation)."""
        q = float(q)
        if not 0 <= q <= 100:
            raise ParameterError(f"q must be within [0, 100], got {q!r}")
        if not self.exact:
            sample = self.sample
            result = np.full(self.channels, np.nan)
            for c in range(self.channels):
                finite = sample[c][~np.isnan(sample[c])]
                if finite.size:
                    result[c] = np.percentile(finite, q)
            return result
        values, result = self._values(), []
        for h in self.hist:
            total = int(h.sum())
            if total == 0:
                result.append(np.nan)
                continue
            # numpy's "linear" method over the sorted pixels, from the cumulative histogram
            position = q / 100 * (total - 1)
            cumulative = np.cumsum(h)
            lo = values[np.searchsorted(cumulative, int(np.floor(position)), side="right")]
            hi = values[np.searchsorted(cumulative, int(np.ceil(position)), side="right")]
            result.append(lo + (hi - lo) * (position - np.floor(position)))
        return np.asarray(result)

    def summary(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "min": self.min.tolist(),
                "max": self.max.tolist(), "p1": self.percentile(1).tolist(),
                "p99": self.percentile(99).tolist()}

    def __repr__(self) -> str:
        return (f"ChannelStats({self.channels} channels of {self.dtype}, mean "
                f"{np.round(self.mean, 3).tolist()}, std {np.round(self.std, 3).tolist()})")

    # -- storing ---------------------------------------------------------------------
    def arrays(self) -> dict:
        if self.exact:
            return {"hist": self.hist}
        return {"count": self.count, "sum": self.sums, "sumsq": self.sumsq, "min": self.minimum,
                "max": self.maximum, "sample": self.sample}

    def write_group(self, h5) -> None:
        group = h5.create_group(fmt.G_CHANNEL_STATS)
        group.attrs["dtype"] = fmt.attribute(self.dtype.str)
        for name, array in self.arrays().items():
            fmt.write_dataset(group, name, array, checksum=True)

    @classmethod
    def from_group(cls, group, channels: int, dtype, path: str) -> "ChannelStats":
        with fmt.damage_is_format_error(path, "the channel statistics"):
            found = fmt.text_attribute(group.attrs.get("dtype"))
            if found != np.dtype(dtype).str:
                raise StoreFormatError(f"{path!r}: channel statistics are for {found}, the store is {dtype}")
            arrays = {name: fmt.read_checked(group[name], path) for name in group}
        if "hist" in arrays:
            return cls(channels, dtype, hist=arrays["hist"])
        return cls(channels, dtype, arrays.get("count"), arrays.get("sum"), arrays.get("sumsq"),
                   arrays.get("min"), arrays.get("max"), sample=arrays.get("sample"))

    @classmethod
    def compute(cls, store, progress=None) -> "ChannelStats":
        """Count every image of a store (band by band: bounded memory)."""
        stats = cls(store.channels, store.dtype)
        for image_id in range(len(store)):
            shape = tuple(int(v) for v in store.shapes[image_id])
            row = int(np.prod(shape[1:])) * store.channels * store.dtype.itemsize
            rows = max(1, (16 << 20) // max(row, 1))
            for r0 in range(0, shape[0], rows):
                r1 = min(r0 + rows, shape[0])
                origin, size = (r0,) + (0,) * (len(shape) - 1), (r1 - r0,) + shape[1:]
                stats.add(store.read_region(image_id, origin, size))
        return stats

    def write_sidecar(self, store, path=None) -> str:
        path = os.fspath(path) if path is not None else default_path(store)
        return sidecar.write(path, "channel_stats", store, self.arrays(), {"dtype": self.dtype.str})

    @classmethod
    def open(cls, store, path=None) -> "ChannelStats":
        """The statistics written into the store (every shard), else those of its sidecar."""
        store = store if isinstance(store, ImageStore) else ImageStore(store)
        if path is None:
            groups = [group for group in store.groups(fmt.G_CHANNEL_STATS)]
            if all(group is not None for group in groups):
                merged = None
                for group, shard in zip(groups, store.paths):
                    stats = cls.from_group(group, store.channels, store.dtype, shard)
                    merged = stats if merged is None else merged.merge(stats)
                return merged
        path = os.fspath(path) if path is not None else default_path(store)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"no channel statistics for {store.path!r}: write the store with "
                f"channel_stats=True (lazypatch build --stats), or run `lazypatch index "
                f"{store.path} --stats` (looked for {path!r})"
            )
        with sidecar.open_checked(path, "channel_stats", store) as f:
            return cls.from_group(f, store.channels, store.dtype, path)


def default_path(store) -> str:
    return f"{store.path}.stats.h5"


# -- normalization --------------------------------------------------------------------------

