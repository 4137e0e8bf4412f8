"""lazypatch: random-access training patches from image collections larger than RAM.

Images are written once into one HDF5 store (:func:`write_store`); a
:class:`PatchIndex` maps flat patch numbers to (image, origin) by binary search
over a cumulative sum; a :class:`PatchDataset` reads only each patch's bytes.

Public names are imported on first use, so ``import lazypatch.index`` loads
neither torch nor h5py.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "PatchIndex": "lazypatch.index",
    "ImageStore": "lazypatch.store",
    "write_store": "lazypatch.store",
    "PatchDataset": "lazypatch.dataset",
    "collate": "lazypatch.dataset",
    "PatchSampler": "lazypatch.sampling",
    "SeededTransform": "lazypatch.sampling",
    "TorchvisionTransform": "lazypatch.transforms",
    "PatchAggregator": "lazypatch.aggregate",
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
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lazypatch' has no attribute {name!r}")


def __dir__():
    return __all__
