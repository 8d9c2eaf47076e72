"""Engines that train a job in other processes: `process` runs `python -m tuneloop.learn.jobs SPEC ROWS` as
one child; torchrun or Accelerate launches `spec.processes` DDP processes, each running it on the same spec
and rows (gloo on CPU, NCCL on GPUs).

The contract is the local one: the job checkpoints into its partial directory, resumes from there, and only
the main process publishes `<job id>/` with its metrics. Cancelling stops the whole process group; the job
resumes from its last saved checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tuneloop.errors import TuneloopError
from tuneloop.learn.job_config import JobSpec

STEP = re.compile(r"^step (\d+)/(\d+) eta (\S+)$")  # what `jobs.main` prints as it trains
PARENT_ENV = "TUNELOOP_JOB_PARENT"  # the launching process's pid: a job whose launcher died stops too


class JobFailed(TuneloopError):
    """A launched training job exited with an error."""


def command(spec: JobSpec, spec_file: Path, rows_file: Path) -> list[str]:
    """The launcher's command line for `spec.engine`."""
    job = ["-m", "tuneloop.learn.jobs", str(spec_file), str(rows_file)]
    if spec.engine == "process":
        return [sys.executable, *job]
    n = str(spec.processes)
    if spec.engine == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *job]
    gpus = ["--multi_gpu"] if spec.processes > 1 else []
    device = ["--cpu"] if spec.trainer_args.get("use_cpu") else gpus
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", n, *device, *job]


def rank_spec(spec: JobSpec) -> JobSpec:
    """The spec as one process of a launched group trains it. TRL caches precomputed reference log-probs of
    an in-memory dataset in a per-process temp folder that the other ranks cannot open, so in a group each
    rank computes them with every step instead: the same values, with one more forward pass a step."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or not spec.trainer_args.get("precompute_ref_log_probs"):
        return spec
    return spec.model_copy(update={"trainer_args": {**spec.trainer_args, "precompute_ref_log_probs": False}})


def launch(
    spec: JobSpec,
    rows: Iterable[dict] | str | Path,
    progress: Callable[[int, int, float | None], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any] | None:
    """Run `spec` on its engine until it publishes its artifact; its metrics, or None when cancelled."""
    if cancel is not None and cancel.is_set():  # no process to start and stop again
        return None
    work = spec.output_dir / f".launch-{spec.id}"  # beside the partial directory, never published with it
    work.mkdir(parents=True, exist_ok=True)
    spec_file = work / "job_spec.launch.json"
    spec_file.write_text(spec.model_dump_json())
    rows_file = Path(rows) if isinstance(rows, str | Path) else _write_rows(work / "rows.launch.jsonl", rows)
    proc = subprocess.Popen(
        command(spec, spec_file, rows_file),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # one process group: a cancel stops the launcher and every rank it started
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", PARENT_ENV: str(os.getpid())},
    )
    stop = threading.Thread(target=_stop_on, args=(cancel, proc), daemon=True) if cancel else None
    if stop:
        stop.start()
    try:
        code, tail = _follow(proc, progress)
    finally:
        if proc.poll() is None:  # the caller is unwinding (SIGTERM, Ctrl-C): the ranks stop with it
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)  # a copy of the tenant's rows: never left behind
    if cancel is not None and cancel.is_set():
        return None
    if code != 0:
        raise JobFailed(f"{spec.engine} job {spec.id} {_exit_text(code)}: " + " | ".join(tail)[-1500:])
    return json.loads((spec.final_dir / "metrics.json").read_text())


def _follow(
    proc: subprocess.Popen, progress: Callable[[int, int, float | None], None] | None
) -> tuple[int, deque[str]]:
    """Pass the main rank's step lines to `progress` until the group exits; its exit code and last lines."""
    tail: deque[str] = deque(maxlen=20)
    assert proc.stderr is not None
    for line in proc.stderr:
        tail.append(line.rstrip())
        found = STEP.match(line.strip())
        if found and progress is not None:
            eta = None if found[3] == "?" else float(found[3].rstrip("s"))
            progress(int(found[1]), int(found[2]), eta)
    return proc.wait(), tail


def stop_with_parent(every: float = 1.0) -> threading.Thread | None:
    """In a launched job: stop its process group once the launching process is gone (SIGKILL, OOM kill),
    rather than train on beside the job a resumed turn starts in the same partial directory."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return None

    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                os.kill(int(parent), 0)
            except ProcessLookupError:
                os.killpg(0, signal.SIGTERM)  # the launcher's new session: the job's processes only
                return
            except PermissionError:  # alive, as another user's process: not ours to judge
                pass

    thread = threading.Thread(target=watch, name="stop-with-parent", daemon=True)
    thread.start()
    return thread


def _exit_text(code: int) -> str:
    """How the job's process ended; a signal by name (SIGKILL is usually the kernel's out-of-memory kill)."""
    if code >= 0:
        return f"exited with {code}"
    name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
    return f"was killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")


def _write_rows(path: Path, rows: Iterable[dict]) -> Path:
    path.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows))
    return path


def _stop_on(cancel: threading.Event, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        if cancel.wait(0.5):
            os.killpg(proc.pid, signal.SIGTERM)
            return
