"""Figures of an operating-system process that benchmarks and the demo print."""

from __future__ import annotations

from pathlib import Path


def peak_memory_mb(pid: int | str = "self") -> float:
    """Peak resident memory of process `pid` in MB (Linux VmHWM; NaN elsewhere). Not ru_maxrss: Linux carries
    that over fork + exec, so a child would report its parent's peak."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return float("nan")
    for line in lines:
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")
