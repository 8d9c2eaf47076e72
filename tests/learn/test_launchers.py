"""Engines beyond `local`: a job in one child process, or on two torchrun processes (gloo, CPU), makes the
adapter one process makes; a child's failure or cancel reaches the caller."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.learn.data import preference_rows
from tuneloop.learn import jobs, launchers
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.jobs import run_job
from tuneloop.learn.launchers import JobFailed, command

ARGS = {"max_steps": 3, "learning_rate": 5e-3, "max_length": 64, "save_steps": 100}
# Plain SGD, so an adapter moves in proportion to its gradients: Adam's first steps are ±lr whatever the
# gradient's size, and a rounding difference in a near-zero gradient (another CPU's kernels) flipped a whole
# step. The processes average the SFT term per rank, a percent or so off one process's average.
SGD = {**ARGS, "optim": "sgd", "learning_rate": 0.5}


def _spec(tiny_model, out, **changes) -> JobSpec:
    fields = {"kind": "dpo", "base_model": str(tiny_model), "tenant": "acme", "seed": 3, **changes}
    return JobSpec(output_dir=out, **fields)


def test_two_cpu_processes_train_the_adapter_one_process_trains(tiny_model, tmp_path) -> None:
    rows = preference_rows(12)
    # One process with 4 rows a step, and two processes with 2 each: the same global batch.
    local = run_job(
        _spec(tiny_model, tmp_path / "local", trainer_args={**SGD, "per_device_train_batch_size": 4}), rows
    )
    spread = _spec(tiny_model, tmp_path / "ddp", engine="torchrun", processes=2,
                   trainer_args={**SGD, "per_device_train_batch_size": 2})  # fmt: skip
    steps: list[int] = []
    ddp = run_job(spread, rows, progress=lambda step, total, eta: steps.append(step))

    assert ddp.artifact_dir == spread.final_dir and steps == [1, 2, 3]
    assert json.loads((ddp.artifact_dir / "job_spec.json").read_text())["engine"] == "torchrun"
    assert not list(spread.output_dir.glob(".*"))  # no partial or launch directory is left behind
    one, two = (load_file(r.artifact_dir / "adapter_model.safetensors") for r in (local, ddp))
    assert one.keys() == two.keys()
    moved = max((t.abs().max() for k, t in one.items() if "lora_B" in k), default=torch.tensor(0.0))
    assert moved > 1e-2  # training changed the adapter (LoRA B starts at zero) ...
    for name, tensor in one.items():  # ... and both engines changed it alike
        torch.testing.assert_close(two[name], tensor, rtol=1e-3, atol=0.05 * float(moved), msg=name)


def test_the_engine_is_how_a_job_runs_not_what_it_trains(tiny_model, tmp_path) -> None:
    local = _spec(tiny_model, tmp_path)
    spread = _spec(tiny_model, tmp_path, engine="torchrun", processes=2)
    assert spread.id == local.id  # switching engines keeps the job (and its checkpoints and version)
    assert command(spread, tmp_path / "s.json", tmp_path / "r.jsonl")[2:5] == [
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
    ]
    with pytest.raises(ValueError, match="use torchrun"):
        _spec(tiny_model, tmp_path, engine="accelerate", processes=2)


def test_process_engine_trains_in_a_child_and_publishes_the_same_artifact(
    tiny_model, tmp_path, monkeypatch
) -> None:
    rows = preference_rows(8)
    # A job follows the idle cores, so a busy machine changes its thread count and its sums' rounding, which
    # three SGD steps at learning rate 0.5 carried past float tolerance: both jobs run on one core (the child
    # inherits it), so both take one thread.
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        _both_engines(tiny_model, tmp_path, monkeypatch, rows)
    finally:
        os.sched_setaffinity(0, cpus)


def _both_engines(tiny_model, tmp_path, monkeypatch, rows) -> None:
    local = run_job(_spec(tiny_model, tmp_path / "local", trainer_args=SGD), rows)

    def not_here(*args, **kwargs):
        raise AssertionError("a process job trained in the caller's process")

    monkeypatch.setattr(jobs, "TRAINERS", dict.fromkeys(jobs.TRAINERS, not_here))
    spec = _spec(tiny_model, tmp_path / "child", engine="process", trainer_args=SGD)
    assert command(spec, tmp_path / "s.json", tmp_path / "r.jsonl")[1:3] == ["-m", "tuneloop.learn.jobs"]
    steps: list[int] = []
    child = run_job(spec, rows, progress=lambda step, total, eta: steps.append(step))

    assert child.job_id == local.job_id and child.artifact_dir == spec.final_dir and steps == [1, 2, 3]
    assert json.loads((child.artifact_dir / "job_spec.json").read_text())["engine"] == "process"
    assert not list(spec.output_dir.glob(".*"))  # no partial or launch directory is left behind
    one, two = (load_file(r.artifact_dir / "adapter_model.safetensors") for r in (local, child))
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor)


def test_cancelling_a_process_job_stops_its_child(tiny_model, tmp_path) -> None:
    spec = _spec(tiny_model, tmp_path, engine="process", trainer_args={**ARGS, "max_steps": 1000})
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def cancel_once_the_child_runs() -> None:
        while not _jobs_running():
            time.sleep(0.05)
        cancelled_at.append(time.monotonic())
        cancel.set()

    threading.Thread(target=cancel_once_the_child_runs, daemon=True).start()
    result = run_job(spec, preference_rows(8), cancel=cancel)
    assert result.cancelled and result.artifact_dir is None and not spec.final_dir.exists()
    assert time.monotonic() - cancelled_at[0] < 5  # stopped, not left to train its 1000 steps
    assert not _jobs_running()  # and reaped
    assert not list(tmp_path.glob(".launch-*"))
    assert run_job(spec, preference_rows(8), cancel=cancel).cancelled  # already cancelled: no child at all


def _jobs_running() -> list[str]:
    """Command lines of this process's children that run a job."""
    pids = [
        pid for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()
    ]
    lines = [Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") for pid in pids]
    return [line for line in lines if "tuneloop.learn.jobs" in line]


def test_a_failing_process_job_raises_job_failed_with_its_error(tiny_model, tmp_path, monkeypatch) -> None:
    # What the job module does with an error (tested for real by hand: a rows file without `rejected`).
    failing = "import sys; print('step 1/4 eta ?', file=sys.stderr); raise ValueError('row 0 lacks rejected')"
    monkeypatch.setattr(launchers, "command", lambda *args: [sys.executable, "-c", failing])
    with pytest.raises(JobFailed, match=r"exited with 1: .*ValueError: row 0 lacks rejected$"):
        run_job(_spec(tiny_model, tmp_path, engine="process"), preference_rows(2))

    # A child the kernel kills (out of memory) says so, rather than a bare -9.
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    monkeypatch.setattr(launchers, "command", lambda *args: [sys.executable, "-c", killed])
    with pytest.raises(JobFailed, match=r"was killed by SIGKILL \(out of memory\?\)"):
        run_job(_spec(tiny_model, tmp_path, engine="process"), preference_rows(2))
    assert not list(tmp_path.glob(".launch-*"))  # the rows copy is removed either way


def test_a_process_job_is_one_process(tiny_model, tmp_path) -> None:
    with pytest.raises(ValueError, match="use torchrun"):
        _spec(tiny_model, tmp_path, engine="process", processes=2)


def test_a_job_stops_when_the_process_that_launched_it_dies() -> None:
    launcher = subprocess.Popen(["sleep", "60"])  # stands in for a loop that gets SIGKILLed
    code = (
        "import time; from tuneloop.learn.launchers import stop_with_parent\n"
        "stop_with_parent(0.1); print('up', flush=True); time.sleep(60)"
    )
    job = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, launchers.PARENT_ENV: str(launcher.pid)},
    )
    try:
        assert job.stdout.readline() == "up\n"
        launcher.kill()
        launcher.wait()
        assert job.wait(timeout=10) == -signal.SIGTERM  # not training on for the minute
    finally:
        launcher.kill()
        job.kill()
        job.wait()
