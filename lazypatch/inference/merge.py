"""Predictions made on several ranks joined into one predictions file.

With ``PatchSampler(dataset, shuffle=False, by_image=True)`` each rank of a
distributed inference gets whole images and its
``PatchAggregator(out=...)`` writes the images it finished;
:func:`merge_predictions` presents those files as one, the file a single
process would have written: every prediction dataset copied as stored (its
values, dtype, layout and every attribute, ``image_id``, ``name`` and
``geometry`` included, whatever their form), the ``image_ids`` and ``names``
tables rebuilt over all images in image id order, and the file's attributes
(the grid: ``patch_size``, ``stride``, ``edge``, ``mode``) taken from the
inputs, which must agree. The output is written atomically (NOTE [atomic
write] in :mod:`lazypatch.store.publish`).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ParameterError, ParameterTypeError, StoreExistsError, StoreFormatError
from ..store import format as fmt
from ..store.publish import publish_h5, temporary_path

__all__ = ["merge_predictions"]

_GRID = ("patch_size", "stride", "edge", "mode")  # file attributes every input must share
_MARK = "lazypatch_predictions"


def _text(value):
    value = fmt.text_attribute(value)
    return value.tolist() if isinstance(value, np.ndarray) else value


class _Input:
    """One rank's predictions file, open and checked: its images without their arrays."""

    def __init__(self, path: str):
        import h5py

        self.path = path
        if not h5py.is_hdf5(path):
            raise StoreFormatError(f"{path!r} is not a predictions file of PatchAggregator(out=...) "
                                   "(not an HDF5 file)")
        with fmt.damage_is_format_error(path, "the predictions file"):
            self.h5 = h5py.File(path, "r")
        try:
            with fmt.damage_is_format_error(path, "the predictions"):
                self._read()
        except BaseException:
            self.h5.close()
            raise

    def _read(self) -> None:
        import h5py

        h5, path = self.h5, self.path
        if _MARK not in h5.attrs or not isinstance(h5.get("predictions"), h5py.Group):
            raise StoreFormatError(f"{path!r} is not a predictions file of PatchAggregator(out=...) "
                                   f"(no {_MARK!r} attribute or 'predictions' group)")
        self.attrs = {key: h5.attrs[key] for key in h5.attrs}
        # the images the aggregator was built over (listed even when they received no patch)
        self.names = {}
        if "image_ids" in h5:
            image_ids = np.asarray(h5["image_ids"][()])
            if image_ids.ndim != 1 or image_ids.dtype.kind not in "iu":
                raise StoreFormatError(f"{path!r}: table 'image_ids' must be 1-D integers, got "
                                       f"{image_ids.dtype} {image_ids.shape}")
            names = fmt.read_texts(h5, fmt.D_NAMES, path) if fmt.D_NAMES in h5 else [str(i) for i in image_ids]
            if len(names) != len(image_ids):
                raise StoreFormatError(f"{path!r}: {len(names)} names for {len(image_ids)} image_ids")
            self.names = dict(zip(image_ids.tolist(), names))
        self.predictions = {}  # key -> (image id or None, name)
        for key, dataset in h5["predictions"].items():
            if not isinstance(dataset, h5py.Dataset) or dataset.ndim < 3 or dataset.dtype.kind != "f":
                raise StoreFormatError(
                    f"{path!r}: prediction {key!r} is not a float dataset of shape (channels, *spatial) "
                    f"({dataset.dtype} {dataset.shape})" if isinstance(dataset, h5py.Dataset) else
                    f"{path!r}: prediction {key!r} is a group, not a dataset")
            image_id = dataset.attrs.get("image_id", int(key) if key.isdigit() else None)
            if image_id is not None:
                if isinstance(image_id, (bool, np.bool_)) or not isinstance(image_id, (int, np.integer)):
                    raise StoreFormatError(f"{path!r}: prediction {key!r} has image_id "
                                           f"{np.asarray(image_id).tolist()!r}, "
                                           "not an integer")
                image_id = int(image_id)
            name = _text(dataset.attrs.get("name", self.names.get(image_id, key)))
            self.predictions[key] = (image_id, str(name))


