"""Every ```python block of README.md runs, and the README keeps to its size.

The first block (the example) runs as a script under the fork and spawn start methods,
twice in the same folder: a second run must succeed over the first one's files. Every
other block runs twice as a script in a folder of its own, except a block marked
``<!-- not run: reason -->`` on the line just above it (at most two: a cluster, an
optional dependency), which is skipped with that reason; every block, run or not, compiles.
"""

import os
import re
import subprocess
import sys

import h5py
import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
MAX_BYTES = 15 * 1024
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")
BLOCK = re.compile(r"^(?:<!-- not run: (.+?) -->\n)?```python\n(.*?)^```", flags=re.S | re.M)


def readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def blocks() -> list:
    """(code, reason it is not run or None) of every python block, in order."""
    return [(code, reason or None) for reason, code in BLOCK.findall(readme())]


def run_script(folder, code: str, prelude: str = "") -> None:
    script = folder / "block.py"
    script.write_text(prelude + code, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=folder, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr


@pytest.mark.system
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_readme_example_runs_twice(tmp_path, method):
    code, reason = blocks()[0]
    assert reason is None and 'if __name__ == "__main__":' in code
    prelude = f"import multiprocessing\nmultiprocessing.set_start_method({method!r}, force=True)\n"
    for _ in range(2):
        run_script(tmp_path, code, prelude)
        with h5py.File(tmp_path / "preds.h5", "r") as f:
            assert len(f["predictions"]) == 10


@pytest.mark.system
@pytest.mark.parametrize("number", range(1, len(blocks())))
def test_readme_block_runs_twice(tmp_path, number):
    code, reason = blocks()[number]
    if reason:
        pytest.skip(f"README block {number} is marked not run: {reason}")
    for _ in range(2):
        run_script(tmp_path, code)


def test_not_run_markers_sit_above_python_blocks():
    text = readme()
    marked = [reason for _, reason in blocks() if reason]
    assert len(NOT_RUN.findall(text)) == len(marked) <= 2
    assert blocks()[0][1] is None


@pytest.mark.parametrize("number", range(len(blocks())))
def test_readme_block_compiles(number):
    compile(blocks()[number][0], f"README.md block {number}", "exec")


def test_readme_is_a_front_page():
    with open(README, "rb") as f:
        data = f.read()
    assert len(data) <= MAX_BYTES, f"README.md has {len(data)} bytes, at most {MAX_BYTES}"
    text = data.decode("utf-8")
    assert "DESIGN.md" not in text


@pytest.mark.system
def test_the_example_is_twenty_lines_that_print_what_they_did(tmp_path):
    code, _ = blocks()[0]
    assert len(code.strip().splitlines()) <= 20
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "patches of (128, 128), last batch (" in result.stdout
