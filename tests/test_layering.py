"""The dependency direction: index <- store <- dataset <- cli.

``import lazypatch.index`` must load neither torch nor h5py (checked in a
fresh interpreter, where nothing is imported yet).
"""

import subprocess
import sys


def test_index_imports_neither_torch_nor_h5py():
    code = (
        "import sys, lazypatch.index, lazypatch.testing; "
        "print(sorted(m for m in ('torch', 'h5py') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_store_module_does_not_import_torch():
    code = "import sys, lazypatch.store; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
