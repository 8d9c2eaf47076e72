"""A tenant's training run: snapshot rows → job → validated artifact → registered candidate version.

The artifact directory is published atomically by the job before the registry row is written in one
transaction, so a crash anywhere leaves at worst an unregistered artifact, never a version pointing at a
partial one. The version id derives from the job id: running the same job again returns the same version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

from tuneloop.config import Settings
from tuneloop.errors import NotFound
from tuneloop.registry.artifacts import checksums, validate_adapter
from tuneloop.registry.versions import Registry, Version
from tuneloop.signals.snapshots import get_snapshot
from tuneloop.store.repository import TenantStore

Method = Literal["dpo", "kto", "reward", "reward_embedding"]
DATASET = {"dpo": "pairs", "kto": "kto", "reward": "pairs", "reward_embedding": "pairs"}


def train_version(
    tenant: TenantStore,
    settings: Settings,
    snapshot: str,
    method: Method,
    *,
    lora: dict[str, Any] | None = None,
    trainer_args: dict[str, Any] | None = None,
    repeat: dict[str, int] | None = None,
    init_adapter: str | None = None,
    seed: int = 0,
    amplify_k: int = 0,
    system_prompt: str | None = None,
    decoding: dict[str, Any] | None = None,
    progress: Callable[[int, int, float | None], None] | None = None,
    cancel: threading.Event | None = None,
    actor: str = "cli",
) -> Version | None:
    """Train `method` on the tenant's snapshot and register the result; None when cancelled."""
    from tuneloop.learn.job_config import (
        JobSpec,
        class_weighted,
        fitted_length,
        paced,
        train_device,
        typed_args,
    )
    from tuneloop.learn.jobs import run_job
    from tuneloop.model_files import model_hash, resolve_model

    snap = get_snapshot(tenant, snapshot)  # scoped: another tenant's snapshot is NotFound
    base = resolve_model(settings.model, settings.home)
    # Checked before anything loads or samples: a misspelt argument is a 400 in seconds, not a failed job.
    trainer_args, lora = typed_args(method, trainer_args or {}, lora or {})
    rows = snap.rows(DATASET[method], split="train")
    metrics_extra: dict[str, Any] = {"human_pairs": len(rows)} if DATASET[method] == "pairs" else {}
    if amplify_k and method == "dpo":
        rows, metrics_extra = _amplified(tenant, base, rows, amplify_k, seed)
    device = train_device(settings.train_device)
    fitted = fitted_length(method, rows, trainer_args, base, device)
    spec = JobSpec(
        kind=method,
        base_model=str(base),
        base_model_hash=model_hash(base),
        snapshot_hash=snap.hash,
        amplify_k=amplify_k if method == "dpo" else 0,
        tenant=tenant.tenant_id,
        lora=lora,
        trainer_args=class_weighted(
            method, rows, paced(method, rows, fitted, repeat or {}, warm=init_adapter is not None)
        ),
        repeat=repeat or {},
        init_adapter=init_adapter,
        seed=seed,
        output_dir=settings.home / "jobs" / tenant.tenant_id,
        engine=settings.train_engine,
        processes=settings.train_processes,
        device=device,
    )
    registry = Registry(tenant)
    version_id = f"{'rm' if method.startswith('reward') else 'v'}-{spec.id.split('-')[-1][:10]}"
    try:
        return registry.get(version_id)
    except NotFound:
        pass
    result = run_job(spec, rows, progress=progress, cancel=cancel)
    if result.cancelled or result.artifact_dir is None:
        return None
    if method == "reward_embedding":
        sums = checksums(result.artifact_dir)
    else:
        sums = validate_adapter(result.artifact_dir, base, spec.lora["r"])
    return registry.register(
        kind="reward_model" if method.startswith("reward") else "adapter",
        base_model=settings.model,
        actor=actor,
        version_id=version_id,
        base_model_hash=spec.base_model_hash,
        snapshot_hash=snap.hash,
        artifact_path=str(result.artifact_dir),
        artifact_checksums=sums,
        system_prompt=system_prompt,
        decoding=decoding,
        job_spec=spec.model_dump(mode="json"),
        metrics={**result.metrics, **metrics_extra, "method": method},
    )


def _amplified(
    tenant: TenantStore, base: Any, rows: list[dict], k: int, seed: int
) -> tuple[list[dict], dict]:
    """Human pairs plus best-vs-worst samples of the production adapter, judged by the production reward
    model."""
    from tuneloop.learn.amplify import amplify, load_generator
    from tuneloop.learn.reward_model import load_reward_model

    registry = Registry(tenant)
    judge = registry.production("reward_model")
    if judge is None or not judge.artifact_path:
        raise NotFound(
            "amplification needs a production reward model — train one with `tuneloop train reward`"
        )
    current = registry.production("adapter")
    generator = load_generator(str(base), current.artifact_path if current else None)
    prompts = list({str(r["prompt"]): r["prompt"] for r in rows}.values())
    result = amplify(
        prompts,
        generator,
        load_reward_model(judge.artifact_path, str(base)),
        k=k,
        human_pairs=rows,
        seed=seed,
    )
    return result.rows, {
        "human_pairs": result.counts["human"],
        "amplified_pairs": result.counts["amplified"],
        "generated_samples": result.counts["generated"],
        "reward_model": judge.id,
    }
