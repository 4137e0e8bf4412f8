"""SIGTERM and SIGHUP while writing clean up like SIGINT; temporaries of dead writers are removed.

Real processes, stopped mid-build (a generator of images that sleeps, or a
build whose decoding sleeps), while their hidden temporary file exists.

Matrix: write_store in a script x {SIGTERM, SIGHUP} (exit 143 / 129, nothing
left); ``lazypatch build`` x {SIGTERM, SIGHUP} (one line on stderr, exit
143 / 129, nothing left); handlers restored afterwards, a handler of the
caller's kept and called, a writer in another thread; stale temporaries
{dead pid: removed, live pid: kept, another host: kept, old name without a
pid: kept}, and the files of a SIGKILLed writer removed by the next build.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from lazypatch import write_store
from lazypatch.store.publish import temporary_path

pytestmark = pytest.mark.system

SLOW_WRITER = r"""
import sys, time
import numpy as np
from lazypatch import write_store

def images():
    for k in range(200):
        yield np.full((64, 64, 3), k, np.uint8)
        time.sleep(0.05)

write_store(sys.argv[1], images(), progress=False)
print("finished", flush=True)
"""

SLOW_BUILD = r"""
import sys, time
import lazypatch.ingest.files as files
read = files.FileImage.__getitem__
def slow(self, key):
    time.sleep(0.05)
    return read(self, key)
files.FileImage.__getitem__ = slow
from lazypatch.cli import main
sys.exit(main(["build", sys.argv[1], sys.argv[2], "--no-progress", "--workers", "0", "--masks", sys.argv[3]]))
"""


def wait_for_temporary(folder, child, timeout=60):
    """Wait until the child has a temporary file beside its target (it is mid-build)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(name.endswith(".tmp") for name in os.listdir(folder)):
            time.sleep(0.3)  # some images into the build
            return
        assert child.poll() is None, child.communicate()
        time.sleep(0.02)
    pytest.fail("the child never started writing")


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


SIGNALS = [pytest.param(signal.SIGTERM, 143, id="SIGTERM"), pytest.param(signal.SIGHUP, 129, id="SIGHUP")]


@pytest.mark.parametrize("signum, code", SIGNALS)
def test_write_store_cleans_up_on_a_signal(tmp_path, signum, code):
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path / "s.h5")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_temporary(tmp_path, child)
    assert any(name.endswith(".tmp.pixels.spool") for name in os.listdir(tmp_path))  # a generator spools
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert "finished" not in out and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("signum, code", SIGNALS)
def test_the_command_says_it_stopped_and_exits_128_plus_the_signal(tmp_path, signum, code):
    src, masks = tmp_path / "src", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    for k in range(60):
        Image.fromarray(np.full((48, 64, 3), k, np.uint8)).save(src / f"{k:02d}.png")
        Image.fromarray(np.full((48, 64), k % 3, np.uint8)).save(masks / f"{k:02d}.png")
    child = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(src), str(tmp_path / "s.h5"), str(masks)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_temporary(tmp_path, child)
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    name = signal.Signals(signum).name
    assert err.strip().splitlines() == [f"lazypatch build: stopped by {name}; temporary files removed"]
    assert sorted(os.listdir(tmp_path)) == ["masks", "src"]


def test_handlers_are_restored_and_a_callers_handler_is_kept(tmp_path):
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    write_store(tmp_path / "a.h5", [np.zeros((8, 8), np.uint8)], progress=False).close()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL

    received = []

    def images():
        yield np.zeros((8, 8), np.uint8)
        os.kill(os.getpid(), signal.SIGTERM)  # the caller's handler takes it; the write goes on
        yield np.ones((8, 8), np.uint8)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        store = write_store(tmp_path / "b.h5", images(), progress=False)
        assert len(store) == 2 and received == [signal.SIGTERM]
        store.close()
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_writer_in_another_thread(tmp_path):
    errors = []

    def write():
        try:
            write_store(tmp_path / "t.h5", [np.zeros((8, 8), np.uint8)], progress=False).close()
        except BaseException as exc:  # pragma: no cover - the failure shown below
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert errors == [] and (tmp_path / "t.h5").exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, capfd):
    target = tmp_path / "s.h5"
    mine = os.path.basename(temporary_path(target))  # .s.h5.<pid>-<host>.<random>.tmp
    assert mine.startswith(f".s.h5.{os.getpid()}-") and mine.endswith(".tmp")
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        def named(pid, host=None, tail=""):
            name = mine.replace(f".{os.getpid()}-", f".{pid}-")
            if host is not None:
                name = name.replace(name.split(".")[3].split("-")[1], host)
            (tmp_path / (name + tail)).write_bytes(b"x" * 10)
            return name + tail

        stale = [named(dead), named(dead, tail=".pixels.spool")]
        kept = [named(live.pid), named(live.pid, tail=".masks.spool"), named(dead, host="00000000")]
        kept += [".s.h5.0123456789ab.tmp",  # an older lazypatch's name: no pid, never removed
                 ".other.h5." + stale[0][len(".s.h5."):]]  # another target's
        for name in kept[-2:]:
            (tmp_path / name).write_bytes(b"x")
        write_store(target, [np.zeros((8, 8), np.uint8)], progress=False).close()
        err = capfd.readouterr().err
        assert f"removed 2 temporary file(s) of 's.h5'" in err and f"process(es) {dead} no longer run" in err
        assert all(name in err for name in stale)
        assert sorted(os.listdir(tmp_path)) == sorted(kept + ["s.h5"])
        # nothing stale: nothing said
        write_store(target, [np.zeros((8, 8), np.uint8)], overwrite=True, progress=False).close()
        assert capfd.readouterr().err == ""
    finally:
        live.kill()
        live.wait()


def test_the_next_build_removes_what_a_killed_writer_left(tmp_path, capfd):
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path / "s.h5")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_temporary(tmp_path, child)
    child.send_signal(signal.SIGKILL)  # no clean-up possible
    child.communicate(timeout=60)
    left = leftovers(tmp_path)
    assert left and all(name.startswith(f".s.h5.{child.pid}-") for name in left)
    write_store(tmp_path / "s.h5", [np.zeros((8, 8), np.uint8)], progress=False).close()
    err = capfd.readouterr().err
    assert f"removed {len(left)} temporary file(s) of 's.h5'" in err
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]
