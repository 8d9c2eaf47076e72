"""How many threads a CPU forward pass should use right now: the cores that other processes leave idle.

On a small machine the server shares its cores with the loop (training, the gate's generation) and with
whatever else runs there. A fixed thread count is wrong either way: all cores stall when another process
takes one (decoding threads wait on each other at every layer), half the cores waste the rest while the
machine is otherwise idle. So the count follows what the others used over the last second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Other processes' use, in cores, that a thread still tolerates beside it: the gateway's own clients and
# background daemons take a little; more than this and a thread on a shared core stalls the others.
TOLERATED = 0.2
LOOK_EVERY = 1.0  # seconds between looks at /proc/stat; a look costs microseconds


class IdleCores:
    """Threads for the next forward pass: between 1 and the cores this process may run on, minus those other
    processes kept busy since the last look (Linux /proc/stat); half the cores where that cannot be read."""

    def __init__(self, stat: Path = Path("/proc/stat"), every: float = LOOK_EVERY) -> None:
        self._stat = stat
        self._every = every
        self._cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.cores = len(self._cpus) or os.cpu_count() or 1
        self._threads = max(1, self.cores // 2)  # until a look says otherwise
        self._last = self._sample()

    def threads(self) -> int:
        """The thread count to use now; looks again at most every `every` seconds."""
        if self._last is not None and time.monotonic() - self._last[0] < self._every:
            return self._threads
        sample = self._sample()
        if sample is None or self._last is None:
            self._last = sample
            return self._threads
        # /proc/stat's own ticks, idle ones included, are the clock: each core ticks once per tick.
        wall = (sample[1] - self._last[1]) / self.cores
        if wall <= 0:
            return self._threads
        others = max(0.0, (sample[2] - self._last[2]) - (sample[3] - self._last[3])) / wall
        self._last = sample
        self._threads = max(1, min(self.cores, int(self.cores - others + TOLERATED)))
        return self._threads

    def _sample(self) -> tuple[float, float, float, float] | None:
        """(monotonic time, then CPU-seconds: all of this process's cores, their busy part, this process)."""
        wanted = {f"cpu{i}" for i in self._cpus}
        total = busy = 0
        try:
            for fields in (line.split() for line in self._stat.read_text().splitlines()):
                if fields and fields[0] in wanted:
                    ticks = [int(f) for f in fields[1:9]]  # user nice system idle iowait irq softirq steal
                    total += sum(ticks)
                    busy += sum(ticks) - ticks[3] - ticks[4]
        except (OSError, ValueError, IndexError):
            return None
        if not total:
            return None
        own, tick = os.times(), os.sysconf("SC_CLK_TCK")
        return time.monotonic(), total / tick, busy / tick, own.user + own.system


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's intra-op threads at `count` for the block; the process's own count is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
