"""Other processes that keep cores busy while a benchmark measures, as the server's users or the loop's
training do on a small machine."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy_cores(n: int) -> Iterator[None]:
    """`n` processes spinning on the CPU for the block (after 2 s, so a look at /proc/stat sees them)."""
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for hog in hogs:
        hog.start()
    if hogs:
        time.sleep(2)
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
