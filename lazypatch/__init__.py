"""lazypatch: random-access training patches from image collections larger than RAM.

The folders are the pipeline, each importing only those before it::

    grid, errors      patch/stride/edge arithmetic; the exception hierarchy
    index/            flat patch number <-> (image, origin); numpy only
    store/            the HDF5 store: format, publication, ImageStore, reading/
    stats/            channel and label statistics, foreground filters, describe
    ingest/           write_store (arrays) and build (files); never torch
    data/             the torch layer: PatchDataset, collate, samplers, transforms
    inference/        PatchAggregator: predictions stitched back into images
    cli/, show        the command line; pictures of a store

Public names are imported on first use, so ``import lazypatch.index`` loads
neither torch nor h5py.
"""

from importlib import import_module

from . import _compat
from ._version import __version__

_compat.install()

_EXPORTS = {
    # index
    "PatchIndex": "lazypatch.index",
    "FilteredIndex": "lazypatch.index",
    # store
    "ImageStore": "lazypatch.store",
    # stats
    "ChannelStats": "lazypatch.stats",
    "LabelStats": "lazypatch.stats",
    "describe": "lazypatch.stats",
    "foreground_filter": "lazypatch.stats",
    # ingest
    "write_store": "lazypatch.ingest",
    "build": "lazypatch.ingest",
    # data
    "PatchDataset": "lazypatch.data",
    "collate": "lazypatch.data",
    "PatchSampler": "lazypatch.data",
    "ClassSampler": "lazypatch.data",
    "SeededTransform": "lazypatch.data",
    "TorchvisionTransform": "lazypatch.data",
    # inference
    "PatchAggregator": "lazypatch.inference",
    "export": "lazypatch.inference",
    "merge_predictions": "lazypatch.inference",
    # errors (also in lazypatch.errors)
    "LazypatchError": "lazypatch.errors",
    "ParameterError": "lazypatch.errors",
    "ParameterTypeError": "lazypatch.errors",
    "PatchIndexError": "lazypatch.errors",
    "StoreFormatError": "lazypatch.errors",
    "StoreExistsError": "lazypatch.errors",
    "StoreClosedError": "lazypatch.errors",
    "StoreChangedError": "lazypatch.errors",
    "IntegrityError": "lazypatch.errors",
    "ImageReadError": "lazypatch.errors",
    "LazypatchWarning": "lazypatch.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        module = import_module(_EXPORTS[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    return _compat.moved_module(name)


def __dir__():
    return __all__
