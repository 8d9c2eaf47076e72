"""The job callback's housekeeping between steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.learn.callbacks import _malloc_trim, trim_heap


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's malloc_trim is what is tested")
def test_memory_freed_between_live_blocks_goes_back_to_the_system() -> None:
    """What a step frees lies among blocks still in use, where glibc keeps it unless trimmed."""
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # 128 MB of heap blocks, each below mmap's threshold
    kept = blocks[::2]
    del blocks
    before = _rss_mb()
    trim_heap()
    assert before - _rss_mb() > 40, "the freed half stayed resident"
    assert len(kept) == 1000
