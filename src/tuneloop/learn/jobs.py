"""Training jobs: a `JobSpec` says what to train; `run_job` trains it in-process, resumably, atomically.

The same spec runs on several processes or a GPU under Accelerate, with the rows in a file:

    accelerate launch --cpu -m tuneloop.learn.jobs SPEC.json ROWS.parquet
    accelerate launch -m tuneloop.learn.jobs SPEC.json ROWS.jsonl   # GPU: "use_cpu": false in trainer_args

`python -m tuneloop.learn.jobs SPEC.json ROWS.jsonl` runs it in one process. Only the main process
writes the final artifact directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneloop.errors import BadRequest

JobKind = Literal["dpo", "kto", "reward", "reward_embedding"]
ProgressFn = Callable[[int, int, float | None], None]

# LoRA on every attention and MLP projection of a Llama-style block; r=16 learns preferences well at 135M.
DEFAULT_LORA: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}

# CPU-first overrides of TRL's GPU-minded defaults (bf16 on, gradient checkpointing on, lr 1e-6 for full FT).
CPU_TRAINER_ARGS: dict[str, Any] = {
    "use_cpu": True,
    "bf16": False,
    "fp16": False,
    "activation_checkpointing": False,
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 4,
    "num_train_epochs": 1,
    "max_length": 256,
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 20,
    "save_total_limit": 2,
    "report_to": "none",
    "disable_tqdm": True,
}
KIND_TRAINER_ARGS: dict[str, dict[str, Any]] = {
    # The reference is the base with the adapter off; its log-probs never change, so compute them once.
    # DPO alone mostly pushes the rejected answer down ("likelihood displacement"); adding the NLL of the
    # chosen answer (RPO: Pang et al., 2024) makes the model actually produce what users preferred. On the
    # support scenario (SmolLM2, 251 events, 69 pairs; benchmarks/learning.py) hidden satisfaction went
    # 0.34 base → 0.35 sigmoid-only at 1e-4 → 0.49 with the NLL at 5e-4 → 0.71 with edits repeated
    # (KIND_REPEAT) → 0.81 at 1e-3.
    "dpo": {
        "precompute_ref_log_probs": True,
        "precompute_ref_batch_size": 8,
        "loss_type": ["sigmoid", "sft"],
        "learning_rate": 1e-3,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
    },
    "kto": {"precompute_ref_log_probs": True, "precompute_ref_batch_size": 8},
    "reward": {},
    # Not TRL: the MiniLM + logistic head trainer in embedding_reward.py reads these.
    "reward_embedding": {"l2": 1e-3, "max_iter": 200},
}
# A user's edit is the one signal that shows the policy text it did not write itself (every other pair ranks
# two of its own samples), so DPO sees each edit pair three times; see the figures above.
KIND_REPEAT: dict[str, dict[str, int]] = {"dpo": {"edit": 3}}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "dpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "reward": ("prompt", "chosen", "rejected"),
    "reward_embedding": ("prompt", "chosen", "rejected"),
}


class JobSpec(BaseModel):
    """What to train, on what, with which settings; the job id is a hash of all of it but `output_dir`."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind = Field(
        description="dpo / kto (policy adapter), reward (LoRA BT), reward_embedding (MiniLM BT)."
    )
    base_model: str = Field(description="Path of the base model directory (safetensors + tokenizer).")
    base_model_hash: str | None = Field(
        default=None, description="Content hash of the base model, for lineage."
    )
    snapshot_hash: str | None = Field(default=None, description="Content hash of the training snapshot.")
    amplify_k: int = Field(
        default=0,
        ge=0,
        description="Samples per prompt added by amplification (0: human pairs only); the "
        "rows differ with it, so it is part of the job's identity.",
    )
    repeat: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Copies of each row by its `origin` column (edit, preference, regenerated, reward, "
        "amplified), merged over the kind's defaults; 0 leaves that origin out, unlisted origins count once.",
    )
    init_adapter: str | None = Field(
        default=None,
        description="LoRA adapter directory to continue training from (a warm start from the tenant's "
        "production adapter); DPO/KTO only, and its rank must match `lora`.",
    )
    tenant: str = Field(default="default", description="Tenant whose data this adapter is trained on.")
    lora: dict[str, Any] = Field(
        default_factory=dict, description="peft.LoraConfig keyword arguments, merged over DEFAULT_LORA."
    )
    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="trl DPOConfig/KTOConfig/RewardConfig keyword arguments, merged over the CPU defaults.",
    )
    seed: int = Field(default=0, description="Seed for initialisation, shuffling and data splits.")
    output_dir: Path = Field(description="Directory that receives `<job id>/` when the job finishes.")
    id: str | None = Field(default=None, description="Job id; by default a hash of the spec.")

    @model_validator(mode="after")
    def _resolve_defaults(self) -> JobSpec:
        # Resolve once so job_spec.json records every setting the run used, not just the overrides.
        self.lora = {**DEFAULT_LORA, **self.lora}
        base = {} if self.kind == "reward_embedding" else CPU_TRAINER_ARGS
        self.trainer_args = {**base, **KIND_TRAINER_ARGS[self.kind], **self.trainer_args}
        self.repeat = {**KIND_REPEAT.get(self.kind, {}), **self.repeat}
        if self.init_adapter is not None and self.kind not in ("dpo", "kto"):
            raise ValueError(f"init_adapter: a {self.kind} job cannot continue a policy adapter")
        if self.id is None:
            payload = self.model_dump(mode="json", exclude={"output_dir", "id"})
            self.id = (
                f"{self.kind}-"
                + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
            )
        return self

    @property
    def final_dir(self) -> Path:
        """Where the finished artifact lives."""
        return self.output_dir / str(self.id)

    @property
    def partial_dir(self) -> Path:
        """Where the job trains and checkpoints until it finishes."""
        return self.output_dir / f".partial-{self.id}"


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
    # Extra columns (source, weight, ids) would confuse TRL's collators; drop them here.
    return [{c: row[c] for c in needed} for row in rows]


