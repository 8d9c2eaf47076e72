"""The job executor: `run_job` trains a `JobSpec` (job_config.py) on its engine, resumably, atomically.

`local` trains in this process; `process` runs this module in one child process, and `torchrun` and
`accelerate` launch `spec.processes` processes (launchers.py), each running it on the same spec and rows:

    torchrun --standalone --nproc-per-node=2 -m tuneloop.learn.jobs SPEC.json ROWS.parquet   # CPU: gloo
    accelerate launch --multi_gpu --num_processes 4 -m tuneloop.learn.jobs SPEC.json ROWS.jsonl
    # GPU: "use_cpu": false in trainer_args

`python -m tuneloop.learn.jobs SPEC.json ROWS.jsonl` runs it in one process. Only the main process
writes the final artifact directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from tuneloop.errors import BadRequest, Conflict
from tuneloop.learn import adapter_trainer, embedding_reward, reward_model
from tuneloop.learn.callbacks import JobCallback
from tuneloop.learn.job_config import REQUIRED_COLUMNS, JobKind, JobSpec
from tuneloop.serve.backends.cores import IdleCores, torch_threads

ProgressFn = Callable[[int, int, float | None], None]
CORES_LOOK_SECONDS = 0.25  # a step takes seconds on a CPU: a look per step follows the server's load
TRAINERS: dict[JobKind, Callable[..., dict[str, Any]]] = {
    "dpo": adapter_trainer.train_dpo,
    "kto": adapter_trainer.train_kto,
    "reward": reward_model.train_reward_model,
    "reward_embedding": embedding_reward.train_embedding_reward,
}


@dataclass
class JobResult:
    """Outcome of `run_job`: the artifact directory (None when cancelled) and the training metrics."""

    job_id: str
    artifact_dir: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False


def load_rows(
    rows: Iterable[dict] | str | Path, kind: JobKind, repeat: dict[str, int] | None = None
) -> list[dict]:
    """Rows from a list or a .parquet/.jsonl/.json file, each repeated per its origin (`repeat`), reduced to
    the columns `kind` trains on."""
    if isinstance(rows, str | Path):
        path = Path(rows)
        if not path.exists():
            raise BadRequest(f"rows file {path} does not exist — export a snapshot first", param="rows")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        elif path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".json":
            rows = json.loads(path.read_text())
        else:
            raise BadRequest(
                f"unsupported rows file {path.name} — use .parquet, .jsonl or .json", param="rows"
            )
    rows = list(rows)
    needed = REQUIRED_COLUMNS[kind]
    if not rows:
        raise BadRequest(f"no training rows for a {kind} job — the snapshot is empty", param="rows")
    for i, row in enumerate(rows):
        missing = [c for c in needed if c not in row]
        if missing:
            raise BadRequest(f"row {i} lacks {missing}; a {kind} row needs {list(needed)}", param="rows")
    repeat = repeat or {}
    rows = [row for row in rows for _ in range(repeat.get(row.get("origin", ""), 1))]
    if not rows:
        raise BadRequest(f"repeat {repeat} leaves no training rows", param="repeat")
    # Extra columns (origin, margin, ids) would confuse TRL's collators; drop them here.
    return [{c: row[c] for c in needed} for row in rows]


def last_checkpoint(checkpoints_dir: Path) -> str | None:
    """The newest complete `checkpoint-N` directory, or None."""
    done = [p for p in checkpoints_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def run_job(
    spec: JobSpec,
    rows: Iterable[dict] | str | Path,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    *,
    here: bool = False,
) -> JobResult:
    """Train `spec` on `rows` on its engine, resuming from its last checkpoint; publish `<id>/` atomically.

    `here`: train in this process whatever the engine (what each process a launcher started does)."""
    if (done := _finished(spec)) is not None:  # finished before: a job is idempotent
        return done
    if here:  # a rank a launcher started: the launching process holds the job's lock
        return _train_here(spec, rows, progress, cancel)
    with _exclusive(spec):
        if (done := _finished(spec)) is not None:  # published by the holder of the lock just before us
            shutil.rmtree(spec.partial_dir, ignore_errors=True)
            return done
        if spec.engine == "local":
            return _train_here(spec, rows, progress, cancel)
        from tuneloop.learn.launchers import launch

        metrics = launch(spec, rows, progress, cancel)
        if metrics is None:
            return JobResult(str(spec.id), None, cancelled=True)
        return JobResult(str(spec.id), spec.final_dir, metrics)


def _finished(spec: JobSpec) -> JobResult | None:
    """The published result of `spec`, or None while it has none."""
    metrics = spec.final_dir / "metrics.json"
    if not metrics.exists():
        return None
    return JobResult(str(spec.id), spec.final_dir, json.loads(metrics.read_text()))


@contextmanager
def _exclusive(spec: JobSpec) -> Iterator[None]:
    """Hold a lock on the job's partial folder while it trains: two processes resuming one checkpoint would
    corrupt it. The lock goes with the folder when it is published, and with the process if it dies."""
    spec.partial_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(spec.partial_dir, os.O_RDONLY)
    except FileNotFoundError:  # the holder published it between our mkdir and open: it is done
        spec.partial_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(spec.partial_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"job {spec.id} is already training in another process (`tuneloop train` or the loop); "
                "run the same command when it ends to get its version"
            ) from None
        yield
    finally:
        os.close(fd)


def _train_here(
    spec: JobSpec,
    rows: Iterable[dict] | str | Path,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
) -> JobResult:
    final = spec.final_dir
    rows = load_rows(rows, spec.kind, spec.repeat)
    partial = spec.partial_dir
    checkpoints = partial / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    with idle_cores(spec) as cores:
        callback = JobCallback(progress, cancel, cores)
        metrics = TRAINERS[spec.kind](
            spec, rows, partial, callbacks=[callback], resume_from=last_checkpoint(checkpoints)
        )
    if callback.cancelled:
        return JobResult(str(spec.id), None, metrics, cancelled=True)
    if not PartialState().is_main_process:
        return JobResult(str(spec.id), final, metrics)
    _publish(spec, partial, final, metrics)
    return JobResult(str(spec.id), final, metrics)


@contextmanager
def idle_cores(spec: JobSpec) -> Iterator[IdleCores | None]:
    """On a CPU, the idle cores for the job's steps, and PyTorch's threads set to them now (the reference
    log-probs are computed before the first step); the process's own count is restored afterwards."""
    if spec.device != "cpu":
        yield None
        return
    cores = IdleCores(every=CORES_LOOK_SECONDS)
    time.sleep(CORES_LOOK_SECONDS)  # one look's worth of what the other processes use
    with torch_threads(cores.threads()):
        yield cores


