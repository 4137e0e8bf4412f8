"""Byte-mutation fuzzing of small stores (see tests/fuzz/fuzz_store.py for the outcomes).

300 mutants over the three layouts, each checked in a worker process with a
10 s timeout: a crash (segfault, bus error), a hang, an unexpected exception
type, a wrongly shaped result or wrong data that ``verify`` does not report
fails the test. ``python tests/fuzz/fuzz_store.py --mutants 10000 --seed 0`` is the long run.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytest  # noqa: E402
from fuzz_store import GOOD, run  # noqa: E402


@pytest.mark.slow
@pytest.mark.system
def test_mutants_fail_cleanly(tmp_path):
    result = run(300, seed=11, timeout=10.0, folder=tmp_path)
    assert result["failures"] == []
    outcomes = {key for counts in result["outcomes"].values() for key in counts}
    assert outcomes <= set(GOOD)
    assert sum(sum(counts.values()) for counts in result["outcomes"].values()) == 300
    # the mutations reach every outcome: damage found at open, by verify, and harmless bytes
    assert outcomes == set(GOOD)
