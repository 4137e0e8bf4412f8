"""The README's example runs as written, as a script, under fork and spawn."""

import os
import re
import subprocess
import sys

import h5py
import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def example() -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return blocks[0]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_readme_example_runs(tmp_path, method):
    code = example()
    assert 'if __name__ == "__main__":' in code
    script = tmp_path / "example.py"
    script.write_text(f"import multiprocessing\nmultiprocessing.set_start_method({method!r}, force=True)\n"
                      + code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "preds.h5", "r") as f:
        assert len(f["predictions"]) == 10