def _publish(spec: JobSpec, partial: Path, final: Path, metrics: dict[str, Any]) -> None:
    """Write metrics and spec, drop checkpoints, fsync, rename: a crash never leaves a final-looking dir."""
    shutil.rmtree(partial / "checkpoints", ignore_errors=True)
    (partial / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (partial / "job_spec.json").write_text(spec.model_dump_json(indent=2))
    for path in partial.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    os.rename(partial, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m tuneloop.learn.jobs SPEC.json ROWS` (also under `accelerate launch`)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m tuneloop.learn.jobs SPEC.json ROWS.(parquet|jsonl|json)", file=sys.stderr)
        return 2
    from tuneloop.learn.launchers import rank_spec, stop_with_parent

    stop_with_parent()
    spec = rank_spec(JobSpec.model_validate_json(Path(argv[0]).read_text()))

    def report(step: int, total: int, eta: float | None) -> None:
        if PartialState().is_main_process:  # one line per step, not one per rank
            eta_text = "?" if eta is None else f"{eta:.0f}s"
            print(f"step {step}/{total} eta {eta_text}", file=sys.stderr, flush=True)

    result = run_job(spec, argv[1], progress=report, here=True)
    print(json.dumps({"job_id": result.job_id, "artifact_dir": str(result.artifact_dir), **result.metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
