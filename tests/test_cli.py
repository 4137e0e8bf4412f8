"""The command line, in-process through main(argv) and once as a real process.

Matrix: build from a folder of real PNG/JPEG/16-bit TIFF/.npy files with
masks paired by stem (and its failures: unreadable file, missing mask);
info (text, --json, --patch); demo, and what it asks to install without
scikit-image. ``lazypatch bench`` is tested in tests/test_bench.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import tifffile
from PIL import Image

from lazypatch import ImageStore
from lazypatch.cli import main


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    masks = tmp_path / "masks"
    masks.mkdir()
    astronaut = skimage.data.astronaut()
    coffee = skimage.data.coffee()
    Image.fromarray(astronaut).save(images / "b_astronaut.png")
    Image.fromarray(coffee).save(images / "sub" / "c_coffee.jpg", quality=95)
    tifffile.imwrite(images / "a_wide.tif", (np.arange(300 * 500 * 3) % 65536).astype(np.uint16).reshape(300, 500, 3)[..., :3])
    np.save(images / "d_array.npy", np.full((64, 80, 3), 7, np.uint8))
    for stem, shape in (("b_astronaut", (512, 512)), ("c_coffee", (400, 600)), ("a_wide", (300, 500)),
                        ("d_array", (64, 80))):
        Image.fromarray((np.arange(np.prod(shape)) % 3).astype(np.uint8).reshape(shape)).save(masks / f"{stem}.png")
    return tmp_path


def test_build_and_info(folder, capsys):
    # mixed dtypes are refused (uint16 TIFF with uint8 PNGs), naming the images
    out = folder / "s.h5"
    assert main(["build", str(folder / "images"), str(out), "--masks", str(folder / "masks")]) == 1
    assert "dtype" in capsys.readouterr().err and not out.exists()
    os.remove(folder / "images" / "a_wide.tif")
    assert main(["build", str(folder / "images"), str(out), "--masks", str(folder / "masks"),
                 "--no-progress"]) == 0
    store = ImageStore(out)
    assert store.names == ["b_astronaut.png", "d_array.npy", "sub/c_coffee.jpg"]
    assert np.array_equal(store.read(0), skimage.data.astronaut())
    assert np.array_equal(store.read(1), np.full((64, 80, 3), 7, np.uint8))
    assert store.has_masks and store.read_mask(2).shape == (400, 600)
    capsys.readouterr()
    assert main(["info", str(out), "--json", "--patch", "64", "--stride", "32"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["images"] == 3 and facts["channels"] == 3 and facts["layout"] == "tiled"
    assert facts["grid"]["patches"] == 15 * 15 + 1 * 1 + 11 * 17
    assert main(["info", str(out)]) == 0
    assert "shape_median" in capsys.readouterr().out


def test_build_failures_write_nothing(folder, capsys):
    out = folder / "s.h5"
    os.remove(folder / "images" / "a_wide.tif")
    os.remove(folder / "masks" / "d_array.png")
    assert main(["build", str(folder / "images"), str(out), "--masks", str(folder / "masks")]) == 1
    assert "no mask for" in capsys.readouterr().err and not out.exists()
    (folder / "images" / "e_broken.png").write_bytes(b"\x89PNG not really")
    assert main(["build", str(folder / "images"), str(out)]) == 1
    assert "e_broken.png" in capsys.readouterr().err and not out.exists()
    assert main(["build", str(folder / "nowhere"), str(out)]) == 1
    assert sorted(os.listdir(folder)) == ["images", "masks"]


def test_tiff_16_bit_and_layouts(folder):
    source = folder / "images"
    for name in os.listdir(source):
        if not name.endswith(".tif"):
            path = source / name
            if path.is_file():
                os.remove(path)
    import shutil

    shutil.rmtree(source / "sub")
    for layout in ("tiled", "contiguous", "chunked"):
        out = folder / f"{layout}.h5"
        args = ["build", str(source), str(out), "--layout", layout, "--no-progress"]
        if layout == "chunked":
            args += ["--compression", "gzip"]
        assert main(args) == 0
        store = ImageStore(out)
        assert store.dtype == np.uint16 and store.read(0).shape == (300, 500, 3)
        assert np.array_equal(store.read(0), tifffile.imread(source / "a_wide.tif"))


def test_demo_and_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lazypatch", "demo", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "identical" in result.stdout
    assert (tmp_path / "patches.png").stat().st_size > 1000
    picture = np.asarray(Image.open(tmp_path / "patches.png"))
    assert picture.ndim == 3 and picture.shape[2] == 3
    version = subprocess.run([sys.executable, "-m", "lazypatch", "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("lazypatch ")


def test_demo_names_its_extra_when_scikit_image_is_missing(monkeypatch):
    from lazypatch.cli import demo

    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage...` raises ImportError
    with pytest.raises(ImportError, match=r'pip install "lazypatch\[demo\]"'):
        next(demo.sample_images())
