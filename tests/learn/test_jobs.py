"""Jobs: cancelled or killed runs leave no final artifact, resume from a checkpoint, publish atomically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from safetensors.torch import load_file

from tests.learn.data import preference_rows
from tuneloop.errors import BadRequest, Conflict
from tuneloop.learn.job_config import JobSpec, has_bf16_units
from tuneloop.learn.jobs import last_checkpoint, load_rows, run_job

ARGS = {
    "max_steps": 6,
    "save_steps": 2,
    "learning_rate": 5e-3,
    "max_length": 96,
    "per_device_train_batch_size": 2,
}


def _spec(tiny_model, tmp_path, **changes) -> JobSpec:
    fields = {"kind": "dpo", "base_model": str(tiny_model), "tenant": "acme", "trainer_args": ARGS, **changes}
    return JobSpec(output_dir=tmp_path, **fields)


def _assert_valid_artifact(path) -> None:
    names = {p.name for p in path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "metrics.json", "job_spec.json"} <= names
    assert "checkpoints" not in names
    assert load_file(path / "adapter_model.safetensors")
    assert json.loads((path / "metrics.json").read_text())["steps"] == 6


def test_cancelled_job_leaves_no_final_dir_and_resumes_to_a_valid_artifact(tiny_model, tmp_path):
    spec = _spec(tiny_model, tmp_path)
    cancel = threading.Event()
    steps: list[tuple[int, int, float | None]] = []

    def progress(step: int, total: int, eta: float | None) -> None:
        steps.append((step, total, eta))
        if step == 3:
            cancel.set()

    first = run_job(spec, preference_rows(12), progress=progress, cancel=cancel)
    assert first.cancelled and first.artifact_dir is None
    assert not spec.final_dir.exists()
    assert last_checkpoint(spec.partial_dir / "checkpoints").endswith("checkpoint-3")
    assert steps[-1][:2] == (3, 6) and steps[-1][2] is not None and steps[-1][2] > 0

    steps.clear()
    second = run_job(spec, preference_rows(12), progress=progress)
    assert not second.cancelled
    assert steps[0][0] == 4  # resumed after the checkpoint, not from scratch
    assert second.artifact_dir == spec.final_dir and not spec.partial_dir.exists()
    _assert_valid_artifact(spec.final_dir)
    recorded = json.loads((spec.final_dir / "job_spec.json").read_text())
    assert recorded["tenant"] == "acme" and recorded["trainer_args"]["use_cpu"] is True


def test_killed_job_process_resumes_to_a_valid_artifact(tiny_model, tmp_path):
    spec = _spec(tiny_model, tmp_path)
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(12)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.learn.jobs", str(tmp_path / "spec.json"), str(rows_file)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    for line in proc.stderr:
        if line.startswith("step 3/6"):  # checkpoint-2 is on disk; step 3 is in memory only
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not spec.final_dir.exists()
    assert last_checkpoint(spec.partial_dir / "checkpoints") is not None

    result = run_job(spec, rows_file)
    assert result.artifact_dir == spec.final_dir
    _assert_valid_artifact(spec.final_dir)


def test_finished_job_is_returned_without_training_again(tiny_model, tmp_path):
    spec = _spec(tiny_model, tmp_path, trainer_args={**ARGS, "max_steps": 2})
    first = run_job(spec, preference_rows(4))
    calls: list[int] = []
    again = run_job(spec, preference_rows(4), progress=lambda step, total, eta: calls.append(step))
    assert again.artifact_dir == first.artifact_dir and again.metrics == first.metrics
    assert calls == []


def test_job_id_is_a_stable_hash_of_the_settings(tmp_path):
    a = JobSpec(kind="dpo", base_model="m", snapshot_hash="s1", output_dir=tmp_path)
    b = JobSpec(kind="dpo", base_model="m", snapshot_hash="s1", output_dir=tmp_path / "elsewhere")
    c = JobSpec(kind="dpo", base_model="m", snapshot_hash="s2", output_dir=tmp_path)
    assert a.id == b.id != c.id
    assert a.trainer_args["precompute_ref_log_probs"] is True
    assert a.trainer_args["bf16"] is has_bf16_units("cpu")  # autocast only on CPUs with bf16 units
    assert JobSpec(kind="dpo", base_model="m", lora={"r": 4}, output_dir=tmp_path).lora["lora_alpha"] == 32


def test_rows_missing_a_column_are_rejected_with_the_needed_columns():
    with pytest.raises(BadRequest, match="needs"):
        load_rows([{"prompt": [], "chosen": []}], "dpo")


def test_dpo_sees_each_edit_pair_three_times_and_an_origin_can_be_left_out(tmp_path):
    origins = ("edit", "regenerated", "reward")
    rows = [{**r, "origin": origin} for r, origin in zip(preference_rows(3), origins, strict=True)]
    spec = JobSpec(kind="dpo", base_model="m", repeat={"regenerated": 0}, output_dir=tmp_path)
    assert spec.repeat == {"edit": 3, "regenerated": 0}
    loaded = load_rows(rows, "dpo", spec.repeat)
    assert loaded == [preference_rows(3)[0]] * 3 + [preference_rows(3)[2]]
    with pytest.raises(BadRequest, match="leaves no training rows"):
        load_rows(rows, "dpo", {"edit": 0, "regenerated": 0, "reward": 0})


def test_rows_load_from_parquet_without_extra_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**r, "source": "human"} for r in preference_rows(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    loaded = load_rows(tmp_path / "rows.parquet", "dpo")
    assert loaded == preference_rows(3)


def test_a_job_already_training_elsewhere_is_refused_not_trained_twice(tiny_model, tmp_path):
    spec = _spec(tiny_model, tmp_path, trainer_args={**ARGS, "max_steps": 2})
    training, release = threading.Event(), threading.Event()

    def hold(step: int, total: int, eta: float | None) -> None:
        training.set()
        release.wait(60)

    first = threading.Thread(target=run_job, args=(spec, preference_rows(4)), kwargs={"progress": hold})
    first.start()
    try:
        assert training.wait(120)
        with pytest.raises(Conflict, match="already training"):
            run_job(spec, preference_rows(4))
    finally:
        release.set()
        first.join(120)
    assert json.loads((spec.final_dir / "metrics.json").read_text())["steps"] == 2
    assert run_job(spec, preference_rows(4)).artifact_dir == spec.final_dir  # finished: returned, no lock


def test_a_cpu_job_trains_on_the_cores_other_processes_leave_idle(tiny_model, tmp_path, monkeypatch):
    """Two threads on two cores, one of them serving users, wait for each other at every operation: with
    the machine busy, the job's steps run on one thread, and the process keeps its own count after."""
    import torch

    from tests.serve.test_idle_cores import write_stat
    from tuneloop.learn import jobs
    from tuneloop.serve.backends.cores import IdleCores

    stat = tmp_path / "stat"
    write_stat(stat, 10, 10)

    def busy_machine(every: float) -> IdleCores:
        cores = IdleCores(stat, every=0)
        write_stat(stat, 1010, 10)  # since that look, other processes kept every core busy
        return cores

    monkeypatch.setattr(jobs, "IdleCores", busy_machine)
    before, seen = torch.get_num_threads(), []
    run_job(
        _spec(tiny_model, tmp_path),
        preference_rows(12),
        progress=lambda *_: seen.append(torch.get_num_threads()),
    )
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
