"""``lazypatch index --foreground``: the progress bar on stderr, and --no-progress.

Matrix: --from intensity with and without --no-progress (a bar only when
asked for, here where stderr is no terminal: forced through progress=True by
the API, absent from the command with --no-progress).
"""

import numpy as np

from lazypatch import write_store
from lazypatch.cli import main


def test_foreground_without_a_progress_bar(tmp_path, capsys):
    image = np.full((64, 64, 3), 230, np.uint8)
    image[:32, :32] = 40
    path = tmp_path / "s.h5"
    write_store(path, [image], progress=False).close()
    out = tmp_path / "f.h5"
    assert main(["index", str(path), "--foreground", "--patch", "32", "--from", "intensity",
                 "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "keeps 1 of 4 patches" in captured.out
    assert "lazypatch foreground" not in captured.err
