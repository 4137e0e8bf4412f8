"""Old import paths of lazypatch 0.1, kept working.

The flat modules of 0.1 (``lazypatch.labels``, ``lazypatch.store.write_store``,
...) moved into the package's folders. ``MOVED`` maps every public name of
every 0.1 module to the module that now holds it; the modules that no longer
exist are served by a finder as alias modules, the modules that became
packages resolve the old names through their ``__getattr__``. Nothing is
imported until a name is used, and only here do names resolve against the
direction of the layers (a store's old ``write_store`` lives in ``ingest``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

# old module -> {public name: the module that now holds it under the same name, or
# "module:attribute" where the name changed, or "=module" for a module}
MOVED = {
    'lazypatch.aggregate': {
        'MODES': 'lazypatch.inference.aggregator',
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'PatchAggregator': 'lazypatch.inference.aggregator',
        'PatchIndex': 'lazypatch.index',
        'StoreExistsError': 'lazypatch.errors',
        'as_int_array': 'lazypatch.index',
        'check_edge': 'lazypatch.grid',
        'fmt': '=lazypatch.store.format',
        'is_int': 'lazypatch.grid',
    },
    'lazypatch.cli': {
        'LazypatchError': 'lazypatch.errors',
        'build_parser': 'lazypatch.cli',
        'cmd_bench': 'lazypatch.cli.bench:run',
        'cmd_build': 'lazypatch.cli.build:run',
        'cmd_demo': 'lazypatch.cli.demo:run',
        'cmd_index': 'lazypatch.cli.index:run',
        'cmd_info': 'lazypatch.cli.info:run',
        'cmd_show': 'lazypatch.cli.show:run',
        'cmd_verify': 'lazypatch.cli.verify:run',
        'describe': 'lazypatch.stats.summary',
        'main': 'lazypatch.cli',
    },
    'lazypatch.dataset': {
        'Dataset': 'torch.utils.data',
        'ImageStore': 'lazypatch.store.image_store',
        'IntegrityError': 'lazypatch.errors',
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'PatchDataset': 'lazypatch.data.dataset',
        'PatchIndex': 'lazypatch.index',
        'SampleList': 'lazypatch.data.samples',
        'as_int_array': 'lazypatch.index',
        'check_pad': 'lazypatch.store.image_store',
        'collate': 'lazypatch.data.samples',
        'default_collate': 'torch.utils.data',
        'is_int': 'lazypatch.grid',
        'make_samples': 'lazypatch.data.samples',
        'page_aligned': 'lazypatch.store.reading.gathers',
    },
    'lazypatch.errors': {
        'ImageReadError': 'lazypatch.errors',
        'IntegrityError': 'lazypatch.errors',
        'LazypatchError': 'lazypatch.errors',
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'PatchIndexError': 'lazypatch.errors',
        'StoreChangedError': 'lazypatch.errors',
        'StoreClosedError': 'lazypatch.errors',
        'StoreExistsError': 'lazypatch.errors',
        'StoreFormatError': 'lazypatch.errors',
    },
    'lazypatch.filtering': {
        'FilteredIndex': 'lazypatch.index',
        'IntegrityError': 'lazypatch.errors',
        'ParameterError': 'lazypatch.errors',
        'PatchIndex': 'lazypatch.index',
        'StoreFormatError': 'lazypatch.errors',
        'check_edge': 'lazypatch.grid',
        'fmt': '=lazypatch.store.format',
        'foreground_filter': 'lazypatch.stats.foreground',
        'load_filter': 'lazypatch.stats.foreground',
        'otsu_threshold': 'lazypatch.stats.foreground',
        'patch_fractions': 'lazypatch.stats.foreground',
    },
    'lazypatch.index': {
        'FilteredIndex': 'lazypatch.index',
        'ImageSearch': 'lazypatch.index',
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'PatchIndex': 'lazypatch.index',
        'PatchIndexError': 'lazypatch.errors',
        'as_int_array': 'lazypatch.index',
        'axis_tuple': 'lazypatch.grid',
        'bisect_right': 'bisect',
        'check_edge': 'lazypatch.grid',
        'describe_shape': 'lazypatch.grid',
        'grid_counts': 'lazypatch.grid',
        'is_int': 'lazypatch.grid',
    },
    'lazypatch.labels': {
        'BlockCounter': 'lazypatch.stats.blocks',
        'ClassSampler': 'lazypatch.data.samplers.classes',
        'LabelStats': 'lazypatch.stats.labels',
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'PatchSampler': 'lazypatch.data.samplers.patch',
        'STATS_GROUP': 'lazypatch.store.format:G_LABEL_STATS',
        'StoreFormatError': 'lazypatch.errors',
        'axis_tuple': 'lazypatch.grid',
        'default_path': 'lazypatch.stats.labels',
        'fmt': '=lazypatch.store.format',
        'is_int': 'lazypatch.grid',
    },
    'lazypatch.normalize': {
        'ChannelStats': 'lazypatch.stats.channels',
        'GROUP': 'lazypatch.stats.channels',
        'NORMALIZATIONS': 'lazypatch.data.normalize',
        'Normalizer': 'lazypatch.data.normalize',
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'StoreFormatError': 'lazypatch.errors',
        'default_path': 'lazypatch.stats.channels',
        'fmt': '=lazypatch.store.format',
    },
    'lazypatch.sampling': {
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'PatchSampler': 'lazypatch.data.samplers.patch',
        'Sampler': 'torch.utils.data',
        'SeededTransform': 'lazypatch.data.transforms',
        'distributed_defaults': 'lazypatch.data.samplers.patch',
        'is_int': 'lazypatch.grid',
    },
    'lazypatch.show': {
        'DEFAULT_PATCH': 'lazypatch.show',
        'FIGSIZE': 'lazypatch.show',
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'PatchIndex': 'lazypatch.index',
        'PatchIndexError': 'lazypatch.errors',
        'add_arguments': 'lazypatch.cli.show:add_arguments',
        'describe_shape': 'lazypatch.grid',
        'grid_counts': 'lazypatch.grid',
        'is_int': 'lazypatch.grid',
        'run': 'lazypatch.cli.show:run',
        'show': 'lazypatch.show',
        'to_display': 'lazypatch.show',
    },
    'lazypatch.store': {
        'IO_MODES': 'lazypatch.store.image_store',
        'ImageStore': 'lazypatch.store.image_store',
        'LazypatchError': 'lazypatch.errors',
        'ParameterError': 'lazypatch.errors',
        'ParameterTypeError': 'lazypatch.errors',
        'PatchIndexError': 'lazypatch.errors',
        'StoreChangedError': 'lazypatch.errors',
        'StoreClosedError': 'lazypatch.errors',
        'StoreFormatError': 'lazypatch.errors',
        'axis_tuple': 'lazypatch.grid',
        'bisect_right': 'bisect',
        'check_pad': 'lazypatch.store.image_store',
        'fmt': '=lazypatch.store.format',
        'is_int': 'lazypatch.grid',
        'write_store': 'lazypatch.ingest.builder',
    },
    'lazypatch.testing': {
        'arange_image': 'lazypatch.testing',
        'axis_origins': 'lazypatch.testing',
        'brute_force_patches': 'lazypatch.testing',
        'grid_strategy': 'lazypatch.testing',
        'patch_oracle': 'lazypatch.testing',
        'shapes_strategy': 'lazypatch.testing',
    },
    'lazypatch.transforms': {
        'ParameterTypeError': 'lazypatch.errors',
        'SeededTransform': 'lazypatch.data.transforms',
        'TorchvisionTransform': 'lazypatch.data.transforms',
    },
}

# old modules that no longer exist as files: served as alias modules
ALIASES = ("lazypatch.aggregate", "lazypatch.dataset", "lazypatch.filtering", "lazypatch.labels",
           "lazypatch.normalize", "lazypatch.sampling", "lazypatch.transforms")


def moved(module: str, name: str):
    """``getattr`` of an old name of ``module``, from where it lives now."""
    target = MOVED.get(module, {}).get(name)
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    if target.startswith("="):  # the name is a module itself
        return importlib.import_module(target[1:])
    target, _, attribute = target.partition(":")  # "module:attribute" where the name changed
    return getattr(importlib.import_module(target), attribute or name)


def moved_module(name: str):
    """``lazypatch.<name>`` for an old module name (``lazypatch.labels``)."""
    if f"lazypatch.{name}" in ALIASES:
        return importlib.import_module(f"lazypatch.{name}")
    raise AttributeError(f"module 'lazypatch' has no attribute {name!r}")


class _AliasModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = moved(self.__name__, name)
        setattr(self, name, value)
        return value

    def __dir__(self):
        return sorted(MOVED.get(self.__name__, {}))


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = _AliasModule(spec.name, f"lazypatch 0.1 path; see {__name__}.MOVED")
        return module

    def exec_module(self, module):
        module.__all__ = sorted(MOVED.get(module.__name__, {}))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
