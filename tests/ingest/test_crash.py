"""Crash safety: a builder killed with SIGKILL never leaves a torn store.

A child process rebuilds a store over an existing one (or over nothing) and
is killed at uniformly random moments across its whole build, and once while
it pauses between ``os.replace`` and the folder fsync. Afterwards the target
holds exactly the previous store (byte for byte), nothing (when there was
none), or the complete new store (it opens and ``verify`` passes) - never a
partial file.

Matrix: 22 kills at random moments, over a previous store or over nothing,
plus one between replace and fsync; a KeyboardInterrupt mid-build; a full
disk (a file-size limit) at 8 points of a build x layout {tiled,
contiguous, chunked}, and at 5 points of a sidecar.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lazypatch import ImageStore, write_store

CHILD = r"""
import sys, time
import numpy as np
import lazypatch.store.publish as w
from lazypatch import write_store

target, mode = sys.argv[1], sys.argv[2]
if mode == "pause":
    real = w.fsync_folder
    def paused(path):
        print("replaced", flush=True)
        time.sleep(60)
        real(path)
    w.fsync_folder = paused

def images():
    for k in range(48):
        yield np.full((384, 512, 3), k, np.uint8) + np.arange(512, dtype=np.uint8)[None, :, None]

def masks():
    for k in range(48):
        yield np.full((384, 512), k % 4, np.uint8)

print("start", flush=True)
write_store(target, images(), masks=masks(), tile=64, overwrite=True, progress=False)
print("done", flush=True)
"""


def run_child(target, mode="normal"):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(target), mode], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def check_outcome(target, previous):
    """'previous', 'nothing' or 'new'; fails on anything else."""
    if not os.path.exists(target):
        assert previous is None, "the previous store vanished"
        return "nothing"
    data = target.read_bytes()
    if previous is not None and data == previous:
        return "previous"
    store = ImageStore(target)
    assert len(store) == 48 and store.verify() == [], "a partial or damaged store at the target"
    assert int(store.read_region(47, (5, 0), (1, 1))[0, 0, 0]) == 47
    store.close()
    return "new"


@pytest.mark.slow
@pytest.mark.system
def test_sigkill_at_random_moments_never_tears_a_store(tmp_path):
    rng = np.random.default_rng(2024)
    target = tmp_path / "s.h5"
    # how long a build takes here, from the child's "start" to its "done"
    child = run_child(tmp_path / "timing.h5")
    assert child.stdout.readline().strip() == "start"
    began = time.perf_counter()
    assert child.stdout.readline().strip() == "done"
    duration = time.perf_counter() - began
    child.wait()
    child.stdout.close()
    outcomes = []
    for trial in range(22):
        previous = None
        if trial % 2 == 0:
            write_store(target, [np.full((30, 40), trial, np.uint16)], overwrite=True, progress=False)
            previous = target.read_bytes()
        elif os.path.exists(target):
            os.unlink(target)
        child = run_child(target)
        assert child.stdout.readline().strip() == "start"
        time.sleep(rng.uniform(0, duration * 1.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        outcomes.append(check_outcome(target, previous))
    # between os.replace and the folder fsync: the new store is already complete
    write_store(target, [np.ones((8, 8), np.uint8)], overwrite=True, progress=False)
    previous = target.read_bytes()
    child = run_child(target, "pause")
    assert child.stdout.readline().strip() == "start"
    assert child.stdout.readline().strip() == "replaced"
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert check_outcome(target, previous) == "new"
    assert set(outcomes) <= {"previous", "nothing", "new"}
    print("outcomes:", {o: outcomes.count(o) for o in set(outcomes)}, f"build {duration:.2f} s")
    leftovers = [name for name in os.listdir(tmp_path) if name.endswith(".tmp") or ".spool" in name]
    # SIGKILL allows no clean-up: temporaries stay, hidden and named after the target
    assert all(name.startswith(".s.h5.") for name in leftovers)


def test_interrupt_leaves_no_temporary_file(tmp_path):
    def images():
        yield np.zeros((64, 64), np.uint8)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_store(tmp_path / "s.h5", images(), progress=False)
    assert os.listdir(tmp_path) == []


FULL_DISK = r"""
import os, resource, sys
import numpy as np
from lazypatch import write_store
from lazypatch.filtering import foreground_filter

folder, layout = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
images = [rng.integers(0, 255, (300, 300, 3), dtype=np.uint8) for _ in range(4)]
masks = [rng.integers(0, 5, (300, 300), dtype=np.uint8) for _ in range(4)]
options = dict(masks=masks, layout=layout, label_stats=True, channel_stats=True, progress=False)
whole = write_store(os.path.join(folder, "whole.h5"), images, **options)
size = os.path.getsize(whole.path)
unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
# a file-size limit fails writes as a full disk does (EFBIG instead of ENOSPC): while images
# are added, and at each step of finishing (tables, statistics, metadata, close)
for limit in [size // 4, size // 2] + [size - k * 4096 for k in range(1, 7)]:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, unlimited))
    try:
        write_store(os.path.join(folder, "s.h5"), images, **options)
        print("written", limit)
    except OSError as exc:
        print("OSError", exc.errno)
    resource.setrlimit(resource.RLIMIT_FSIZE, (unlimited, unlimited))
for limit in (800, 1200, 1600, 2000, 2400):  # a sidecar (about 2.7 KB) failing at each step
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, unlimited))
    try:
        foreground_filter(whole, 8, threshold=0.3, path=os.path.join(folder, "big", "f.h5"))
        print("sidecar written", limit)
    except OSError as exc:
        print("sidecar OSError", exc.errno)
"""


@pytest.mark.system
@pytest.mark.parametrize("layout", ["tiled", "contiguous", "chunked"])
def test_a_full_disk_is_a_clean_error(tmp_path, layout):
    # after a failed write h5py's close raised again, and the half-closed file crashed the
    # interpreter when freed (NOTE [discarding on a full disk] in _format)
    (tmp_path / "big").mkdir()
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path), layout],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n") == ["OSError 27"] * 8 + ["sidecar OSError 27"] * 5 + [""]
    assert sorted(os.listdir(tmp_path)) == ["big", "whole.h5"]  # nothing half-written
    assert os.listdir(tmp_path / "big") == []
