"""What a training job trains: `JobSpec` and the defaults it resolves against, shared by every trainer."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneloop.errors import BadRequest, ConfigError
from tuneloop.learn.privacy import DP_EMBEDDING_ONLY, TRAINER_ARGS_KEY
from tuneloop.model_files import load_tokenizer

JobKind = Literal["dpo", "kto", "reward", "reward_embedding"]
# Where a job trains: in this process, in one child process, or as a group of DDP processes launched by
# torchrun or Accelerate.
Engine = Literal["local", "process", "torchrun", "accelerate"]
# What a job trains on: the CPU, or the first CUDA GPU each training process sees.
Device = Literal["cpu", "cuda"]
# How a job runs, not what it trains: left out of the job id, so a deployment may change engines between runs.
HOW_FIELDS = {"output_dir", "id", "engine", "processes"}

# LoRA on every attention and MLP projection of a Llama-style block; r=16 learns preferences well at 135M.
DEFAULT_LORA: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}

# CPU-first overrides of TRL's GPU-minded defaults (bf16 on, gradient checkpointing on, lr 1e-6 for full FT).
# bf16 here is the fallback: a spec that does not set it trains in bf16 autocast where its device multiplies
# bf16 in hardware (`has_bf16_units`), in fp32 elsewhere. On a GPU only `use_cpu` changes: the learning
# settings (rate, batch, passes) are the ones measured, whatever computes them.
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
    # chosen answer (RPO: Pang et al., 2024) makes the model actually produce what users preferred. How these
    # settings were measured: docs/learning-defaults.md.
    "dpo": {
        "precompute_ref_log_probs": True,
        "precompute_ref_batch_size": 8,
        "loss_type": ["sigmoid", "sft"],
        "learning_rate": 1e-3,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
    },
    # KTO at the CPU default (1e-4) did not move the support scenario; 1e-3 did (docs/learning-defaults.md).
    "kto": {"precompute_ref_log_probs": True, "precompute_ref_batch_size": 8, "learning_rate": 1e-3},
    "reward": {},
    # Not TRL: the MiniLM + logistic head trainer in embedding_reward.py reads these.
    "reward_embedding": {"l2": 1e-3, "max_iter": 200},
}
# A user's edit is the one signal that shows the adapter text it did not write itself (every other pair ranks
# two of its own samples), so DPO sees each edit pair three times (docs/learning-defaults.md).
KIND_REPEAT: dict[str, dict[str, int]] = {"dpo": {"edit": 3}}
# A turn's adapter moves about this many optimizer steps from where it starts: a step the canary can verify
# and the next turn can build on (docs/learning-defaults.md). Small snapshots take more passes, large ones
# stop at MAX_STEPS, which also bounds a turn's CPU time beside live traffic; a warm start, which already
# learned from the turns before, stops at TARGET_STEPS (a demo's second turn trained 64 steps for 8 minutes).
TARGET_STEPS = 32
MAX_EPOCHS = 4
MAX_STEPS = 64
# A job's rows are cut at max_length tokens, prompt and answer together: TRL's DPO and KTO cut the answer's
# end (a system prompt of 190 tokens left a third of a tenant's answers cut at 256), DPO drops a row whose
# prompt alone fills it, and its reward trainer drops every pair longer. So max_length covers the longest
# row, in steps of 64, up to MAX_TRAIN_TOKENS, past which one row costs more CPU than its pair is worth.
MIN_TRAIN_TOKENS = 256
MAX_TRAIN_TOKENS = 1024
CPU_BF16_TOKENS = 512  # a bf16 CPU's micro-batch: two pairs of up to 256 tokens, one longer pair
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
        description="dpo / kto (LoRA adapter), reward (LoRA BT), reward_embedding (MiniLM BT)."
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
    engine: Engine = Field(
        default="local",
        description="local: train in this process; process: in one child process running "
        "`python -m tuneloop.learn.jobs` (a crash or out-of-memory kill takes only the child); torchrun / "
        "accelerate: launch `processes` DDP processes (gloo on CPU, NCCL on GPUs) that each run it. "
        "reward_embedding jobs always train locally.",
    )
    processes: int = Field(
        default=1,
        ge=1,
        description="Processes a torchrun/accelerate job launches (one per GPU); each takes "
        "per_device_train_batch_size rows a step, so the global batch grows with them.",
    )
    device: Device = Field(
        default="cpu",
        description="Where each training process computes: `cpu`, or `cuda` (its GPU, in bf16 autocast "
        "where the GPU has bf16 units); `train_device` chooses it from the deployment's settings.",
    )
    output_dir: Path = Field(description="Directory that receives `<job id>/` when the job finishes.")
    id: str | None = Field(default=None, description="Job id; by default a hash of the spec.")

    @model_validator(mode="after")
    def _resolve_defaults(self) -> JobSpec:
        # Resolve once so job_spec.json records every setting the run used, not just the overrides.
        self.lora = {**DEFAULT_LORA, **self.lora}
        base = {} if self.kind == "reward_embedding" else CPU_TRAINER_ARGS
        if self.device == "cuda" and base:
            base = {**base, "use_cpu": False}
        args = {**base, **KIND_TRAINER_ARGS[self.kind], **self.trainer_args}
        if base and "bf16" not in self.trainer_args:
            args["bf16"] = has_bf16_units("cpu" if args.get("use_cpu") else "cuda")
        self.trainer_args = args
        self.repeat = {**KIND_REPEAT.get(self.kind, {}), **self.repeat}
        if self.init_adapter is not None and self.kind not in ("dpo", "kto"):
            raise ValueError(f"init_adapter: a {self.kind} job cannot continue an adapter")
        if self.kind == "reward_embedding":
            self.engine, self.processes = "local", 1  # a logistic head on MiniLM features: seconds, no DDP
        if self.engine == "process" and self.processes > 1:
            raise ValueError("engine process trains in one process; use torchrun for several")
        if self.engine == "accelerate" and self.trainer_args.get("use_cpu") and self.processes > 1:
            raise ValueError("engine accelerate runs several CPU processes only through MPI; use torchrun")
        if self.id is None:
            payload = self.model_dump(mode="json", exclude=HOW_FIELDS)
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


def train_device(setting: str) -> Device:
    """The device `TUNELOOP_TRAIN_DEVICE` names: `auto` is a CUDA GPU when PyTorch sees one, else the CPU."""
    if setting == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        raise ConfigError("TUNELOOP_TRAIN_DEVICE=cuda, but PyTorch sees no CUDA GPU on this machine")
    return "cpu"


@functools.cache
def has_bf16_units(device: Device = "cpu") -> bool:
    """Whether `device` multiplies bf16 in hardware: there bf16 autocast speeds up the training matmuls, while
    weights, LoRA and optimizer stay fp32. A CPU needs AVX512-BF16 or AMX (by the Linux cpuinfo flags);
    elsewhere bf16 is emulated: on an AVX2-only EPYC a bf16 linear layer ran 5x slower."""
    if device == "cuda":
        import torch

        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return not {"avx512_bf16", "amx_bf16"}.isdisjoint(flags)


def weights_dtype(spec: JobSpec) -> str:
    """The dtype a job loads its frozen base in: bf16 on a GPU that trains in bf16 autocast (half the memory
    and load time; LoRA and the score head stay float32), float32 on a CPU, whose autocast keeps fp32
    weights."""
    on_gpu = not spec.trainer_args.get("use_cpu", True)
    return "bfloat16" if on_gpu and spec.trainer_args.get("bf16") else "float32"


# The TRL config class each kind's trainer builds (reward_embedding has its own few arguments).
TRL_CONFIGS = {"dpo": "DPOConfig", "kto": "KTOConfig", "reward": "RewardConfig"}


def typed_args(
    kind: JobKind, trainer_args: dict[str, Any], lora: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`trainer_args` and `lora` as a job of `kind` will use them, checked before anything loads: a name the
    TRL config or LoraConfig does not take, or a value of the wrong type, is a BadRequest; a string where a
    number or a flag is declared is read as one (YAML reads `5e-5` as a string, and TRL would fail on it at
    its first step)."""
    import peft
    import trl

    if kind != "reward_embedding" and TRAINER_ARGS_KEY in trainer_args:
        raise BadRequest(DP_EMBEDDING_ONLY, param=TRAINER_ARGS_KEY)
    if kind == "reward_embedding":  # MiniLM + a logistic head: its few arguments are checked where it trains
        return trainer_args, lora
    trl_config = getattr(trl, TRL_CONFIGS[kind])
    return _typed(trl_config, trainer_args, "trainer"), _typed(peft.LoraConfig, lora, "LoRA")


