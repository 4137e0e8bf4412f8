"""Two real processes with torch.distributed (gloo, loopback), each with a DataLoader
of 2 workers, over PatchSampler (rank from the process group) and over torch's
DistributedSampler: together they cover every patch, with at most R - 1 repeats.

Matrix: 2 ranks x sampler {PatchSampler, DistributedSampler} x 2 workers each, epoch 1.
"""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler

from lazypatch import PatchDataset, PatchSampler, write_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, store_path, out_path):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        dataset = PatchDataset(store_path, 8, stride=6, edge="shift")
        results = {}
        for name, sampler in (("lazypatch", PatchSampler(dataset, seed=3)),
                              ("torch", DistributedSampler(dataset, seed=3))):
            assert getattr(sampler, "rank", rank) == rank
            sampler.set_epoch(1)
            loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=2)
            seen = [int(i) for batch in loader for i in batch["index"]]
            gathered = [None] * world
            dist.all_gather_object(gathered, seen)
            results[name] = gathered
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump({"results": results, "length": len(dataset)}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.system
def test_two_ranks_cover_every_patch(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40 + 3 * k, 50, 3), dtype=np.uint8) for k in range(5)]
    store = write_store(tmp_path / "ddp.h5", images, progress=False)
    out = tmp_path / "result.json"
    mp.spawn(_rank_main, args=(2, _free_port(), store.path, str(out)), nprocs=2, join=True)
    data = json.loads(out.read_text())
    length = data["length"]
    for name, per_rank in data["results"].items():
        merged = sum(per_rank, [])
        assert set(merged) == set(range(length)), name
        assert len(merged) - length <= 1, name
        assert len(per_rank[0]) == len(per_rank[1]), name
    torch.manual_seed(0)
