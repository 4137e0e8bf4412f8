"""A missing optional library names the extra that installs it.

Matrix: Pillow (PNG), tifffile (TIFF) for ``build`` -> ``lazypatch[images]``;
matplotlib for ``show`` -> ``lazypatch[show]``; the extras exist in setup.cfg.
"""

import configparser
import os
import sys

import numpy as np
import pytest

import lazypatch


@pytest.mark.parametrize("module, writer, suffix", [
    pytest.param("PIL.Image", lambda p, a: __import__("PIL.Image").Image.fromarray(a).save(p), ".png", id="png"),
    pytest.param("tifffile", lambda p, a: __import__("tifffile").imwrite(p, a), ".tif", id="tiff"),
])
def test_building_without_the_reader_names_the_images_extra(tmp_path, monkeypatch, module, writer, suffix):
    writer(str(tmp_path / f"a{suffix}"), np.zeros((20, 30, 3), np.uint8))
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r'pip install "lazypatch\[images\]"'):
        lazypatch.build(tmp_path, tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()


def test_show_without_matplotlib_names_the_show_extra(tmp_path, monkeypatch):
    lazypatch.write_store(tmp_path / "s.h5", [np.zeros((40, 40), np.uint8)], progress=False).close()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from lazypatch.show import show

    with pytest.raises(ImportError, match=r'pip install "lazypatch\[show\]"'):
        show(str(tmp_path / "s.h5"), patch_size=16)


def test_the_extras_exist():
    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "setup.cfg"))
    extras = config["options.extras_require"]
    for name in ("images", "show", "demo", "wsi", "tiff", "medical", "geo", "test"):
        assert name in extras
    assert "Pillow" in extras["images"] and "tifffile" in extras["images"] and "matplotlib" in extras["show"]
