"""Sharded builds as a manifest, on this machine and on a Dask LocalCluster.

Matrix: a LocalCluster of 2 one-thread worker processes (one per module) builds
2-D images with masks and statistics, and 3-D volumes, into shards and a
manifest; each equals the single-process build of the same files image for
image (pixels, masks, names, shapes, CRC tables). A worker killed with SIGKILL
while a shard's temporary file exists costs a retry, never a torn shard or a
leftover temporary. ``--append`` adds shards and a generation without touching
the old ones (a reader of the old manifest keeps reading them). A failed build
leaves the previous manifest and its shards as they were and removes its own
files. Two builds into one output: one wins, the other fails naming it. Bad
option combinations are ParameterErrors naming both.
"""

import glob
import os
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

from lazypatch import ImageStore, build
from lazypatch.cli import main
from lazypatch.errors import ImageReadError, ParameterError, StoreExistsError

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def photos(folder, count=12, seed=0, size=(90, 120)):
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for k in range(count):
        image = rng.integers(0, 255, size + (3,), dtype=np.uint8)
        Image.fromarray(image).save(folder / "images" / f"p{k:02d}.png")
        Image.fromarray((image[..., 0] > 128).astype(np.uint8) * 2).save(folder / "masks" / f"p{k:02d}.png")
    return folder / "images", folder / "masks"


def same_store(a, b):
    assert len(a) == len(b) and a.names == b.names
    np.testing.assert_array_equal(a.shapes, b.shapes)
    np.testing.assert_array_equal(a.table("crc32"), b.table("crc32"))
    for image_id in range(len(a)):
        shape = tuple(int(n) for n in a.shapes[image_id])
        origin = (0,) * len(shape)
        np.testing.assert_array_equal(a.read_region(image_id, origin, shape), b.read_region(image_id, origin, shape))
        if a.has_masks:
            np.testing.assert_array_equal(a.read_mask_region(image_id, origin, shape),
                                          b.read_mask_region(image_id, origin, shape))


def test_a_cluster_build_equals_a_single_process_build(tmp_path, client):
    images, masks = photos(tmp_path)
    single = build(images, tmp_path / "single.h5", masks=masks, stats=True, label_stats=True, progress=False)
    sharded = build(images, tmp_path / "out.h5", masks=masks, stats=True, label_stats=True, shards=4,
                    client=client, progress=False)
    assert len(sharded.paths) == 4
    assert all(os.path.dirname(p) == str(tmp_path / "out.h5.shards") for p in sharded.paths)
    same_store(single, sharded)
    with ImageStore(str(tmp_path / "out.h5")) as reopened:  # the manifest opens as one store
        same_store(single, reopened)
    assert not [n for n in os.listdir(tmp_path / "out.h5.shards") if n.startswith(".")]
    single.close()
    sharded.close()


def test_volumes_on_the_cluster(tmp_path, client):
    (tmp_path / "v").mkdir()
    rng = np.random.default_rng(1)
    for k in range(5):
        np.save(tmp_path / "v" / f"v{k}.npy", rng.integers(0, 4000, (9 + k, 20, 24), dtype=np.uint16))
    single = build(tmp_path / "v", tmp_path / "single.h5", spatial_ndim=3, progress=False)
    sharded = build(tmp_path / "v", tmp_path / "out.h5", spatial_ndim=3, shards=2, client=client, progress=False)
    same_store(single, sharded)
    single.close()
    sharded.close()


def test_a_sequential_sharded_build_writes_a_manifest_too(tmp_path):
    images, masks = photos(tmp_path)
    store = build(images, tmp_path / "out.h5", masks=masks, shard_size="100kB", progress=False)
    assert len(store.paths) > 1
    store.close()
    with ImageStore(str(tmp_path / "out.h5")) as reopened:
        assert len(reopened) == 12


def test_a_killed_worker_costs_a_retry_not_a_torn_shard(tmp_path, client):
    images, masks = photos(tmp_path, count=6, size=(1200, 1500))
    folder = tmp_path / "out.h5.shards"
    killed = []

    def kill_while_writing():
        deadline = time.time() + 120
        pids = client.run(os.getpid)
        while time.time() < deadline and not killed:
            if folder.exists() and any(n.endswith(".tmp") for n in os.listdir(folder)):
                worker, pid = sorted(pids.items())[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_while_writing)
    watcher.start()
    store = build(images, tmp_path / "out.h5", masks=masks, shards=3, client=client, progress=False)
    watcher.join()
    assert killed, "no shard's temporary file was seen"
    single = build(images, tmp_path / "single.h5", masks=masks, progress=False)
    same_store(single, store)
    assert not [n for n in os.listdir(folder) if n.startswith(".")]  # no temporary left
    single.close()
    store.close()
    client.wait_for_workers(2, timeout=60)


