"""``lazypatch bench [STORE]``: how fast this machine reads random patches of a store.

Every method reads the same random grid patches (the same flat indices, in
the same batches of ``--batch``). The repetitions interleave the methods,
each repetition starting one method later, and every figure is the median
over repetitions, so the ratios are measured side by side in one run. Before
anything is timed, each method's last batch is compared with
``ImageStore.read_regions``.

Warm (the store in the page cache and mapped, ``ImageStore.preload()``):

* ``read_batch``: ``dataset.read_batch(indices)``, one dict of tensors;
* ``DataLoader (default collate)``: ``DataLoader(dataset, batch_size=B)`` in
  this process; with ``--workers N`` also with N persistent worker processes
  (timed after the other rows: idle workers slow them);
* ``per-patch loop (RAM)``: ``out[k] = image[y:y+p, x:x+p]`` over the images
  read into RAM beforehand, the baseline of ``x loop``;
* ``raw copy``: one ``np.copyto`` of a batch's bytes, the memory's limit
  (``x raw copy``).

Cold (``--cold``): each repetition of a cold method runs in a fresh Python
process that uses only the public API, after evicting the store from the
page cache (``fsync`` + ``POSIX_FADV_DONTNEED``, checked with ``RWF_NOWAIT``
probes; this process closes its handles first, since mapped pages cannot
be evicted):

* ``read_batch, cold``: ``PatchDataset(ImageStore(STORE), ...).read_batch``;
* ``raw pread, cold, 1 thread`` / ``8 threads``: ``os.preadv`` of patch-sized
  extents at random page-aligned offsets of the file, the disk's limit
  (``x raw pread``: against the better of the two).

Without STORE, a synthetic store of ``--size-gb`` random RGB uint8 512x512
images is written to a temporary folder and removed afterwards. The
comparisons with other libraries, and the memory, overhead, build and
sampling figures, are scripts in ``tests/benchmarks/`` of the source
repository.
"""

from __future__ import annotations

from ._args import int_list


def add_arguments(parser) -> None:
    parser.add_argument("store", nargs="?",
                        help="a store file (default: a synthetic store of --size-gb, removed afterwards)")
    parser.add_argument("--patch", type=int_list, default=64, help="patch size (default 64)")
    parser.add_argument("--stride", type=int_list, help="grid stride (default: the patch size)")
    parser.add_argument("--batch", type=int, default=256, help="patches per batch (default 256)")
    parser.add_argument("--batches", type=int, default=40, help="batches per repetition (default 40)")
    parser.add_argument("--repeats", type=int, default=7, help="repetitions; figures are medians (default 7)")
    parser.add_argument("--workers", type=int, default=0,
                        help="also a DataLoader with this many persistent workers (default 0: none)")
    parser.add_argument("--cold", action="store_true",
                        help="also read with the store evicted from the page cache, in fresh processes")
    parser.add_argument("--only", help="comma-separated substrings of method names: run only those "
                                       "(the loop, raw copy and raw pread baselines always run)")
    parser.add_argument("--json", dest="json_path", metavar="FILE", help="also write the results here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--size-gb", type=float, default=0.5, help="synthetic store size (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="of the random patches and synthetic images")


def run(args) -> int:
    from ._bench import bench

    return bench(args)
