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


def test_writing_and_reading_a_store_with_every_statistic_does_not_import_torch(tmp_path):
    # torch costs 130-270 MiB of private memory at import: a build must not pay it
    code = (
        "import sys, numpy as np, lazypatch.store as s; "
        f"store = s.write_store({str(tmp_path / 'a.h5')!r}, [np.zeros((70, 90, 3), np.uint8)], "
        "masks=[np.ones((70, 90), np.uint8)], label_stats=True, channel_stats=True, progress=False); "
        "store.read_region(0, (0, 0), (8, 8)); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
