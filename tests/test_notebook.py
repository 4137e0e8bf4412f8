"""The notebooks run from top to bottom, are stored without outputs, and leave nothing behind.

quickstart.ipynb: build, look, train, stitch (two pictures, patches/s, a loss).
training.ipynb: DataLoader workers, pinned non-blocking copies, augmentation on the device.
The README's recipes, each on generated data: pathology.ipynb (slides at two mpp and QuPath
annotations to one 0.5 um store, OME-TIFF out), radiology.ipynb (NIfTI at 1 mm, NIfTI out on the
scans' grid), remote_sensing.ipynb (GeoTIFF in, the CRS kept to GeoTIFF predictions).
"""

import json
import os
import tempfile

import pytest

FOLDER = os.path.join(os.path.dirname(__file__), os.pardir, "notebooks")
NOTEBOOKS = ["quickstart.ipynb", "training.ipynb", "pathology.ipynb", "radiology.ipynb", "remote_sensing.ipynb"]


def _run(name, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(os.path.join(FOLDER, name), as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result")
              and "image/png" in o.get("data", {})]
    return text, images


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    with open(os.path.join(FOLDER, name), encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


@pytest.mark.requires_notebook
def test_quickstart_runs(tmp_path):
    before = set(os.listdir(tempfile.gettempdir()))
    text, images = _run("quickstart.ipynb", tmp_path)
    left = {name for name in set(os.listdir(tempfile.gettempdir())) - before if name.startswith("lazypatch-")}
    assert left == set()
    assert "patches/s" in text and "loss" in text
    assert len(images) >= 2  # the patch grid and the stitched predictions


@pytest.mark.requires_notebook
def test_training_runs_and_cleans_up(tmp_path):
    before = set(os.listdir(tempfile.gettempdir()))
    text, _ = _run("training.ipynb", tmp_path)
    assert text.count("patches/s") == 2 and "step 8: loss" in text
    left = {name for name in set(os.listdir(tempfile.gettempdir())) - before if name.startswith("lazypatch-")}
    assert left == set()


@pytest.mark.requires_notebook
@pytest.mark.parametrize("name, expected", [
    ("pathology.ipynb", ["spacing [0.5, 0.5] um", "tissue patches of", "PhysicalSizeX=\"0.5\""]),
    ("radiology.ipynb", ["spacing [1.0", "case0.nii.gz True True", "case2.nii.gz True True"]),
    ("remote_sensing.ipynb", ["tile0.tif True True", "tile1.tif True True"]),
])
def test_recipe_runs_and_cleans_up(tmp_path, name, expected):
    before = set(os.listdir(tempfile.gettempdir()))
    text, _ = _run(name, tmp_path)
    for line in expected:
        assert line in text, (line, text)
    left = {name for name in set(os.listdir(tempfile.gettempdir())) - before if name.startswith("lazypatch-")}
    assert left == set()