def trainer_config(spec: JobSpec, config_cls: type, output_dir: Path) -> Any:
    """Build TRL's config class from the spec: the resolved trainer args plus seed and output dir."""
    args = {**spec.trainer_args, "seed": spec.seed, "data_seed": spec.seed, "output_dir": str(output_dir)}
    return config_cls(**args)


def last_checkpoint(checkpoints_dir: Path) -> str | None:
    """The newest complete `checkpoint-N` directory, or None."""
    done = [p for p in checkpoints_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def run_job(
    spec: JobSpec,
    rows: Iterable[dict] | str | Path,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> JobResult:
    """Train `spec` on `rows` here, resuming from its last checkpoint; publish `<id>/` atomically."""
    final = spec.final_dir
    if (final / "metrics.json").exists():  # finished before: a job is idempotent
        return JobResult(str(spec.id), final, json.loads((final / "metrics.json").read_text()))
    rows = load_rows(rows, spec.kind, spec.repeat)
    partial = spec.partial_dir
    checkpoints = partial / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)

    from tuneloop.learn.callbacks import JobCallback

    callback = JobCallback(progress, cancel)
    train = _trainer_for(spec.kind)
    metrics = train(spec, rows, partial, callbacks=[callback], resume_from=last_checkpoint(checkpoints))
    if callback.cancelled:
        return JobResult(str(spec.id), None, metrics, cancelled=True)
    if not _is_main_process():
        return JobResult(str(spec.id), final, metrics)
    _publish(spec, partial, final, metrics)
    return JobResult(str(spec.id), final, metrics)


def _trainer_for(kind: JobKind) -> Callable[..., dict[str, Any]]:
    from tuneloop.learn import embedding_reward, policy_trainer, reward_model

    return {
        "dpo": policy_trainer.train_dpo,
        "kto": policy_trainer.train_kto,
        "reward": reward_model.train_reward_model,
        "reward_embedding": embedding_reward.train_embedding_reward,
    }[kind]


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


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
    spec = JobSpec.model_validate_json(Path(argv[0]).read_text())

    def report(step: int, total: int, eta: float | None) -> None:
        eta_text = "?" if eta is None else f"{eta:.0f}s"
        print(f"step {step}/{total} eta {eta_text}", file=sys.stderr, flush=True)

    result = run_job(spec, argv[1], progress=report)
    print(json.dumps({"job_id": result.job_id, "artifact_dir": str(result.artifact_dir), **result.metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
