"""Distributed engines: a job on two torchrun processes (gloo, CPU) makes the adapter one process makes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.learn.data import preference_rows
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.jobs import run_job
from tuneloop.learn.launchers import command

ARGS = {"max_steps": 3, "learning_rate": 5e-3, "max_length": 64, "save_steps": 100}


def _spec(tiny_model, out, **changes) -> JobSpec:
    fields = {"kind": "dpo", "base_model": str(tiny_model), "tenant": "acme", "seed": 3, **changes}
    return JobSpec(output_dir=out, **fields)


def test_two_cpu_processes_train_the_adapter_one_process_trains(tiny_model, tmp_path) -> None:
    rows = preference_rows(12)
    # One process with 4 rows a step, and two processes with 2 each: the same global batch.
    local = run_job(
        _spec(tiny_model, tmp_path / "local", trainer_args={**ARGS, "per_device_train_batch_size": 4}), rows
    )
    spread = _spec(tiny_model, tmp_path / "ddp", engine="torchrun", processes=2,
                   trainer_args={**ARGS, "per_device_train_batch_size": 2})  # fmt: skip
    steps: list[int] = []
    ddp = run_job(spread, rows, progress=lambda step, total, eta: steps.append(step))

    assert ddp.artifact_dir == spread.final_dir and steps == [1, 2, 3]
    assert json.loads((ddp.artifact_dir / "job_spec.json").read_text())["engine"] == "torchrun"
    assert not list(spread.output_dir.glob(".*"))  # no partial or launch directory is left behind
    one, two = (load_file(r.artifact_dir / "adapter_model.safetensors") for r in (local, ddp))
    assert one.keys() == two.keys()
    moved = max((t.abs().max() for k, t in one.items() if "lora_B" in k), default=torch.tensor(0.0))
    assert moved > 1e-3  # training changed the adapter (LoRA B starts at zero) ...
    for name, tensor in one.items():  # ... and both engines changed it alike
        torch.testing.assert_close(two[name], tensor, rtol=1e-3, atol=1e-4 * float(moved), msg=name)


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
