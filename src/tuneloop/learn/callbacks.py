"""The trainer callback every job runs with: progress with an ETA, clean cancellation, on a CPU a thread
count that follows the idle cores, and the memory freed by each step handed back to the system.

On a small machine training shares its cores with the server. PyTorch's threads wait for each other at
every operation, so two threads on two cores, one of them serving users, train slower than one thread:
before each step the count is set to the cores other processes leave idle (serve/backends/cores.py).

Each batch has its own shape, and glibc's malloc keeps what a step freed in its heaps, scattered among what
is still in use, so a DPO job's resident memory grew step after step. `malloc_trim` after each step returns
those pages: on a policy-tone turn's 99 pairs (two epochs, the same job twice side by side) the job peaked at
3.1 GB instead of 3.8, in the same time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable
from functools import cache

from transformers import TrainerCallback

from tuneloop.serve.backends.cores import IdleCores


class JobCallback(TrainerCallback):
    """Calls `progress(step, total, eta_s)` after each step; stops and checkpoints when `cancel` is set;
    sizes PyTorch's threads to `cores` before each step."""

    def __init__(
        self,
        progress: Callable[[int, int, float | None], None] | None = None,
        cancel: threading.Event | None = None,
        cores: IdleCores | None = None,
    ) -> None:
        self.progress = progress
        self.cancel = cancel
        self.cores = cores
        self.cancelled = False
        self._start_time = 0.0
        self._start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run starts at the checkpoint's step; the ETA counts only steps timed in this process.
        self._start_time = time.monotonic()
        self._start_step = state.global_step
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
            control.should_training_stop = True

    def on_step_begin(self, args, state, control, **kwargs):
        if self.cores is not None:
            import torch

            torch.set_num_threads(self.cores.threads())

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            done = state.global_step - self._start_step
            elapsed = time.monotonic() - self._start_time
            eta = elapsed / done * (state.max_steps - state.global_step) if done > 0 else None
            self.progress(state.global_step, state.max_steps, eta)
        trim_heap()
        if self.cancel is not None and self.cancel.is_set() and state.global_step < state.max_steps:
            self.cancelled = True
            control.should_training_stop = True
            control.should_save = True  # so a later run resumes from exactly here
        return control


def trim_heap() -> None:
    """Return the pages malloc holds free to the system (glibc's `malloc_trim`; nothing elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators return memory themselves
        return None
