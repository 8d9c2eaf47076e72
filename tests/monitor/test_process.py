"""Process figures the demo and the benchmarks print."""

from __future__ import annotations

import math
import subprocess
import sys

from tuneloop.monitor.process import peak_memory_mb


def test_peak_memory_is_this_processs_own_or_a_childs_own() -> None:
    ours = peak_memory_mb()
    code = "import time; print('up', flush=True); time.sleep(5)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "up\n"
        theirs = peak_memory_mb(child.pid)
    finally:
        child.kill()
        child.wait()
    assert ours > 10 and 0 < theirs < ours


def test_peak_memory_of_a_process_that_is_gone_is_not_a_number() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert math.isnan(peak_memory_mb(child.pid))
