"""Inference across ranks: two real processes with torch.distributed (gloo, loopback) stitch
a store's predictions, each over the whole images ``PatchSampler(by_image=True)`` gives it,
into its own ``PatchAggregator(out=...)`` file; ``merge_predictions`` joins them.

Matrix: 2 ranks x a DataLoader each (rank and world from the process group) x
a deterministic elementwise "model", gaussian blending, images of uneven sizes
with spacings. Checked: the merged file equals a single-process run's
(values, names, image ids, attributes with geometry); each rank finishes its
images out of core (at most one image in flight after every batch); the ranks'
lengths differ, and sum to the dataset's.
"""

import json
import os
import socket

import h5py
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from lazypatch import PatchAggregator, PatchDataset, PatchSampler, merge_predictions, write_store

SHAPES = [(90, 60), (30, 40), (64, 64), (20, 100), (50, 35), (41, 77), (100, 100)]  # 194 patches: 98 + 96


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def predict(images):
    """Elementwise, so that a patch's prediction does not depend on the batch it came in."""
    images = images.float()
    return torch.cat([torch.sigmoid((images[:, :1] - 100) / 40), images[:, 1:] / 255], dim=1)


def stitch(dataset, sampler, out, image_ids=None):
    """Predict and aggregate the sampler's patches; the largest number of images in flight."""
    loader = DataLoader(dataset, batch_size=16, sampler=sampler)
    most = 0
    with PatchAggregator(dataset.store, dataset.patch_size, stride=dataset.stride, edge=dataset.edge,
                         mode="gaussian", image_ids=image_ids, out=out) as aggregator:
        for batch in loader:
            aggregator.add(predict(batch["image"]), batch["image_id"], batch["origin"])
            most = max(most, aggregator.in_flight)
    return most


def _rank_main(rank, world, port, store_path, folder):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dataset = PatchDataset(store_path, 16, stride=12, edge="shift")
        sampler = PatchSampler(dataset, shuffle=False, by_image=True)  # rank and world from the group
        out = os.path.join(folder, f"rank{rank}.h5")
        most = stitch(dataset, sampler, out, image_ids=sampler.image_ids)
        report = {"rank": sampler.rank, "length": len(sampler), "images": sampler.image_ids.tolist(),
                  "in_flight": most}
        reports = [None] * world
        dist.all_gather_object(reports, report)  # after the loop: the ranks' lengths differ
        if rank == 0:
            merge_predictions([os.path.join(folder, f"rank{r}.h5") for r in range(world)],
                              os.path.join(folder, "merged.h5"))
            with open(os.path.join(folder, "reports.json"), "w") as f:
                json.dump(reports, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def contents(path):
    with h5py.File(path, "r") as f:
        attrs = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
        tables = {k: f[k][()].tolist() for k in ("image_ids", "names", "name_offsets")}
        predictions = {k: (d[()], {a: np.asarray(v).tolist() for a, v in d.attrs.items()})
                       for k, d in f["predictions"].items()}
    return attrs, tables, predictions


@pytest.mark.slow
@pytest.mark.system
def test_two_ranks_stitch_what_one_process_does(tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, s + (3,), dtype=np.uint8) for s in SHAPES]
    geometry = [{"spacing": (0.5, 0.5 + k), "unit": "mm"} for k in range(len(SHAPES))]
    store = write_store(tmp_path / "store.h5", images, geometry=geometry, progress=False)
    mp.spawn(_rank_main, args=(2, _free_port(), store.path, str(tmp_path)), nprocs=2, join=True)

    dataset = PatchDataset(store.path, 16, stride=12, edge="shift")
    single_most = stitch(dataset, PatchSampler(dataset, shuffle=False), tmp_path / "single.h5")
    assert single_most <= 1

    reports = json.loads((tmp_path / "reports.json").read_text())
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["in_flight"] <= 1 for r in reports)  # whole images in grid order: finished as they end
    lengths = [r["length"] for r in reports]
    assert sum(lengths) == len(dataset) and lengths == [98, 96]  # unequal: not padded
    assert sorted(reports[0]["images"] + reports[1]["images"]) == list(range(len(SHAPES)))

    merged, single = contents(tmp_path / "merged.h5"), contents(tmp_path / "single.h5")
    assert merged[0] == single[0] and merged[1] == single[1]
    assert sorted(merged[2]) == sorted(single[2]) == [str(k) for k in range(len(SHAPES))]
    for key, (values, attrs) in single[2].items():
        assert np.array_equal(merged[2][key][0], values), key  # exactly: the same sums in the same order
        assert merged[2][key][1] == attrs, key
        assert json.loads(attrs["geometry"])["spacing"] == [0.5, 0.5 + int(key)]
