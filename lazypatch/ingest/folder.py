"""Building from files: ``lazypatch.build(source, output, **options)``, the Python
form of ``lazypatch build``.

Two passes. The first reads headers only (shapes, dtypes, mask pairing),
validates everything, reporting every bad file at once, and plans the
output (``dry_run=True`` stops there and returns the plan); it decodes only a
sample of the masks, to list their labels. The second decodes and writes
through :func:`~lazypatch.ingest.write_store`: PNG and JPEG decoded ahead in
worker threads, one writer, a progress bar of bytes, and a summary (images,
bytes, seconds, MB/s, mask labels).

Files are taken in code-point order of their path relative to the source, so
building twice gives identical pixel, mask and table datasets.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import time
from collections.abc import Mapping

import numpy as np

from ..errors import ImageReadError, ParameterError, ParameterTypeError, StoreExistsError
from ..grid import is_int
from ..store import ImageStore
from ._signals import cleans_up_on_termination
from .builder import LabelCounts, write_file
from .files import (IMAGE_KINDS, PAGES, companion_masks, describe_skipped, list_images,
                    pair_masks, stem)
from .readers import READERS
from .sources import VOLUME_READERS, label_mapper, open_sources, reader_of
from .cluster import (new_build_id, open_client, remove_build, remove_dead_temporaries, run_shards, shard_folder,
                      shard_name, worker_summary)
from .shards import parse_size, split_shards, stored_bytes
from .validate import axes_warning, check_mask, check_options, check_same, default_tile, describe_image, warn

__all__ = ["build", "DEFAULT_WORKERS"]

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
MAX_PROBLEMS = 20  # bad files listed in one error; the rest are counted
LABEL_WARNING = 64  # more distinct mask values than this: probably not a label map
_SAMPLE_MASKS = 16  # masks decoded in the header pass to list their labels...
_SAMPLE_BYTES = 512 << 20  # ...at most this many decoded bytes in all


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _optional_int(value, name: str):
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not is_int(value):
        raise ParameterTypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _tile(value, spatial_ndim: int):
    """A tile given as the CLI writes it ('64', '64,32', '64x32') or as an int or tuple."""
    if isinstance(value, str):
        try:
            parts = [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
        except ValueError:
            parts = []
        if not parts:
            raise ParameterError(f"tile must be an int or comma-separated ints, got {value!r}")
        value = parts[0] if len(parts) == 1 else tuple(parts)
    return value


@cleans_up_on_termination  # NOTE [termination] in lazypatch.ingest._signals
def build(source, output, *, masks=None, mask_suffix: str = "", allow_unmatched: bool = False,
          mask_map=None, layout: str = "tiled", tile=None, compression=None, compression_opts=None,
          checksum: bool = False, spatial_ndim=None, pages=None, reader=None, level=None, mpp=None,
          assume_mpp=None, spacing=None, annotations=None, classes=None, ignore_value=None,
          stats: bool = False, label_stats: bool = False,
          shards=None, shard_size=None, shard_index=None, scheduler=None, client=None, append: bool = False,
          workers=None, dry_run: bool = False, overwrite: bool = False, progress: bool = True,
          verbose: bool = False):
    """Build a store (or shards of one) from a folder, file or glob of image files.

    The Python form of ``lazypatch build SOURCE OUTPUT``: each keyword is the
    command's long flag with ``-`` written ``_`` (``--no-progress`` is
    ``progress=False``), with the same defaults. Values may be given as the
    command line writes them (``tile="64,64"``, ``shard_size="2GB"``,
    ``mask_map="255=1"``) or in their natural type (``tile=(64, 64)``,
    ``shard_size=2 * 10**9``, ``mask_map={255: 1}``).

    Parameters
    ----------
    source : str or os.PathLike
        A folder (searched recursively), an image file or a glob of PNG, JPEG,
        TIFF, BMP, WebP or .npy files, whole-slide images (.svs, .ndpi, .mrxs,
        .scn, .bif...), OME-TIFF, GeoTIFF, NIfTI (.nii, .nii.gz) and DICOM
        (a folder of one series' slices is one image, NOTE [DICOM series] in
        :mod:`lazypatch.ingest.files`). Other files are skipped and named in
        the plan (hidden and system files such as ``.DS_Store`` are counted).
    output : str or os.PathLike
        The store to write (``.h5``); with ``shards``, ``shard_size``,
        ``scheduler`` or ``append``, a manifest naming the shards, which are
        written as ``OUT.shards/<build-id>-<k>.h5`` (see
        :mod:`lazypatch.ingest.cluster`); ``ImageStore(OUT)`` opens it as one store.
    masks : str, optional
        Folder (or glob) of masks, paired with images by file stem. It may be
        the image folder itself when ``mask_suffix`` tells the masks apart
        (``x_mask.png`` beside ``x.png``): files named with the suffix are
        then masks and not images.
    mask_suffix : str
        Suffix of mask stems, e.g. ``"_mask"``.
    allow_unmatched : bool
        Leave out images with no mask or several (default: an error).
    mask_map : dict or str, optional
        Mask values to replace while writing, ``{255: 1}`` or ``"255=1,128=2"``.
    layout, tile, compression, compression_opts, checksum
        As for :func:`~lazypatch.write_store`. Without ``tile``, volumes
        thinner than 64 slices get a z tile of their depth rounded up to a
        power of two; the plan says what the tiles add (``overhead``).
    spatial_ndim : {None, 2, 3}
        2 for images, 3 for volumes; by default 3 when the files are NIfTI
        or DICOM volumes, else 2 (TIFF z-stacks and .npy volumes need 3).
    pages : {None, "channels", "z", "first"}
        What the pages of a multi-page TIFF are when its metadata does not say
        (tifffile's axis ``Q`` or ``I``): channels, z slices, or only the
        first page counts. ImageJ and OME files say it themselves: ``C`` pages
        are channels, ``Z`` pages z slices (a volume with ``spatial_ndim=3``).
    reader : {"openslide", "tifffile", "nibabel", "pydicom", "rasterio", "pillow", "numpy"}, optional
        Read every image with this format reader (by default each file's is
        chosen by extension and content, :func:`~lazypatch.ingest.readers.choose_reader`).
    level : int, optional
        Store this pyramid level of every slide (0 is the full resolution).
    mpp : float, optional
        Resample every 2-D image to this pixel size in microns: the coarsest
        pyramid level at or finer than ``mpp``, resampled with an
        anti-aliased linear filter tile by tile (masks nearest neighbour);
        see :mod:`lazypatch.ingest.resample`. Not with ``level``.
    assume_mpp : float, optional
        The level-0 pixel size (um) of files that record none.
    spacing : float or sequence of 3 floats, optional
        Resample every volume to this voxel spacing (z, y, x), in the source's
        unit (mm for NIfTI and DICOM); linear for images, nearest for masks.
    annotations : str, optional
        Folder (or glob) of QuPath / GeoJSON annotation files (.geojson,
        .json), paired with images by stem and rasterized into masks on the
        stored grid (not with ``masks``).
    classes : dict or str
        Annotation class name -> label, ``{"tumor": 1, "stroma": 2}`` or
        ``"tumor=1,stroma=2"``; where annotations overlap the later wins.
    ignore_value : int, optional
        The label of unannotated pixels (default 0).
    stats : bool
        Per-channel statistics, for ``PatchDataset(normalize=...)``.
    label_stats : bool
        Per-block label counts of the masks, for ``ClassSampler``.
    shards : int, optional
        Write this many shard files, balanced by bytes.
    shard_size : str or int, optional
        Instead: shards of at most about this size (``"2GB"`` or bytes).
    shard_index : int, optional
        Write only this shard (0-based): one machine per shard, no manifest;
        ``lazypatch manifest OUT SHARD...`` then makes one from the shards.
    scheduler : str, optional
        Run one task per shard on Dask.distributed: a scheduler address
        (``tcp://head:8786``) or ``local:N`` for a LocalCluster of N one-thread
        worker processes (``lazypatch[dask]``); not with ``workers``.
    client : dask.distributed.Client, optional
        The same with a client of your own (Python only).
    append : bool
        Add the images of ``source`` to the manifest at ``output`` as new
        shards, and publish the next generation of the manifest; no shard is
        rewritten, and readers of the old manifest keep reading its shards.
    workers : int, optional
        Threads decoding PNG/JPEG ahead of the writer (default: min(4, CPUs)); 0 for none (with a
        scheduler, each task decodes in its worker's one thread).
    dry_run : bool
        Check everything and return the plan; write nothing.
    overwrite : bool
        Replace existing output files.
    progress : bool
        Show a progress bar (when stderr is a terminal).
    verbose : bool
        Print the plan and the summary, as the command does.

    Returns
    -------
    ImageStore or dict
        The new store, opened (every written shard as one store); with
        ``dry_run=True`` the plan as a dict: images, shapes, channels, the
        files skipped, mask labels (``values`` and pixel ``counts`` in a
        sample of the masks), tile, stored bytes and ``overhead``, outputs.

    Raises
    ------
    ParameterError, ParameterTypeError
        Bad options, or images that cannot share a store: every bad file is
        listed (up to 20, then counted), each message naming its file.
    FileNotFoundError
        No image files in ``source``, or the output folder does not exist.
    IsADirectoryError
        ``output`` is a directory.
    StoreExistsError
        An output file exists and ``overwrite`` is false.
    ImageReadError
        A file cannot be decoded (a TIFF codec without imagecodecs names
        ``pip install imagecodecs``).
    SystemExit
        ``Terminated`` on SIGTERM or SIGHUP, after removing the temporary
        files (see :func:`~lazypatch.write_store`).

    Warns
    -----
    LazypatchWarning
        The first image looks channels-first or like a volume read as 2-D;
        masks are JPEG files; the sampled masks hold more than 64 values.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     np.save(os.path.join(folder, f"image{k}.npy"), np.full((40, 30, 3), k, np.uint8))
    >>> plan = build(folder, os.path.join(folder, "out.h5"), dry_run=True)
    >>> plan["images"], plan["outputs"][0]["images"]
    (3, [0, 3])
    >>> store = build(folder, os.path.join(folder, "out.h5"), progress=False)
    >>> len(store), store.names
    (3, ['image0.npy', 'image1.npy', 'image2.npy'])
    >>> store.close()
    """
    started = time.perf_counter()
    for name, value in (("source", source), ("output", output)):
        if not isinstance(value, (str, os.PathLike)):
            raise ParameterTypeError(f"{name} must be a path (str or os.PathLike), got {value!r}")
    source, output = os.fspath(source), os.fspath(output)
    spatial_ndim = _optional_int(spatial_ndim, "spatial_ndim")
    if spatial_ndim is not None and spatial_ndim not in (2, 3):
        raise ParameterError(f"--spatial-ndim (spatial_ndim) must be 2 or 3, got {spatial_ndim}")
    tile = _tile(tile, spatial_ndim)
    ingest = _ingest_options(reader, level, mpp, assume_mpp, spacing, annotations, classes,
                             ignore_value, masks)
    asked_ndim = spatial_ndim
    if spatial_ndim is None:  # provisional until the files say whether they are volumes
        spatial_ndim = len(tile) if isinstance(tile, tuple) else 3 if ingest["spacing"] is not None else 2
    compression_opts = _optional_int(compression_opts, "compression_opts")
    shards = _optional_int(shards, "shards")
    shard_index = _optional_int(shard_index, "shard_index")
    given_workers, workers = workers, DEFAULT_WORKERS if workers is None else _optional_int(workers, "workers")
    checksum, stats, label_stats, allow_unmatched, dry_run, overwrite, progress, verbose = (
        _flag(v, n) for v, n in ((checksum, "checksum"), (stats, "stats"), (label_stats, "label_stats"),
                                 (allow_unmatched, "allow_unmatched"), (dry_run, "dry_run"),
                                 (overwrite, "overwrite"), (progress, "progress"), (verbose, "verbose")))
    given_tile, given_opts = tile, compression_opts
    tile, compression_opts = check_options(spatial_ndim, layout, tile, compression, compression_opts, checksum)
    if pages is not None and pages not in PAGES:
        raise ParameterError(f"--pages (pages) must be one of {', '.join(PAGES)}, got {pages!r}")
    mask_map = parse_mask_map(mask_map)
    if workers < 0:
        raise ParameterError(f"--workers (workers) must be 0 or more, got {workers}")
    if shards is not None and shard_size is not None:
        raise ParameterError("give --shards or --shard-size (shards= or shard_size=), not both")
    append = _flag(append, "append")
    distributed = scheduler is not None or client is not None
    if distributed and given_workers is not None:
        raise ParameterError(f"--workers (workers={workers}) and --scheduler (scheduler=/client=): with a "
                             "scheduler each shard task decodes in its Dask worker's one thread; drop --workers")
    if distributed and shards is None and shard_size is None:
        raise ParameterError("--scheduler (scheduler=/client=) runs one task per shard: give --shards N or "
                             "--shard-size SIZE (shards= or shard_size=)")
    if distributed and shard_index is not None:
        raise ParameterError("--shard-index writes one shard here; --scheduler writes them all: give one")
    if append and shard_index is not None:
        raise ParameterError("--append adds shards to a manifest; --shard-index writes one shard alone: give one")
    if append and overwrite:
        raise ParameterError("--append adds to the manifest at the output; --overwrite replaces it: give one")
    size = parse_size(shard_size) if shard_size is not None else None
    if mask_suffix and not masks:
        raise ParameterError(f"--mask-suffix {mask_suffix!r} needs --masks FOLDER (mask_suffix= needs masks=)")
    if allow_unmatched and not masks:
        raise ParameterError("--allow-unmatched needs --masks FOLDER (allow_unmatched= needs masks=)")
    if label_stats and not masks:
        raise ParameterError("--label-stats counts mask labels: it needs --masks FOLDER (label_stats= needs masks=)")
    if mask_map and not masks:
        raise ParameterError("--mask-map maps mask labels: it needs --masks FOLDER (mask_map= needs masks=)")
    _check_output(output)
    if not dry_run and not append and shard_index is None and os.path.lexists(output) and not overwrite:
        raise StoreExistsError(errno.EEXIST, "the output exists; pass overwrite=True (--overwrite) "
                               "to replace it, or append=True (--append) to add to its manifest",
                               output)  # before scanning the source
    previous = _previous_manifest(output) if append else None

    listing = list_images(source)
    paths, root = listing
    if paths and asked_ndim is None:
        provisional, spatial_ndim = spatial_ndim, _spatial_ndim(paths, ingest["reader"])
        if spatial_ndim != provisional:
            tile, compression_opts = check_options(spatial_ndim, layout, given_tile, compression, given_opts,
                                                   checksum)
    elif paths:
        _spatial_ndim(paths, ingest["reader"], asked_ndim)
    for option, flag in (("annotations", "--annotations"), ("mpp", "--mpp")):
        if ingest[option] is not None and spatial_ndim != 2:
            raise ParameterError(f"{flag} ({option}=) applies to 2-D slides; {source!r} holds volumes "
                                 f"(spatial_ndim={spatial_ndim})")
    if ingest["spacing"] is not None and spatial_ndim != 3:
        raise ParameterError(f"--spacing (spacing=) resamples volumes; {source!r} holds 2-D images: "
                             "give --mpp X (mpp=) for slides")
    if not paths:
        skipped = describe_skipped(_relative(listing.skipped, root), listing.hidden)
        raise FileNotFoundError(errno.ENOENT, f"no image files ({IMAGE_KINDS}) in {source!r}"
                                + (f"; skipped {skipped}" if skipped else ""))
    mask_paths, report = None, None
    if ingest["annotations"]:
        candidates = list_annotations(ingest["annotations"])
        paths, mask_paths, report = pair_masks(paths, ingest["annotations"], "", allow_unmatched,
                                               image_root=root, mask_paths=candidates)
        if not paths:
            raise ParameterError(f"no image in {source!r} has an annotation file in {ingest['annotations']!r} "
                                 "(paired by file stem: slide.svs with slide.geojson)")
    elif masks:
        paths, candidates = _masks_beside_images(paths, source, masks, mask_suffix)
        paths, mask_paths, report = pair_masks(paths, masks, mask_suffix, allow_unmatched, image_root=root,
                                               mask_paths=candidates)
        if not paths:
            hint = f"; {report['hint']}" if report["hint"] else ""
            raise ParameterError(f"no image in {source!r} has a mask in {masks!r}{hint}")
    elif os.path.isdir(source):
        _refuse_mixed_masks(paths, source)

    # pass 1: headers, every problem at once
    images, mask_images, problems = open_sources(paths, mask_paths, spatial_ndim=spatial_ndim, workers=workers,
                                                 pages=pages, ingest=ingest)
    names = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
    first, first_position, mask_dtype, shapes = None, None, None, [None] * len(paths)
    for position, image in enumerate(images.headers):
        if image is None:
            continue
        try:
            spatial, spec = describe_image(image, position, spatial_ndim)
        except ParameterError as exc:
            problems.append(ParameterError(f"{paths[position]!r}: {exc}"))
            continue
        shapes[position] = spatial
        if first is None:
            first, first_position = spec, position
        else:
            try:
                check_same(spec, first, position, first_position, spatial_ndim)
            except ParameterError as exc:
                problems.append(ParameterError(f"{paths[position]!r}: {exc} (image {first_position} is "
                                               f"{paths[first_position]!r})"))
        mask = mask_images.headers[position] if mask_images is not None else None
        if mask is not None:
            try:
                mask_dtype = check_mask(mask, spatial, position, mask_dtype)
            except ParameterError as exc:
                problems.append(ParameterError(f"{mask_paths[position]!r}: {exc} (its image is "
                                               f"{paths[position]!r})"))
    if mask_dtype is not None and mask_map:
        mapping = label_mapper(mask_map, mask_dtype)
        for mask in mask_images.headers:
            if mask is not None:
                mask.mapping = mapping
    labels = None
    if mask_images is not None and not problems:
        labels = _sample_labels(mask_images, problems)
    if problems:
        raise _problems_error(problems, source)
    _warn_about_axes(images.headers[first_position], spatial_ndim)
    if mask_paths:
        _warn_about_masks(mask_paths, labels)

    shapes = np.array(shapes, np.int64)
    if given_tile is None and tile is not None:
        tile = default_tile(shapes, spatial_ndim)
    per_image = stored_bytes(shapes, first.channels, first.dtype.itemsize, layout, tile)
    if mask_images is not None:
        per_image = per_image + stored_bytes(shapes, 1, mask_dtype.itemsize, layout, tile)
    sharded = shards is not None or size is not None or append or distributed
    ranges = split_shards(per_image, shards, size) if sharded else [(0, len(paths))]
    build_id = new_build_id()
    outputs = [shard_name(output, build_id, k) for k in range(len(ranges))] if sharded else [output]
    chosen = list(range(len(ranges)))
    if shard_index is not None:
        if not 0 <= shard_index < len(ranges):
            raise ParameterError(f"--shard-index (shard_index) must be within [0, {len(ranges)}), got {shard_index}")
        chosen = [shard_index]
    plan = _plan(source, layout, tile, images, mask_images, shapes, first, mask_dtype, report, per_image,
                 ranges, outputs, chosen, listing, root, labels)
    if verbose:
        print(_plan_text(plan, dry_run))
    if dry_run:
        return plan
    for k in chosen:
        if os.path.lexists(outputs[k]) and not overwrite:
            raise StoreExistsError(errno.EEXIST, "the output exists; pass overwrite=True (--overwrite) "
                                                 "to replace it", outputs[k])

    # pass 2: decode and write
    command = " ".join(["lazypatch"] + sys.argv[1:]) if sys.argv[1:2] == ["build"] else "lazypatch build"
    if sharded:
        write = dict(spatial_ndim=spatial_ndim, layout=layout, tile=tile, compression=compression,
                     compression_opts=compression_opts, checksum=checksum, channel_stats=stats,
                     label_stats=label_stats)
        provenance = {"command": command, "source": os.path.abspath(source),
                      "masks": os.path.abspath(masks) if masks else None, "mask_suffix": mask_suffix,
                      "build_id": build_id}
        if mask_map:
            provenance["mask_map"] = {str(key): value for key, value in mask_map.items()}
        provenance.update({key: value for key, value in ingest.items() if value is not None})
        if ingest["annotations"]:
            provenance["annotations"] = os.path.abspath(ingest["annotations"])
        tasks = [{"paths": paths[a:b], "mask_paths": mask_paths[a:b] if mask_paths else None,
                  "names": names[a:b], "spatial_ndim": spatial_ndim, "pages": pages, "ingest": ingest,
                  "workers": 0 if distributed else workers, "mask_map": mask_map,
                  "mask_dtype": None if mask_dtype is None else mask_dtype.str, "output": outputs[k],
                  "write": dict(write, provenance=dict(provenance, shard=[k, len(ranges)], first_image=int(a)))}
                 for k, (a, b) in enumerate(ranges) if k in chosen]
        return _build_shards(tasks, output, build_id, previous, provenance, scheduler=scheduler, client=client,
                             single=shard_index is not None, overwrite=overwrite, progress=progress,
                             verbose=verbose, started=started)
    written, counted = 0, {}
    for k in chosen:
        a, b = ranges[k]
        provenance = {"command": command, "source": os.path.abspath(source),
                      "masks": os.path.abspath(masks) if masks else None,
                      "shard": [k, len(ranges)], "first_image": int(a), "mask_suffix": mask_suffix}
        if mask_map:
            provenance["mask_map"] = {str(key): value for key, value in mask_map.items()}
        provenance.update({key: value for key, value in ingest.items() if value is not None})
        if ingest["annotations"]:
            provenance["annotations"] = os.path.abspath(ingest["annotations"])
        written_report = {}
        try:
            path = write_file(
                outputs[k], images.part(a, b), masks=mask_images.part(a, b) if mask_images else None,
                names=names[a:b], spatial_ndim=spatial_ndim, layout=layout, tile=tile,
                compression=compression, compression_opts=compression_opts, checksum=checksum,
                overwrite=overwrite, progress=None if progress else False, channel_stats=stats,
                label_stats=label_stats, provenance=provenance, warn_axes=False,
                report=written_report if mask_images is not None else None,
            )
        except BaseException:
            done = [outputs[j] for j in chosen[:chosen.index(k)]]
            if done:  # whole files, kept: the collection is incomplete until every shard exists
                print(f"the collection is incomplete: {len(done)} of {len(ranges)} shards were written "
                      f"({', '.join(done)}); shard {k} failed: fix it, then finish with "
                      f"--shard-index {k} (and each later one)", file=sys.stderr)
            raise
        written += os.path.getsize(path)
        for value, count in written_report.get("labels", {}).items():
            counted[value] = counted.get(value, 0) + count
    seconds = time.perf_counter() - started
    if verbose:
        source_bytes = sum(images.headers[j].nbytes for k in chosen for j in range(*ranges[k]))
        count = sum(ranges[k][1] - ranges[k][0] for k in chosen)
        print(f"wrote {count} images ({source_bytes / 1e6:,.1f} MB of pixels, {written / 1e6:,.1f} MB "
              f"on disk) in {seconds:.1f} s, {source_bytes / 1e6 / max(seconds, 1e-9):,.0f} MB/s: "
              + ", ".join(outputs[k] for k in chosen))
        if counted:
            print(f"mask labels: {_labels_text(list(counted), list(counted.values()), share=True)}")
    return ImageStore(outputs[0])


def _previous_manifest(output: str):
    """The manifest ``--append`` adds to: it must exist and be one."""
    from ..store.manifest import is_manifest, read_manifest

    if not os.path.exists(output):
        raise FileNotFoundError(errno.ENOENT, "--append (append=True) adds to an existing manifest; there is "
                                              "none: build it first without --append", output)
    if not is_manifest(output):
        raise ParameterError(f"--append (append=True) adds shards to a manifest, and {output!r} is a single "
                             "store: open both as ImageStore([old, new]), or rebuild it with --shard-size")
    return read_manifest(output)


def _build_shards(tasks, output, build_id, previous, provenance, *, scheduler, client, single, overwrite,
                  progress, verbose, started):
    """Run the shard tasks and publish the manifest (NOTE [shard faults] in lazypatch.ingest.cluster)."""
    from ..store.manifest import read_manifest, write_manifest

    os.makedirs(shard_folder(output), exist_ok=True)
    client, close = open_client(scheduler, client)
    ready = time.perf_counter()
    try:
        results = run_shards(tasks, client=client, progress=progress)
        if single:
            path = results[0]["path"]
        else:
            seen = None if previous is None else previous.generation
            if previous is None and overwrite and os.path.exists(output):
                seen = read_manifest(output).generation if _is_manifest(output) else None
            old = [] if previous is None else list(previous.shards)
            write_manifest(output, old + [r["path"] for r in results], provenance=provenance,
                           expected_generation=seen, overwrite=overwrite or previous is not None)
            path = output
    except BaseException:
        remove_build(output, build_id)
        raise
    finally:
        remove_dead_temporaries([task["output"] for task in tasks])
        if close is not None:
            close()
    if verbose:
        seconds = time.perf_counter() - started
        pixels = sum(r["pixel_bytes"] for r in results)
        on_disk = sum(r["file_bytes"] for r in results)
        print(f"wrote {sum(r['images'] for r in results)} images in {len(results)} shard(s) "
              f"({pixels / 1e6:,.1f} MB of pixels, {on_disk / 1e6:,.1f} MB on disk) in {seconds:.1f} s, "
              f"{pixels / 1e6 / max(seconds, 1e-9):,.0f} MB/s" + (
                  f" ({ready - started:.1f} s before the first task, cluster start included)" if client else ""))
        print("\n".join(worker_summary(results)))
        counted = {}
        for result in results:
            for value, count in result["labels"].items():
                counted[value] = counted.get(value, 0) + count
        if counted:
            print(f"mask labels: {_labels_text(list(counted), list(counted.values()), share=True)}")
        if single:
            print(f"when every shard is written: lazypatch manifest {output} {shard_folder(output)}/*.h5")
        else:
            print(f"{output}: a manifest of {len(results) + (len(previous.shards) if previous else 0)} shard(s); "
                  f"open it as one store: ImageStore({output!r})")
    return ImageStore(path)


def _is_manifest(path) -> bool:
    from ..store.manifest import is_manifest

    return is_manifest(path)


def _positive_float(value, name: str):
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, (str, int, float, np.number)) and not isinstance(
            value, (bool, np.bool_)) else None
    except ValueError:
        number = None
    if number is None:
        raise ParameterTypeError(f"{name} must be a positive number, got {value!r}")
    if not (np.isfinite(number) and number > 0):
        raise ParameterError(f"{name} must be a positive number, got {value!r}")
    return number


def _spacing_target(value):
    """``--spacing``: one number for every axis, or three (z, y, x), as '1,1,1' or a sequence."""
    if value is None:
        return None
    parts = value.replace("x", ",").split(",") if isinstance(value, str) else (
        [value] if np.isscalar(value) else list(value))
    numbers = [_positive_float(v.strip() if isinstance(v, str) else v, "--spacing (spacing=)") for v in parts]
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3:
        raise ParameterError(f"--spacing (spacing=) takes one number or three (z, y, x), got {value!r}")
    return tuple(numbers)


def _ingest_options(reader, level, mpp, assume_mpp, spacing, annotations, classes, ignore_value,
                    masks) -> dict:
    """The format options of ``build`` checked and in their natural types (see its docstring)."""
    if reader is not None and reader not in READERS:
        raise ParameterError(f"--reader (reader=) must be one of {', '.join(READERS)}, got {reader!r}")
    level = _optional_int(level, "level")
    if level is not None and level < 0:
        raise ParameterError(f"--level (level=) must be 0 or more, got {level}")
    mpp = _positive_float(mpp, "--mpp (mpp=)")
    assume_mpp = _positive_float(assume_mpp, "--assume-mpp (assume_mpp=)")
    spacing = _spacing_target(spacing)
    for first, second, both in ((level, mpp, "--level and --mpp (level= and mpp=): a level is a resolution"),
                                (mpp, spacing, "--mpp and --spacing (mpp= and spacing=): slides take --mpp, "
                                               "volumes --spacing"),
                                (masks, annotations, "--masks and --annotations (masks= and annotations=): "
                                                     "the masks come from one of them")):
        if first is not None and first is not False and second is not None and second is not False:
            raise ParameterError(f"{both}; give one, got both")
    if annotations is not None and not isinstance(annotations, (str, os.PathLike)):
        raise ParameterTypeError(f"annotations must be a folder or glob (str), got {annotations!r}")
    if annotations is not None and classes is None:
        raise ParameterError("--annotations needs --classes NAME=VALUE,... (classes=): the label of each "
                             "annotation class, e.g. --classes tumor=1,stroma=2")
    if annotations is None and classes is not None:
        raise ParameterError("--classes maps annotation classes: it needs --annotations FOLDER (annotations=)")
    if annotations is None and ignore_value is not None:
        raise ParameterError("--ignore-value labels unannotated pixels: it needs --annotations FOLDER "
                             "(annotations=)")
    ignore_value = _optional_int(ignore_value, "ignore_value")
    if ignore_value is not None and ignore_value < 0:
        raise ParameterError(f"--ignore-value (ignore_value=) must be 0 or more, got {ignore_value}")
    if classes is not None:
        from .annotations import parse_classes

        classes = parse_classes(classes)
    return {"reader": reader, "level": level, "mpp": mpp, "assume_mpp": assume_mpp, "spacing": spacing,
            "annotations": None if annotations is None else os.fspath(annotations),
            "classes": classes,
            "ignore_value": None if annotations is None else 0 if ignore_value is None else ignore_value}


def _spatial_ndim(paths, reader, asked=None) -> int:
    """3 when the files are NIfTI or DICOM volumes, else 2; ``asked`` when given (checked)."""
    found = {}
    for path in paths:
        try:
            name = reader_of(path, reader)
        except (ImageReadError, ParameterError, OSError):
            continue  # the header pass names the file
        found.setdefault(name in VOLUME_READERS, path)
    volume, flat = found.get(True), found.get(False)
    if volume is not None and asked == 2:
        raise ParameterError(f"{volume!r} is a volume (NIfTI and DICOM are read as (Z, Y, X)): "
                             "--spatial-ndim (spatial_ndim) must be 3 or left out, got 2")
    if volume is not None and flat is not None and asked is None:
        raise ParameterError(f"the source mixes volumes and 2-D images ({volume!r} and {flat!r}): one "
                             "store holds one kind; build them into two stores")
    return asked if asked is not None else 3 if volume is not None else 2


def list_annotations(source) -> list:
    """The annotation files (.geojson, .json) under a folder, or matching a glob, sorted."""
    import glob

    source = os.fspath(source)
    if os.path.isdir(source):
        found = [os.path.join(folder, name) for folder, _, names in os.walk(source) for name in names
                 if name.lower().endswith((".geojson", ".json")) and not name.startswith(".")]
    elif os.path.isfile(source):
        found = [source]
    else:
        found = [p for p in glob.glob(source, recursive=True) if os.path.isfile(p)]
    if not found:
        raise FileNotFoundError(errno.ENOENT, "no annotation files (.geojson, .json) in --annotations "
                                              "(annotations=)", source)
    return sorted(found)


def parse_mask_map(value):
    """``{old: new}`` from a dict or the CLI's ``"255=1,128=2"``; None stays None.

    >>> parse_mask_map("255=1, 128=2")
    {255: 1, 128: 2}
    """
    if value is None:
        return None
    if isinstance(value, str):
        pairs = {}
        for part in value.replace(" ", ",").split(","):
            if not part:
                continue
            key, sep, new = part.partition("=")
            if not sep or not _is_int_text(key) or not _is_int_text(new):
                raise ParameterError(f"--mask-map (mask_map) must be OLD=NEW pairs of integers separated "
                                     f"by commas, such as '255=1' or '1=0,2=1', got {value!r}")
            pairs[int(key)] = int(new)
        value = pairs
    if not isinstance(value, Mapping):
        raise ParameterTypeError(f"mask_map must be a dict {{old: new}} or a string such as '255=1', "
                                 f"got {type(value).__name__}")
    for key, new in value.items():
        if not is_int(key) or not is_int(new):
            raise ParameterTypeError(f"mask_map must map integers to integers, got {key!r}: {new!r}")
    if not value:
        raise ParameterError("mask_map (--mask-map) is empty; give OLD=NEW pairs such as '255=1'")
    return {int(key): int(new) for key, new in value.items()}


def _is_int_text(text: str) -> bool:
    return re.fullmatch(r"\s*-?[0-9]+\s*", text) is not None


def _masks_beside_images(paths, source, masks, mask_suffix):
    """(image paths, candidate mask paths) when the mask folder holds images too.

    With ``--masks`` naming the image folder (or one inside it), the files
    named with ``mask_suffix`` are masks and not images; without a suffix the
    masks cannot be told apart, unless the mask folder is a subfolder.
    """
    candidates = list_images(masks)[0]
    real = {os.path.realpath(p) for p in candidates}
    shared = [p for p in paths if os.path.realpath(p) in real]
    if not shared:
        return paths, candidates
    if mask_suffix:
        candidates = [p for p in candidates if stem(p).endswith(mask_suffix)]
    elif len(shared) == len(paths):
        suffix, _ = companion_masks(paths)
        example = suffix or "_mask"
        raise ParameterError(
            f"--masks {masks!r} holds the images of {source!r} themselves; give --mask-suffix to tell "
            f"the masks apart (mask_suffix= in Python), e.g. {_option('--mask-suffix', example)} for x{example}.png "
            "beside x.png")
    taken = {os.path.realpath(p) for p in candidates}
    return [p for p in paths if os.path.realpath(p) not in taken], candidates


def _refuse_mixed_masks(paths, source) -> None:
    """Stop when a folder's files come in pairs ``x.png`` and ``x_mask.png``: masks among images."""
    suffix, pairs = companion_masks(paths)
    if not pairs:
        return
    image, mask = pairs[0]
    raise ParameterError(
        f"{len(pairs)} of the {len(paths)} files in {source!r} look like masks of the others "
        f"(named <stem>{suffix}, e.g. {os.path.basename(mask)!r} beside {os.path.basename(image)!r}): "
        f"build them as masks with --masks {source} {_option('--mask-suffix', suffix)} "
        f"(masks={source!r}, mask_suffix={suffix!r}); to build every file as an image, give a glob "
        f"such as {os.path.join(source, '**', '*')!r}")


def _option(flag: str, value: str) -> str:
    """``--flag value`` as a shell takes it (``--flag=-value`` when the value starts with -)."""
    return f"{flag}={value}" if value.startswith("-") else f"{flag} {value}"


def _problems_error(problems, source):
    """One error listing every problem of the header pass (the first MAX_PROBLEMS)."""
    if len(problems) == 1:
        return problems[0]
    kind = ImageReadError if all(isinstance(p, ImageReadError) for p in problems) else ParameterError
    lines = [str(p) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_PROBLEMS} more")
    return kind(f"{len(problems)} problems with the files of {source!r} (nothing was written):\n  "
                + "\n  ".join(lines))


def _sample_labels(mask_images, problems):
    """Label values and pixel counts of up to 16 masks spread over the list (at most 512 MiB)."""
    headers = mask_images.headers
    picks = sorted(set(np.linspace(0, len(headers) - 1, min(len(headers), _SAMPLE_MASKS)).round().astype(int)))
    counts, read, used = LabelCounts(), 0, 0
    for position in picks:
        header = headers[position]
        if used + header.nbytes > _SAMPLE_BYTES:
            continue
        try:
            counts.add(np.asarray(header._copy()[...]))
        except ImageReadError as exc:
            problems.append(exc)
            continue
        read, used = read + 1, used + header.nbytes
    totals = counts.as_dict()
    return {"values": list(totals), "counts": list(totals.values()), "masks_read": read,
            "masks": len(headers)}


def _labels_text(values, counts, share=False, limit=12) -> str:
    """The most frequent labels first (the majority label must show among the first ``limit``)."""
    total = max(sum(counts), 1)
    values, counts = zip(*sorted(zip(values, counts), key=lambda vc: -vc[1])) if values else ((), ())
    shown = [f"{v} ({100 * c / total:.1f}%)" if share else f"{v} ({c:,} px)" for v, c in zip(values, counts)]
    more = f" ... {len(values)} values in all" if len(values) > limit else ""
    return ", ".join(shown[:limit]) + more


def _warn_about_axes(header, spatial_ndim) -> None:
    message = axes_warning(header.shape, spatial_ndim, repr(header.path))
    if message:
        warn(message)


def _warn_about_masks(mask_paths, labels) -> None:
    jpeg = [p for p in mask_paths if p.lower().endswith((".jpg", ".jpeg"))]
    if jpeg:
        warn(f"{len(jpeg)} of the {len(mask_paths)} masks are JPEG files, e.g. {jpeg[0]!r}: JPEG is lossy and "
             "puts values between the labels (a 0/255 mask becomes many labels); save masks as PNG or TIFF. "
             "--mask-map (mask_map=) replaces label values, e.g. --mask-map 255=1")
    if labels is not None and len(labels["values"]) > LABEL_WARNING:
        warn(f"the masks hold {len(labels['values'])} distinct values ({labels['masks_read']} of "
             f"{labels['masks']} masks read), more than the {LABEL_WARNING} a label map usually has: are "
             "they images, or masks saved lossy (JPEG)? Save masks as PNG or TIFF; --mask-map (mask_map=) "
             "replaces label values, e.g. --mask-map 255=1")


def _relative(paths, root) -> list:
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]


def _check_output(output: str) -> None:
    """Fail before the first pass on an output that can never be written."""
    if os.path.isdir(output):
        raise IsADirectoryError(errno.EISDIR, "the output is a directory; give a file name such as "
                                              "OUT.h5", output)
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "the folder of the output does not exist", folder)


def _size(nbytes: int) -> str:
    """``1.23 GB``, ``45.6 MB``, ``789 kB``: decimal units, three significant figures."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def _plan(source, layout, tile, images, mask_images, shapes, spec, mask_dtype, report, per_image, ranges,
          outputs, chosen, listing, root, labels) -> dict:
    decoded = int(sum(h.nbytes for h in images.headers))
    if mask_images is not None:
        decoded += int(sum(h.nbytes for h in mask_images.headers))
    return {
        "source": source, "images": len(images), "layout": layout,
        "tile": None if tile is None else [int(t) for t in tile],
        "dtype": spec.dtype.name, "channels": spec.channels, "channel_axis": bool(spec.channel_axis),
        "shape_min": shapes.min(axis=0).tolist(),
        "shape_median": np.median(shapes, axis=0).astype(int).tolist(),
        "shape_max": shapes.max(axis=0).tolist(),
        "mask_dtype": None if mask_dtype is None else mask_dtype.name,
        "masks": None if report is None else {key: report[key] for key in report},
        "mask_labels": labels,
        "skipped": {"files": _relative(listing.skipped, root), "hidden": listing.hidden},
        "stacks": [h.path for h in images.headers if h.ignored_pages > 0],
        "ignored_axes": "".join(sorted({a for h in images.headers if h.ignored_pages > 0 for a in h.ignored_axes})),
        "decoded_bytes": decoded,
        "stored_bytes": int(per_image.sum()),
        "overhead": round(float(per_image.sum()) / max(decoded, 1), 3),
        "outputs": [{"path": outputs[k], "images": [int(ranges[k][0]), int(ranges[k][1])],
                     "stored_bytes": int(per_image[ranges[k][0]:ranges[k][1]].sum())} for k in chosen],
        "shards": len(ranges),
    }


def _plan_text(plan: dict, dry_run: bool) -> str:
    channels = f"{plan['channels']} channel(s)" + ("" if plan["channel_axis"] else " (no channel axis)")
    lines = [f"{plan['images']} images in {plan['source']!r}: {channels} of {plan['dtype']}, "
             f"shapes min {plan['shape_min']}, median {plan['shape_median']}, max {plan['shape_max']}"]
    skipped = plan["skipped"]
    if skipped["files"] or skipped["hidden"]:
        lines.append(f"skipped {describe_skipped(skipped['files'], skipped['hidden'])}")
    if plan["mask_dtype"] is not None:
        lines.append(f"masks: {plan['images']} paired by stem ({plan['mask_dtype']})")
    labels = plan["mask_labels"]
    if labels is not None and labels["masks_read"]:
        sample = "" if labels["masks_read"] == labels["masks"] else f" in {labels['masks_read']} of {labels['masks']} masks"
        lines.append(f"mask labels{sample}: {_labels_text(labels['values'], labels['counts'])}")
    if plan["stacks"]:
        axes = plan["ignored_axes"]
        why = [f"pages along TIFF axis {a} after the first are not read" for a in axes if a != "Z"]
        if "Z" in axes:
            why.insert(0, "--spatial-ndim 3 reads their z slices as volumes")
        lines.append(f"{len(plan['stacks'])} multi-page TIFF(s), e.g. {plan['stacks'][0]!r}: first page only "
                     f"({'; '.join(why)})")
    report = plan["masks"]
    if report is not None:
        for key, what in (("missing", "image(s) without a mask, left out"),
                          ("ambiguous", "image(s) with several masks, left out"),
                          ("shared", "mask(s) each named by several images, those images left out"),
                          ("unclaimed", "mask(s) matching no image, ignored")):
            if report[key]:
                shown = [p if isinstance(p, str) else p[0] for p in report[key][:5]]
                lines.append(f"{len(report[key])} {what}: {shown}{' ...' if len(report[key]) > 5 else ''}")
        if report["hint"]:
            lines.append(report["hint"])
    tile = "" if plan["tile"] is None else f" with tiles {'x'.join(map(str, plan['tile']))}"
    lines.append(f"about {_size(plan['stored_bytes'])} in layout {plan['layout']!r}{tile} "
                 f"({_size(plan['decoded_bytes'])} of decoded pixels: "
                 f"{plan['stored_bytes'] / max(plan['decoded_bytes'], 1):.2f}x stored)")
    for entry in plan["outputs"]:
        a, b = entry["images"]
        lines.append(f"  {entry['path']}: images {a}..{b - 1}, about {_size(entry['stored_bytes'])}")
    if dry_run:
        lines.append("dry run: nothing written")
    return "\n".join(lines)