def merge_predictions(paths, out, *, overwrite: bool = False) -> str:
    """Join predictions files of ``PatchAggregator(out=...)`` (one per rank) into one.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        The files to merge, each holding whole images (as written by ranks fed
        by ``PatchSampler(..., by_image=True)``); no image may be in two of
        them.
    out : str or os.PathLike
        The merged file, written atomically: a failure leaves nothing.
    overwrite : bool
        Replace an existing ``out``. Default: an existing file is an error.

    Returns
    -------
    str
        ``out``, the merged file: every prediction dataset of every input,
        copied with all its attributes (``image_id``, ``name``, ``geometry``),
        in image id order (by name for predictions without an image id); the
        ``image_ids`` and ``names`` tables over every image the inputs list;
        the inputs' file attributes.

    Raises
    ------
    ParameterError, ParameterTypeError
        No paths, a path given twice, ``out`` among ``paths``, inputs made on
        different grids (``patch_size``, ``stride``, ``edge``, ``mode``) or
        from different stores (one image id with two names), or an image in
        two files (the message names both).
    StoreFormatError
        An input is not a predictions file, or is damaged.
    StoreExistsError
        ``out`` exists and ``overwrite`` is false.
    FileNotFoundError, IsADirectoryError
        An input is missing or a folder; the folder of ``out`` is missing,
        or ``out`` is a folder.

    Examples
    --------
    >>> import numpy as np, os, tempfile, h5py
    >>> from lazypatch import PatchAggregator
    >>> folder = tempfile.mkdtemp()
    >>> ranks = []
    >>> for rank, image_ids in enumerate([[1], [0]]):  # each rank aggregates its own images
    ...     path = os.path.join(folder, f"rank{rank}.h5")
    ...     with PatchAggregator([(4, 4), (4, 8)], 4, image_ids=image_ids, out=path) as aggregator:
    ...         for image in image_ids:
    ...             ids, origins = aggregator.index.locate(np.arange(len(aggregator.index)))
    ...             aggregator.add(np.full((len(ids), 1, 4, 4), image, np.float32), [image] * len(ids), origins)
    ...     ranks.append(path)
    >>> merged = merge_predictions(ranks, os.path.join(folder, "merged.h5"))
    >>> with h5py.File(merged) as f:
    ...     f["image_ids"][()].tolist(), [f["predictions"][k].shape for k in ("0", "1")]
    ([0, 1], [(1, 4, 4), (1, 4, 8)])
    """
    if isinstance(paths, (str, bytes, os.PathLike)) or not hasattr(paths, "__iter__"):
        raise ParameterTypeError(f"paths must be a sequence of predictions files, got {paths!r}")
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ParameterError("paths is empty: give the predictions files to merge")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ParameterTypeError(f"overwrite must be True or False, got {overwrite!r}")
    if not isinstance(out, (str, os.PathLike)):
        raise ParameterTypeError(f"out must be a str or os.PathLike, got {out!r}")
    out = os.fspath(out)
    for path in paths:
        fmt.check_path(path, "predictions")
    for k, path in enumerate(paths):
        for other in paths[:k]:
            if os.path.samefile(path, other):
                raise ParameterError(f"paths lists one file twice: {other!r} and {path!r}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the folder of out does not exist: {folder!r}")
    if os.path.isdir(out):
        raise IsADirectoryError(f"out is a directory: {out!r}")
    if os.path.exists(out):
        if any(os.path.samefile(out, path) for path in paths):
            raise ParameterError(f"out {out!r} is one of the files to merge; write the merge to a new file")
        if not overwrite:
            raise StoreExistsError(f"out {out!r} exists; pass overwrite=True to replace it")

    inputs = []
    try:
        for path in paths:
            inputs.append(_Input(path))
        plan, attrs, names = _plan(inputs)
        _write(plan, attrs, names, out, bool(overwrite))
    finally:
        for item in inputs:
            item.h5.close()
    return out


def _plan(inputs) -> tuple:
    """What the merged file holds: (copies in order, file attributes, {image id: name})."""
    first = inputs[0]
    for item in inputs[1:]:
        for key in _GRID:
            mine, theirs = first.attrs.get(key), item.attrs.get(key)
            if (mine is None) != (theirs is None) or (
                    mine is not None and not np.array_equal(np.asarray(_text(mine)), np.asarray(_text(theirs)))):
                raise ParameterError(
                    f"paths: the predictions were made on different grids: {first.path!r} has "
                    f"{key}={_text(mine)!r}, {item.path!r} has {key}={_text(theirs)!r}; merge the "
                    "outputs of one inference")
    names, named_by = {}, {}
    for item in inputs:
        listed = dict(item.names)
        listed.update({i: n for i, n in item.predictions.values() if i is not None})
        for image_id, name in listed.items():
            if image_id in names and names[image_id] != name:
                raise ParameterError(
                    f"paths: image {image_id} is {names[image_id]!r} in {named_by[image_id]!r} and "
                    f"{name!r} in {item.path!r}: the files were not made on one store")
            names.setdefault(image_id, name)
            named_by.setdefault(image_id, item.path)
    copies, owner = [], {}
    for item in inputs:
        for key, (image_id, name) in item.predictions.items():
            if key in owner:
                raise ParameterError(
                    f"paths: image {name!r} (prediction {key!r}) is in both {owner[key]!r} and "
                    f"{item.path!r}; each image must come from one rank (PatchSampler(..., "
                    "by_image=True) gives each rank whole images)")
            owner[key] = item.path
            copies.append((image_id is None, image_id if image_id is not None else 0, name, key, item))
    copies.sort(key=lambda c: c[:4])
    return copies, first.attrs, dict(sorted(names.items()))


def _write(copies, attrs, names, out: str, overwrite: bool) -> None:
    tmp = temporary_path(out)
    h5 = None
    try:
        h5 = fmt.create_h5(tmp)
        for key, value in attrs.items():
            h5.attrs[key] = value
        fmt.write_dataset(h5, "image_ids", np.asarray(list(names), np.int64))
        blob, offsets = fmt.pack_texts(list(names.values()))
        fmt.write_dataset(h5, fmt.D_NAMES, blob)
        fmt.write_dataset(h5, fmt.D_NAME_OFFSETS, offsets)
        group = h5.create_group("predictions")
        for *_, key, item in copies:
            with fmt.damage_is_format_error(item.path, f"prediction {key!r}"):
                item.h5.copy(item.h5["predictions"][key], group, name=key)  # data and every attribute
            fmt.flush(group[key], repr(key))
        publish_h5(h5, tmp, out, overwrite)
        h5 = None
    except BaseException:  # nothing half-written: the temporary file goes, the error stays
        if h5 is not None:
            fmt.discard_h5(h5, tmp)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