def _typed(config_cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    from pydantic import TypeAdapter, ValidationError

    hints = typing.get_type_hints(config_cls)
    typed = {}
    for name, value in values.items():
        if name not in hints:
            raise BadRequest(f"{what} argument {name!r}: not one {config_cls.__name__} takes", param=name)
        if _sends_off_the_machine(name, value):
            raise BadRequest(
                f"{what} argument {name}={value!r}: a job never uploads its adapter or metrics (they are "
                "trained on users' data); export a version with `tuneloop versions export` instead",
                param=name,
            )
        options = typing.get_args(hints[name]) or (hints[name],)
        # Only strings are read, and only toward a declared number or flag: TRL's hints are narrower than what
        # it accepts elsewhere (fsdp=True against `str | None`), so other values pass as given.
        if isinstance(value, str) and str not in options and {int, float, bool} & set(options):
            try:
                value = TypeAdapter(hints[name]).validate_python(value)
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"]
                raise BadRequest(f"{what} argument {name}={value!r}: {problem}", param=name) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"{what} argument {name}={value}: give a finite number", param=name)
        typed[name] = value
    return typed


def _sends_off_the_machine(name: str, value: Any) -> bool:
    """Whether a trainer argument would upload the model or its logs (a hub push, a tracking service)."""
    if name.startswith("hub_") or name == "push_to_hub":
        return bool(value)
    if name == "report_to":
        return value not in (None, "none", [], ["none"])
    return False


