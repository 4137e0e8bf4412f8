"""Every process model: a real DataLoader matrix checked batch by batch against numpy.

multiprocessing_context {fork, spawn, forkserver} x num_workers {0, 2} x
persistent_workers {False, True}, two epochs each. torch accepts neither a
context nor persistent workers without worker processes, so the
``num_workers=0`` cells run in the main process whatever the other two say.
The main process reads first, so forked workers inherit open handles and
must notice the new pid and open their own.
"""

import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lazypatch import ImageStore, PatchDataset, write_store
from lazypatch.testing import arange_image, patch_oracle
from lazypatch.testing.internals import store_handles

SHAPES = [(37, 45), (20, 64), (64, 21), (9, 9)]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("proc")
    images = [arange_image(s + (2,), np.int16, start=-3000 + 1500 * k) for k, s in enumerate(SHAPES)]
    masks = [(img[..., 1] % 3).astype(np.uint8) for img in images]
    write_store(folder / "s.h5", images, masks=masks, tile=16, progress=False)
    return str(folder / "s.h5"), images, masks


def check_batch(dataset, batch, images, masks):
    flat = batch["index"].numpy()
    ids, origins = dataset.index.locate(flat)
    assert np.array_equal(batch["image_id"].numpy(), ids)
    assert np.array_equal(batch["origin"].numpy(), origins)
    for j in range(len(flat)):
        expected = patch_oracle(images[ids[j]], origins[j], dataset.patch_size, -7)
        assert np.array_equal(batch["image"][j].numpy(), np.moveaxis(expected, -1, 0))
        assert np.array_equal(batch["mask"][j].numpy(), patch_oracle(masks[ids[j]], origins[j],
                                                                       dataset.patch_size, 0))
    return flat


@pytest.mark.slow
@pytest.mark.system
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_dataloader_matrix(source, context, workers, persistent):
    path, images, masks = source
    dataset = PatchDataset(path, (12, 10), stride=(7, 9), edge="pad", pad_value=-7)
    dataset[0]  # the main process opens its handles before any fork
    options = dict(batch_size=9, shuffle=True, generator=torch.Generator().manual_seed(3))
    if workers:
        options.update(num_workers=workers, multiprocessing_context=context,
                       persistent_workers=persistent)
    loader = DataLoader(dataset, **options)
    for _ in range(2):
        seen = np.concatenate([check_batch(dataset, batch, images, masks) for batch in loader])
        assert np.array_equal(np.sort(seen), np.arange(len(dataset)))  # every patch once per epoch


@pytest.mark.system
def test_fork_reopens_in_the_child(source):
    path, images, _ = source
    store = ImageStore(path, io="mmap")
    parent = store.read(0)
    pid = os.fork()
    if pid == 0:  # the child: inherited handles belong to the parent
        code = 0
        try:
            handles = store_handles(store)
            ok = handles.pid == os.getpid() and np.array_equal(store.read(2), images[2])
            code = 0 if ok else 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert np.array_equal(parent, images[0]) and np.array_equal(store.read(1), images[1])


def test_pickles_carry_no_handles(source):
    path, images, _ = source
    dataset = PatchDataset(path, 8)
    before = pickle.dumps(dataset)
    dataset.read_batch(np.arange(len(dataset)))
    after = pickle.dumps(dataset)
    for blob in (before, after):
        assert len(blob) < 8000 and b"h5py" not in blob and b"mmap" not in blob
        clone = pickle.loads(blob)
        assert np.array_equal(clone[5]["image"].numpy(), dataset[5]["image"].numpy())
    with dataset:
        dataset[0]
    with pytest.raises(ValueError, match="is closed"):
        dataset[0]
    dataset.close()  # twice: harmless
