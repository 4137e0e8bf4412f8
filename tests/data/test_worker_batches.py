"""Batches made in DataLoader workers and handed over in slots (NOTE [worker batches]).

Matrix: start method {fork, spawn, forkserver} x persistent workers {no, yes}
x pin_memory {no, yes}, every batch of two epochs kept in a list and compared
with the single-process read at the end (a reused slot must never overwrite a
batch a user holds); a transform in the workers; the torch path when turned
off; resuming mid-epoch from a sampler's state; a worker killed mid-epoch
(torch's error, and no shared memory left once the batches are dropped);
slots reused when batches are dropped.
"""

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lazypatch import PatchDataset, PatchSampler, SeededTransform, write_store
from lazypatch.testing.internals import worker_batch_mappings, worker_batches_enabled

pytestmark = [pytest.mark.skipif(not worker_batches_enabled(), reason="needs Linux memfd"), pytest.mark.system]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 255, (90 + 7 * k, 120 - 5 * k, 3), dtype=np.uint8) for k in range(6)]
    masks = [rng.integers(0, 4, image.shape[:2], dtype=np.uint8) for image in images]
    path = tmp_path_factory.mktemp("workers") / "s.h5"
    write_store(path, images, masks=masks, progress=False).close()
    return str(path)


def _expected(dataset, index):
    batch = dataset.read_batch(index)
    return {key: value.clone() for key, value in batch.items()}


def _check(dataset, batches):
    for batch in batches:
        assert type(batch) is dict
        expected = _expected(dataset, batch["index"])
        assert sorted(batch) == sorted(expected)
        for key in expected:
            assert torch.equal(batch[key], expected[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("persistent", [False, True], ids=["fresh workers", "persistent workers"])
@pytest.mark.parametrize("pin_memory", [False, True], ids=["pageable", "pin_memory"])
def test_every_batch_equals_the_single_process_read(store_path, context, persistent, pin_memory):
    dataset = PatchDataset(store_path, patch_size=24, stride=20, edge="shift")
    loader = DataLoader(dataset, batch_size=16, shuffle=True, num_workers=2, multiprocessing_context=context,
                        persistent_workers=persistent, pin_memory=pin_memory,
                        generator=torch.Generator().manual_seed(0))
    held = [batch for _ in range(2) for batch in loader]  # every batch kept to the end
    assert sum(len(b["index"]) for b in held) == 2 * len(dataset)
    _check(dataset, held)
    # slots came from the workers, not torch's shared-memory copies
    assert pin_memory or all(not b["image"].is_shared() for b in held)
    del loader


def test_a_transform_in_the_workers_gives_the_in_process_samples(store_path):
    def augment(sample):
        generator = sample["generator"] if "generator" in sample else None
        sample = dict(sample)
        sample["image"] = sample["image"].flip(-1).float() / 255
        sample["weight"] = float(sample["index"] % 3)
        return sample

    dataset = PatchDataset(store_path, patch_size=16, transform=augment)
    loader = DataLoader(dataset, batch_size=8, num_workers=2)
    held = list(loader)
    in_process = DataLoader(dataset, batch_size=8, num_workers=0)
    for got, want in zip(held, in_process):
        assert sorted(got) == sorted(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_seeded_augmentation_is_the_same_for_any_number_of_workers(store_path):
    def jitter(sample, generator):
        sample = dict(sample)
        sample["image"] = sample["image"].float() + torch.rand(sample["image"].shape, generator=generator)
        return sample

    dataset = PatchDataset(store_path, patch_size=16, transform=SeededTransform(jitter, seed=3))
    one = torch.cat([b["image"] for b in DataLoader(dataset, batch_size=8, num_workers=0)])
    two = torch.cat([b["image"] for b in DataLoader(dataset, batch_size=8, num_workers=2)])
    assert torch.equal(one, two)


def test_turned_off_it_is_torchs_path(store_path, tmp_path):
    code = (
        "import torch, sys\n"
        "from torch.utils.data import DataLoader\n"
        "from lazypatch import PatchDataset\n"
        "if __name__ == '__main__':\n"
        f"    ds = PatchDataset({store_path!r}, patch_size=24)\n"
        "    batches = list(DataLoader(ds, batch_size=16, num_workers=2))\n"
        "    ok = all(torch.equal(b['image'], ds.read_batch(b['index'])['image']) for b in batches)\n"
        "    print(ok, all(b['image'].is_shared() for b in batches))\n"
    )
    script = tmp_path / "off.py"
    script.write_text(code)
    env = dict(os.environ, LAZYPATCH_WORKER_BATCHES="0")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_resuming_mid_epoch_gives_the_remaining_batches(store_path):
    dataset = PatchDataset(store_path, patch_size=16)
    sampler = PatchSampler(dataset, seed=5)
    sampler.set_epoch(1)
    loader = DataLoader(dataset, batch_size=16, sampler=sampler, num_workers=2)
    full = [b["index"].clone() for b in loader]
    consumed = 3
    resumed = PatchSampler(dataset, seed=5)
    resumed.load_state_dict(sampler.state_dict(consumed=consumed * 16))
    rest = [b["index"] for b in DataLoader(dataset, batch_size=16, sampler=resumed, num_workers=2)]
    assert len(rest) == len(full) - consumed
    for got, want in zip(rest, full[consumed:]):
        assert torch.equal(got, want)


def test_dropped_batches_free_their_slots(store_path):
    _wait_for(lambda: worker_batch_mappings() == 0)  # earlier tests' workers are gone
    dataset = PatchDataset(store_path, patch_size=16)
    loader = DataLoader(dataset, batch_size=8, num_workers=2, persistent_workers=True)
    for _ in range(3):
        for batch in loader:
            batch["image"].sum()
    # two workers, each with its batches in flight (prefetch 2) plus the one being held
    assert worker_batch_mappings() <= 2 * 4
    del loader, batch
    _wait_for(lambda: worker_batch_mappings() == 0)
    _wait_for(lambda: _slot_mappings() == 0)


def _slot_mappings() -> int:
    """Mappings of worker slots in this process (memfd files named lazypatch-batch-N)."""
    with open("/proc/self/maps") as f:
        return sum("memfd:lazypatch-batch" in line for line in f)


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert condition()


def test_a_killed_worker_raises_and_leaves_no_shared_memory(store_path):
    dataset = PatchDataset(store_path, patch_size=16)
    _wait_for(lambda: _slot_mappings() == 0)  # earlier tests' workers are gone
    loader = DataLoader(dataset, batch_size=4, num_workers=2, timeout=60)
    before = set(multiprocessing.active_children())
    iterator = iter(loader)
    workers = [process for process in multiprocessing.active_children() if process not in before]
    assert len(workers) == 2
    held = [next(iterator) for _ in range(3)]
    with pytest.raises(RuntimeError, match="killed by signal|exited unexpectedly"):
        os.kill(workers[0].pid, signal.SIGKILL)  # torch's SIGCHLD handler may raise here
        for _ in range(len(loader)):
            held.append(next(iterator))
    _check(dataset, held)
    del iterator, loader, held
    _wait_for(lambda: worker_batch_mappings() == 0)
    _wait_for(lambda: _slot_mappings() == 0)  # the memory of an unnamed file goes with its last mapping
