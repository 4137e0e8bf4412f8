"""Tissue masks as foreground: ``upsampled_fractions``, ``foreground_filter(source="tissue")``,
``describe``/``lazypatch info`` and ``lazypatch index --from tissue``.

Matrix: hypothesis over image shapes, mask shapes (smaller and larger than
the image), patch, stride and edge (drop, shift, pad) against a brute-force
full-resolution upsampling, for the fractions and for the kept bits of small
stores (one and two shards); thresholds 0 and 1 at their bounds; a store
without tissue and an image without a mask (refused, nothing written); the
per-image tissue fraction in ``describe``, the text and JSON of ``info``;
the index command with ``--from tissue`` and its ``--source`` spelling.
"""

import json
import os

import h5py
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from lazypatch import ImageStore, PatchIndex, describe, write_store
from lazypatch.cli import main
from lazypatch.errors import ParameterError
from lazypatch.stats.foreground import foreground_filter, upsampled_fractions


def upsampled(mask, shape):
    (h, w), (height, width) = mask.shape, shape
    return np.asarray(mask, bool)[(np.arange(height) * h // height)[:, None], (np.arange(width) * w // width)[None, :]]


def brute_fractions(mask, shape, patch, stride, edge):
    """Every grid patch's mean of the full-resolution mask, outside pixels counting as 0, by loops."""
    full = upsampled(mask, shape)
    if edge == "drop" and (patch[0] > shape[0] or patch[1] > shape[1]):
        return np.zeros(0)
    index = PatchIndex([shape], patch, stride, edge)
    _, origins = index.locate(np.arange(len(index)))
    out = []
    for y0, x0 in origins.tolist():
        total = 0
        for y in range(y0, y0 + index.patch_size[0]):
            for x in range(x0, x0 + index.patch_size[1]):
                if 0 <= y < shape[0] and 0 <= x < shape[1] and full[y, x]:
                    total += 1
        out.append(total / (index.patch_size[0] * index.patch_size[1]))
    return np.array(out)


sides = st.integers(1, 24)
grids = st.tuples(st.tuples(sides, sides), st.tuples(st.integers(1, 30), st.integers(1, 30)),
                  st.tuples(st.integers(1, 9), st.integers(1, 9)), st.tuples(st.integers(1, 7), st.integers(1, 7)),
                  st.sampled_from(["drop", "shift", "pad"]))


@given(grid=grids, seed=st.integers(0, 2 ** 16))
@example(grid=((3, 5), (7, 2), (2, 2), (1, 1), "pad"), seed=0)  # more cells than pixels on an axis
@example(grid=((1, 1), (30, 30), (9, 9), (7, 7), "drop"), seed=1)  # one cell
def test_upsampled_fractions_equal_a_full_upsampling(grid, seed):
    mask_shape, shape, patch, stride, edge = grid
    mask = np.random.default_rng(seed).random(mask_shape) < 0.5
    found = upsampled_fractions(mask, shape, patch, stride, edge)
    np.testing.assert_allclose(found, brute_fractions(mask, shape, patch, stride, edge), rtol=0, atol=1e-12)


@settings(max_examples=30)
@given(grid=grids, other=st.tuples(sides, sides), threshold=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
       seed=st.integers(0, 2 ** 16))
def test_filter_keeps_the_patches_of_a_full_upsampling(tmp_path_factory, grid, other, threshold, seed):
    mask_shape, shape, patch, stride, edge = grid
    rng = np.random.default_rng(seed)
    shapes = [shape, (shape[1], shape[0])]
    assume(edge != "drop" or any(p[0] >= patch[0] and p[1] >= patch[1] for p in shapes))
    masks = [rng.random(mask_shape) < 0.5, rng.random(other) < 0.5]
    folder = tmp_path_factory.mktemp("filter")
    images = [np.zeros(s + (3,), np.uint8) for s in shapes]
    store = write_store(folder / "s.h5", images, tissue=masks, progress=False)
    path = foreground_filter(store, patch, stride, edge, threshold=threshold, source="tissue", progress=False)
    index = PatchIndex(shapes, patch, stride, edge)
    expected = np.concatenate([brute_fractions(m, s, patch, stride, edge) >= threshold for m, s in zip(masks, shapes)])
    with h5py.File(path, "r") as f:
        kept = np.unpackbits(f["keep"][()])[:len(index)].astype(bool)
        assert f.attrs["source"] == b"tissue" or f.attrs["source"] == "tissue"
    np.testing.assert_array_equal(kept, expected)
    store.close()


def test_filter_across_shards_and_through_a_dataset_index(tmp_path):
    from lazypatch.stats.foreground import load_filter

    masks = [np.array([[1, 0], [0, 0]], bool), np.array([[0, 0, 1]], bool)]
    a = write_store(tmp_path / "a.h5", [np.zeros((64, 64, 3), np.uint8)], tissue=masks[:1], progress=False)
    b = write_store(tmp_path / "b.h5", [np.zeros((32, 96, 3), np.uint8)], tissue=masks[1:], progress=False)
    with ImageStore([a.path, b.path]) as store:
        path = foreground_filter(store, 32, source="tissue", threshold=0.5, progress=False)
        filtered = load_filter(store, path, PatchIndex(store.shapes, 32))
        image_ids, origins = filtered.locate(np.arange(len(filtered)))
        assert list(zip(image_ids.tolist(), map(tuple, origins.tolist()))) == [(0, (0, 0)), (1, (0, 64))]


def test_a_store_without_tissue_is_refused(tmp_path):
    store = write_store(tmp_path / "s.h5", [np.zeros((16, 16, 3), np.uint8)], progress=False)
    with pytest.raises(ParameterError, match=r"source='tissue' needs a store with tissue masks; .*s\.h5' has none: "
                                             r"build it with `lazypatch build \.\.\. --tissue otsu`"):
        foreground_filter(store, 8, source="tissue", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]


def test_an_image_without_a_mask_is_refused(tmp_path):
    images = [np.zeros((40, 40, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((40, 40, 3), np.uint8)]
    store = write_store(tmp_path / "s.h5", images, tissue=[np.ones((2, 2), bool), None, np.ones((2, 2), bool)],
                        names=["a", "b", "c"], progress=False)
    with pytest.raises(ParameterError, match=r"image 1 \('b'\) of .*s\.h5' has no tissue mask"):
        foreground_filter(store, 8, source="tissue", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]
    path = foreground_filter(store, 16, source="tissue", progress=False)  # image 1 has no patch: no need
    with h5py.File(path, "r") as f:
        assert int(f.attrs["kept"]) == int(f.attrs["patches"]) == 8


def test_unknown_source_names_the_choices(tmp_path):
    store = write_store(tmp_path / "s.h5", [np.zeros((16, 16, 3), np.uint8)], progress=False)
    with pytest.raises(ParameterError, match=r"source must be one of \('mask', 'intensity', 'tissue'\), got 'otsu'"):
        foreground_filter(store, 8, source="otsu", progress=False)


@pytest.fixture
def tissue_store(tmp_path):
    images = [np.zeros((40, 60, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((30, 30, 3), np.uint8)]
    masks = [np.eye(2, 3, dtype=bool), None, np.ones((3, 3), bool)]
    path = tmp_path / "s.h5"
    write_store(path, images, tissue=masks, names=["a", "b", "c"], progress=False).close()
    return str(path)


def test_describe_and_info_report_tissue_fractions(tissue_store, capsys):
    facts = describe(tissue_store)
    assert facts["tissue_fraction"] == [0.3333, None, 1.0] and facts["format_minor"] == 2
    assert main(["info", tissue_store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tissue_fraction"] == [0.3333, None, 1.0]
    assert main(["info", tissue_store]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tissue_fraction")]
    assert len(lines) == 1
    assert lines[0].split(None, 1)[1] == ("mean 0.667, min 0.3333 (image 0), max 1 (image 2) over 2 images; "
                                          "1 without a mask")


def test_index_command_filters_by_tissue(tissue_store, tmp_path, capsys):
    out = tmp_path / "f.h5"
    assert main(["index", tissue_store, "--foreground", "--patch", "20", "--from", "tissue", "--out", str(out),
                 "--no-progress"]) == 0
    # image 0: 2 x 3 patches, one per 20 x 20 px cell, tissue in two; image 1 has none; image 2's one: tissue
    assert "keeps 3 of 7 patches" in capsys.readouterr().out
    assert main(["index", tissue_store, "--foreground", "--patch", "8", "--source", "tissue", "--out",
                 str(tmp_path / "g.h5"), "--no-progress"]) == 1
    assert "image 1 ('b')" in capsys.readouterr().err and not os.path.exists(tmp_path / "g.h5")
