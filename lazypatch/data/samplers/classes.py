"""``ClassSampler``: patches drawn so that chosen labels appear at chosen rates.

It reads the per-block label counts of :class:`lazypatch.stats.LabelStats`.
"""

from __future__ import annotations

import numpy as np

from ...errors import ParameterError, ParameterTypeError
from ...grid import axis_tuple, ceil_div, is_int
from ...stats.labels import LabelStats
from .. import _shuffle
from .patch import PatchSampler


def _unit(tags, salt) -> np.ndarray:
    """Uniform floats in [0, 1), one per tag (53 random bits each)."""
    bits = _shuffle.mix(np.asarray(tags, np.int64).astype(np.uint64) ^ np.uint64(salt)) >> np.uint64(11)
    return bits.astype(np.float64) / float(1 << 53)


class ClassSampler(PatchSampler):
    """Patches whose centre pixel has each label with given ratios, or weighted per pixel.

    Parameters
    ----------
    dataset : PatchDataset over a store with masks
        Best with ``stride=1`` (every origin is a patch), so a patch can be
        centred on any pixel; with a coarser grid the patch is the grid patch
        that contains the chosen pixel.
    ratios : dict {label: ratio}, optional
        Probability of each label for the centre pixel (normalized), e.g.
        ``{0: 1, 1: 1}`` for half background, half foreground.
    weights : dict {label: weight}, optional
        Instead of ratios: a per-pixel weight map given by label value; the
        centre is drawn with probability proportional to its pixel's weight.
    num_samples : int
        Samples per epoch (all ranks together); required.
    stats : LabelStats, optional
        Default: ``LabelStats.open(dataset.store)``: the per-block label
        counts written with ``write_store(..., label_stats=True)`` (or
        ``lazypatch build --label-stats``), else the sidecar of
        ``lazypatch index STORE --labels``.
    seed, num_replicas, rank, drop_last
        As for :class:`PatchSampler` (draws are with replacement).

    Raises
    ------
    ParameterError, ParameterTypeError
        Both or neither of ``ratios`` and ``weights``, a malformed dict (keys
        must be integer labels, values non-negative, not all zero), no
        ``num_samples``, a store without masks, a label that no image has, or
        weights that give no pixel a positive weight.
    FileNotFoundError
        No label statistics in the store and no sidecar (the message says how
        to make them).

    Notes
    -----
    Building the sampler reads only the statistics, never pixel data; each
    draw reads one small mask block to pick the exact pixel. A drawn centre
    must leave room for the patch inside its image; when it does not, the
    draw is repeated with the label kept (so the label ratios stay exact);
    images lacking a label are skipped for it, and ``summary`` counts them.
    """

    def __init__(self, dataset, ratios=None, *, weights=None, num_samples=None, stats=None, seed: int = 0,
                 num_replicas=None, rank=None, drop_last: bool = False):
        if (ratios is None) == (weights is None):
            raise ParameterError("give exactly one of ratios= (per label) or weights= (per pixel value)")
        if num_samples is None:
            raise ParameterError(
                "num_samples is required: how many patches an epoch draws (all ranks together)"
            )
        store = dataset.store
        if not store.has_masks:
            raise ParameterError(f"ClassSampler needs a store with masks; {store.path!r} has none")
        super().__init__(dataset, shuffle=True, seed=seed, num_samples=num_samples, replacement=True,
                         num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        self.stats = stats if stats is not None else LabelStats.open(store)
        self.store = store
        self._image_filter = None
        if getattr(dataset, "image_ids", None) is not None:
            self._image_filter = np.asarray(dataset.image_ids)
        table = self._rows()
        row_images, row_blocks, row_labels, row_counts = table
        self.summary = {}
        if ratios is not None:
            mapping = self._check_mapping(ratios, "ratios")
            self.mode = "ratios"
            self._labels = np.asarray(sorted(mapping))
            probabilities = np.asarray([mapping[label] for label in self._labels], np.float64)
            self._tables = []
            for label in self._labels.tolist():
                rows = np.flatnonzero(row_labels == label)
                images_with = np.unique(row_images[rows])
                self.summary[label] = {"pixels": int(row_counts[rows].sum()), "images": len(images_with),
                                       "images_without": self._image_count() - len(images_with)}
                if len(rows) == 0:
                    raise ParameterError(f"no image has label {label}: cannot draw it (ratios={ratios})")
                self._tables.append((row_images[rows], row_blocks[rows], np.cumsum(row_counts[rows]),
                                     np.full(len(rows), label)))
            self._cumulative = np.cumsum(probabilities / probabilities.sum())
        else:
            mapping = self._check_mapping(weights, "weights")
            self.mode = "weights"
            self._weights = mapping
            weight = np.asarray([mapping.get(label, 0.0) for label in row_labels.tolist()], np.float64)
            keep = weight > 0
            keys = np.stack([row_images[keep], row_blocks[keep]], axis=1)
            unique, inverse = np.unique(keys, axis=0, return_inverse=True)
            block_weight = np.bincount(inverse.reshape(-1), weights=(weight * row_counts)[keep])
            if len(unique) == 0:
                raise ParameterError(f"no pixel has a positive weight (weights={weights})")
            self._tables = [(unique[:, 0], unique[:, 1], np.cumsum(block_weight), None)]
            self.summary = {"blocks": len(unique), "total_weight": float(block_weight.sum())}
        self.clipped = 0

    @staticmethod
    def _check_mapping(mapping, name):
        if not isinstance(mapping, dict) or not mapping:
            raise ParameterTypeError(f"{name} must be a non-empty dict {{label: value}}, got {mapping!r}")
        result = {}
        for label, value in mapping.items():
            if not is_int(label):
                raise ParameterTypeError(f"{name} keys must be integer labels, got {label!r}")
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or value < 0:
                raise ParameterError(f"{name} values must be non-negative numbers, got {value!r} for {label}")
            result[int(label)] = float(value)
        if sum(result.values()) <= 0:
            raise ParameterError(f"{name} must not all be zero, got {mapping!r}")
        return result

    def _image_count(self) -> int:
        return len(self._image_filter) if self._image_filter is not None else len(self.stats.shapes)

    def _rows(self):
        stats = self.stats
        images = stats.image_ids
        if self._image_filter is not None:
            keep = np.isin(images, self._image_filter)
            return images[keep], stats.blocks[keep], stats.labels[keep], stats.counts[keep]
        return images, stats.blocks, stats.labels, stats.counts

    # -- drawing ------------------------------------------------------------------------------------
    def indices(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64) % self.num_samples
        salt = _shuffle.key(self.seed, self.epoch)
        # the label of each draw is fixed first: redrawing a centre that leaves no room for
        # the patch must not change the label, or the ratios would drift
        if self.mode == "ratios":
            uniform = _unit(positions, _shuffle.key(salt, 7))
            which = np.minimum(np.searchsorted(self._cumulative, uniform, side="right"), len(self._tables) - 1)
        else:
            which = np.zeros(len(positions), np.int64)
        result = np.empty(len(positions), np.int64)
        pending = np.arange(len(positions))
        attempt = 0
        while pending.size:
            tag = positions[pending] * 64 + min(attempt, 63)
            image_ids, origins, valid = self._draw(tag, which[pending], _shuffle.key(salt, attempt))
            if attempt >= 63:  # no room to centre after 64 draws: clip into the image instead
                self.clipped += int((~valid).sum())
                room = np.maximum(self.store.shapes[image_ids] - np.asarray(self.dataset.patch_size), 0)
                origins = np.clip(origins, 0, room)
                valid[:] = True
            done = pending[valid]
            result[done] = self._flat(image_ids[valid], origins[valid])
            pending = pending[~valid]
            attempt += 1
        return result

    def _draw(self, tags, which, salt):
        image_ids = np.empty(len(tags), np.int64)
        centres = np.empty((len(tags), self.store.spatial_ndim), np.int64)
        for table_number in np.unique(which).tolist():
            members = np.flatnonzero(which == table_number)
            images, blocks, cumulative, labels = self._tables[table_number]
            point = _unit(tags[members], _shuffle.key(salt, 1)) * cumulative[-1]
            rows = np.minimum(np.searchsorted(cumulative, point, side="right"), len(cumulative) - 1)
            image_ids[members] = images[rows]
            centres[members] = self._pixel_in_block(images[rows], blocks[rows], labels, tags[members], salt)
        origins = centres - np.asarray(self.dataset.patch_size) // 2
        shapes = self.store.shapes[image_ids]
        valid = ((origins >= 0) & (origins + np.asarray(self.dataset.patch_size) <= shapes)).all(axis=1)
        return image_ids, origins, valid

    def _pixel_in_block(self, images, blocks, label, tags, salt):
        """One pixel per draw, uniform among the block's pixels of the label (or by weight)."""
        block = np.asarray(self.stats.block)
        nd = len(block)
        grid = ceil_div(self.store.shapes[images], block)
        coords = np.empty((len(blocks), nd), np.int64)
        rest = blocks.copy()
        for a in range(nd - 1, -1, -1):
            rest, coords[:, a] = np.divmod(rest, grid[:, a])
        starts = coords * block
        masks = self.store.read_mask_regions(images, starts, tuple(block.tolist()))
        inside = np.ones(masks.shape, bool)
        for a in range(nd):
            view = [1] * (nd + 1)
            view[a + 1] = -1
            inside &= (starts[:, a, None] + np.arange(block[a])).reshape([len(blocks)] + view[1:]) < \
                self.store.shapes[images][:, a].reshape([len(blocks)] + [1] * nd)
        flat = masks.reshape(len(blocks), -1)
        if label is not None:
            weight = ((flat == label[0]) & inside.reshape(len(blocks), -1)).astype(np.float64)
        else:
            lookup = np.vectorize(lambda v: self._weights.get(int(v), 0.0), otypes=[np.float64])
            values, inverse = np.unique(flat, return_inverse=True)
            weight = lookup(values)[inverse].reshape(flat.shape) * inside.reshape(len(blocks), -1)
        cumulative = np.cumsum(weight, axis=1)
        pick = np.argmax(cumulative > (_unit(tags, _shuffle.key(salt, 2)) * cumulative[:, -1])[:, None], axis=1)
        within = np.stack(np.unravel_index(pick, tuple(block.tolist())), axis=1)
        return starts + within

    def _flat(self, image_ids, origins) -> np.ndarray:
        index = self.dataset.index
        local = image_ids
        if self._image_filter is not None:
            position = {int(i): k for k, i in enumerate(self._image_filter.tolist())}
            local = np.asarray([position[int(i)] for i in image_ids], np.int64)
        stride = np.asarray(index.stride)
        snapped = origins // stride * stride  # the grid patch holding the pixel
        if index.edge == "shift":
            snapped = np.minimum(snapped, np.maximum(index.shapes[local] - np.asarray(index.patch_size), 0))
        return np.asarray(index.flat_index(local, snapped), dtype=np.int64)