def test_append_adds_shards_and_a_generation(tmp_path, client):
    first, _ = photos(tmp_path / "a", count=5)
    second, _ = photos(tmp_path / "b", count=3, seed=1)
    out = tmp_path / "out.h5"
    build(first, out, shards=2, progress=False).close()
    old = ImageStore(str(out))
    old_shards = {p: os.stat(p).st_mtime_ns for p in old.paths}
    grown = build(second, out, append=True, client=client, shards=1, progress=False)
    assert len(grown) == 8 and grown.names[5:] == ["p00.png", "p01.png", "p02.png"]
    assert {p: os.stat(p).st_mtime_ns for p in old_shards} == old_shards  # never rewritten
    assert len(old) == 5  # a reader of the old manifest keeps its images
    old.read_region(4, (0, 0), (5, 5))
    old.close()
    grown.close()
    from lazypatch.store.manifest import read_manifest

    assert read_manifest(str(out)).generation == 2


def test_a_failed_build_leaves_the_previous_manifest_untouched(tmp_path):
    images, _ = photos(tmp_path / "a", count=4)
    out = tmp_path / "out.h5"
    build(images, out, shards=2, progress=False).close()
    before = sorted(os.listdir(tmp_path / "out.h5.shards")), out.read_bytes()
    bad, _ = photos(tmp_path / "b", count=4, seed=2)
    with open(bad / "p03.png", "r+b") as handle:  # a PNG whose pixel data is cut short
        handle.truncate(200)
    with pytest.raises((ImageReadError, ParameterError)):
        build(bad, out, append=True, shards=2, progress=False)
    assert (sorted(os.listdir(tmp_path / "out.h5.shards")), out.read_bytes()) == before


def test_two_builds_into_one_output_one_wins(tmp_path):
    images, _ = photos(tmp_path, count=4)
    out = tmp_path / "out.h5"
    errors = []

    def run():
        try:
            build(images, out, shards=2, progress=False).close()
        except StoreExistsError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 1 and str(out) in str(errors[0])
    with ImageStore(str(out)) as store:
        assert len(store) == 4
    assert len(glob.glob(str(tmp_path / "out.h5.shards" / "*.h5"))) == 2  # the loser's shards are gone


@pytest.mark.parametrize("options, message", [
    (dict(scheduler="local:2", workers=2, shards=2), r"--workers .* and --scheduler"),
    (dict(scheduler="local:2"), r"--scheduler .* give --shards N or --shard-size"),
    (dict(scheduler="local:2", shards=2, shard_index=0), r"--shard-index .* --scheduler"),
    (dict(scheduler="local:x", shards=2), r"--scheduler local:N needs N >= 1"),
    (dict(append=True, overwrite=True), r"--append .* --overwrite"),
])
def test_bad_options(tmp_path, options, message):
    images, _ = photos(tmp_path, count=2)
    with pytest.raises(ParameterError, match=message):
        build(images, tmp_path / "out.h5", progress=False, **options)


def test_append_to_a_single_store_is_refused(tmp_path):
    images, _ = photos(tmp_path, count=2)
    build(images, tmp_path / "out.h5", progress=False).close()
    with pytest.raises(ParameterError, match=r"--append .* adds shards to a manifest, and .* single store"):
        build(images, tmp_path / "out.h5", append=True, progress=False)


def test_the_command_line(tmp_path, capsys):
    images, _ = photos(tmp_path, count=6)
    assert main(["build", str(images), str(tmp_path / "out.h5"), "--shards", "2", "--scheduler", "local:2",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "a manifest of 2 shard(s)" in out and "MB/s" in out
    with ImageStore(str(tmp_path / "out.h5")) as store:
        assert len(store) == 6


def test_shards_built_one_by_one_join_by_the_manifest_command(tmp_path, capsys):
    images, _ = photos(tmp_path, count=6)
    out = tmp_path / "out.h5"
    for k in range(3):
        assert main(["build", str(images), str(out), "--shards", "3", "--shard-index", str(k), "--no-progress"]) == 0
    shards = sorted(glob.glob(str(tmp_path / "out.h5.shards" / "*.h5")), key=lambda p: p[-8:])
    assert main(["manifest", str(out)] + shards) == 0
    single = build(images, tmp_path / "single.h5", progress=False)
    with ImageStore(str(out)) as store:
        same_store(single, store)
    single.close()


def test_a_replaced_or_damaged_shard_is_named(tmp_path):
    from lazypatch.errors import StoreFormatError
    from lazypatch.store.manifest import read_manifest, verify_shards

    images, _ = photos(tmp_path, count=4)
    out = tmp_path / "out.h5"
    build(images, out, shards=2, progress=False).close()
    shard = read_manifest(str(out)).shards[1]
    import h5py

    with h5py.File(shard, "r") as f:
        offset = f["pixels"].id.get_offset() + 100
    with open(shard, "r+b") as handle:  # a flipped pixel byte: same size, same tables
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0xFF]))
    assert verify_shards(read_manifest(str(out))) == [shard]
    with open(shard, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(StoreFormatError, match=r"shard .*00001\.h5.* has .* bytes, the manifest says"):
        ImageStore(str(out))
    manifest = bytearray(out.read_bytes())
    for offset in range(0, len(manifest), max(1, len(manifest) // 300)):
        damaged = bytearray(manifest)
        damaged[offset] ^= 0x5A
        (tmp_path / "bad.h5").write_bytes(bytes(damaged))
        try:
            read_manifest(str(tmp_path / "bad.h5"))
        except StoreFormatError:
            pass