def trainer_config(spec: JobSpec, config_cls: type, output_dir: Path) -> Any:
    """Build TRL's config class from the spec: the resolved trainer args plus seed and output dir."""
    args = {**spec.trainer_args, "seed": spec.seed, "data_seed": spec.seed, "output_dir": str(output_dir)}
    return config_cls(**args)


def lora_config(spec: JobSpec, **extra: Any) -> Any:
    """PEFT's LoraConfig from the spec's `lora` plus `extra` (task type, modules to save)."""
    from peft import LoraConfig

    return LoraConfig(**{**spec.lora, **extra})


def fitted_length(
    kind: JobKind,
    rows: list[dict],
    trainer_args: dict[str, Any],
    base_model: str | Path,
    device: Device = "cpu",
) -> dict[str, Any]:
    """`trainer_args` with a max_length that holds the longest row (MIN_TRAIN_TOKENS to MAX_TRAIN_TOKENS),
    unless the caller set one, and the batch split into micro-batches, unless the caller set either: on an
    fp32 CPU the smallest a kind allows, on a bf16 one about CPU_BF16_TOKENS, on a GPU shrinking past
    MIN_TRAIN_TOKENS so a step holds about the activations it held at 256 tokens. Gradients accumulate to
    the same batch either way."""
    if kind == "reward_embedding":
        return trainer_args
    args = dict(trainer_args)
    if "max_length" not in args:
        tokenizer = load_tokenizer(base_model) if rows else None
        longest = max((_tokens(row, tokenizer) for row in rows), default=0)
        args["max_length"] = min(MAX_TRAIN_TOKENS, max(MIN_TRAIN_TOKENS, 64 * math.ceil(longest / 64)))
    if {"per_device_train_batch_size", "gradient_accumulation_steps"} & args.keys():
        return args
    batch = _resolved(kind, args)["per_device_train_batch_size"]
    # KTO's KL estimate pairs each answer with another row's prompt in the same micro-batch: it needs two.
    least = 2 if kind == "kto" else 1
    # On a CPU in fp32 the smallest micro-batch trains fastest and in the least memory (nothing padded to a
    # longer neighbour, activations that stay in cache); one that multiplies bf16 in hardware runs a pair's
    # small products poorly, so there a micro-batch holds about CPU_BF16_TOKENS (docs/learning-defaults.md).
    if device == "cpu":
        bf16 = args.get("bf16", has_bf16_units("cpu"))
        room = max(least, CPU_BF16_TOKENS // args["max_length"]) if bf16 else least
    else:
        room = max(least, batch * MIN_TRAIN_TOKENS // args["max_length"])
    micro = max(d for d in range(1, batch + 1) if batch % d == 0 and d <= room)
    if micro == batch:
        return args
    return {**args, "per_device_train_batch_size": micro, "gradient_accumulation_steps": batch // micro}


def _tokens(row: dict, tokenizer: Any) -> int:
    """Tokens of the row's prompt with its longest answer, as its chat template lays them out."""
    answers = [row[c] for c in ("chosen", "rejected", "completion") if c in row]
    prompt = row["prompt"]
    if isinstance(prompt, str):  # a plain-text row (a file a team trains on by hand)
        texts = [prompt + (a if isinstance(a, str) else a[-1]["content"]) for a in answers]
    else:
        texts = [tokenizer.apply_chat_template(prompt + a, tokenize=False) for a in answers]
    return max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)


def _resolved(kind: JobKind, trainer_args: dict[str, Any]) -> dict[str, Any]:
    return {**CPU_TRAINER_ARGS, **KIND_TRAINER_ARGS[kind], **trainer_args}


def paced(
    kind: JobKind,
    rows: list[dict],
    trainer_args: dict[str, Any],
    repeat: dict[str, int],
    *,
    warm: bool = False,
) -> dict[str, Any]:
    """`trainer_args` with the passes over `rows` chosen from their number (TARGET_STEPS), unless the caller
    set num_train_epochs or max_steps; only adapter jobs are paced, a `warm` start to TARGET_STEPS at most."""
    if kind not in ("dpo", "kto") or {"num_train_epochs", "max_steps"} & trainer_args.keys():
        return trainer_args
    copies = {**KIND_REPEAT.get(kind, {}), **repeat}
    seen = sum(copies.get(str(row.get("origin")), 1) for row in rows)
    resolved = _resolved(kind, trainer_args)
    batch = resolved["per_device_train_batch_size"] * resolved.get("gradient_accumulation_steps", 1)
    per_epoch = max(1, math.ceil(seen / batch))
    epochs = min(MAX_EPOCHS, math.ceil(TARGET_STEPS / per_epoch))
    args = {**trainer_args, "num_train_epochs": epochs}
    most = TARGET_STEPS if warm else MAX_STEPS
    if per_epoch * epochs > most:
        args["max_steps"] = most
    return args


def class_weighted(kind: JobKind, rows: list[dict], trainer_args: dict[str, Any]) -> dict[str, Any]:
    """`trainer_args` with KTO's class weights set so that desirable and undesirable answers weigh alike
    (TRL's guidance: weighted desirable over undesirable between 1 and 4/3), unless the caller set either.

    Users mostly rate a young model's answers down: 27 desirable answers against 98 undesirable, weighed
    equally, pushed the undesirable ones' log-probs down until the adapter's answers collapsed into loops."""
    if kind != "kto" or {"desirable_weight", "undesirable_weight"} & trainer_args.keys():
        return trainer_args
    desirable = sum(bool(row["label"]) for row in rows)
    undesirable = len(rows) - desirable
    if not desirable or not undesirable:
        return trainer_args
    if undesirable > desirable:
        return {**trainer_args, "undesirable_weight": round(desirable / undesirable, 4)}
    if desirable > 4 / 3 * undesirable:
        return {**trainer_args, "desirable_weight": round(4 / 3 * undesirable / desirable, 4)}
    return trainer_args
