"""Pieces of the learning benchmark (benchmarks/learning.py): a real server, traffic up to a feedback
budget, the naive SFT-on-thumbs-up baseline, and temperature-0 evaluation of many adapters at once.

Not a product feature: the SFT baseline lives here on purpose, it is what tuneloop is measured against.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tuneloop.config import Settings
from tuneloop.sim import Scenario, run_traffic
from tuneloop.store.repository import Store, TenantStore


def fresh_home(workdir: Path, model: str) -> tuple[Path, Settings, Store]:
    """A new tuneloop home under `workdir` for `model` (tiny or smollm2): its model directory, settings and
    store. The models folder is kept between runs, so the GGUF conversion happens once."""
    from tuneloop.model_files import ensure_base_model, make_tiny_model

    home = workdir / f"home-{model}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    models = workdir / "models"
    model_dir = ensure_base_model(models) if model == "smollm2" else make_tiny_model(models)
    settings = Settings(home=home, model=str(model_dir))
    return model_dir, settings, Store(settings.database_url)


def stop_server(proc: subprocess.Popen) -> None:
    """Terminate the server we started and wait for it."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Traffic:
    """Simulated traffic so far: interactions made, hidden satisfaction of what was served, chunks run."""

    interactions: int = 0
    score_sum: float = 0.0
    chunks: int = 0
    seconds: float = 0.0

    @property
    def satisfaction(self) -> float:
        return self.score_sum / self.interactions if self.interactions else 0.0


def traffic_to_budget(
    url: str,
    key: str,
    scenario: Scenario,
    tenant: TenantStore,
    budget: int,
    traffic: Traffic,
    *,
    concurrency: int = 8,
    max_chunk: int = 128,
) -> int:
    """Run simulated turns until the tenant has stored at least `budget` feedback events; return the count.

    Chunks are sized from the events-per-turn rate seen so far, aiming a little short, so the overshoot
    past the budget stays small. Each chunk has its own seed, so prompts and reactions never repeat.
    """
    stored = len(tenant.feedback())
    while stored < budget:
        rate = stored / traffic.interactions if traffic.interactions and stored else 0.6
        n = max(4, min(max_chunk, math.ceil(0.9 * (budget - stored) / max(rate, 0.05))))
        started = time.monotonic()
        report = run_traffic(url, key, scenario, n, concurrency=concurrency, seed=1000 + traffic.chunks)
        traffic.seconds += time.monotonic() - started
        traffic.chunks += 1
        traffic.interactions += report.interactions
        traffic.score_sum += report.satisfaction * report.interactions
        stored = len(tenant.feedback())
    return stored


def thumbs_up_rows(tenant: TenantStore, as_of: datetime) -> list[dict[str, Any]]:
    """Prompt-completion rows (TRL conversational) of every answer that got a thumbs up by `as_of`.

    Only the explicit thumb counts: this is the naive baseline that ignores every other signal.
    """
    liked = {
        e["interaction_id"]
        for e in tenant.feedback()
        if e["kind"] == "thumbs" and e["created_at"] <= as_of and _is_up(e["value"])
    }
    rows = []
    for interaction in tenant.interactions():
        if interaction["id"] in liked:
            prompt = [{"role": m["role"], "content": m["content"]} for m in interaction["messages"]]
            rows.append(
                {"prompt": prompt, "completion": [{"role": "assistant", "content": interaction["response"]}]}
            )
    return rows


def _is_up(value: Any) -> bool:
    if isinstance(value, dict):  # tolerate {"value": 1} shapes
        value = value.get("value")
    return value is True or (isinstance(value, int | float) and not isinstance(value, bool) and value > 0)


def train_sft(
    base_model: Path, rows: list[dict], out_dir: Path, trainer_args: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    """TRL SFTTrainer + LoRA (tuneloop's default LoRA and CPU settings) on `rows`; save the adapter."""
    from dataclasses import fields

    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tuneloop.learn.adapter_trainer import train_metrics
    from tuneloop.learn.job_config import CPU_TRAINER_ARGS, DEFAULT_LORA, KIND_TRAINER_ARGS
    from tuneloop.model_files import load_causal_lm

    accepted = {f.name for f in fields(SFTConfig)}
    # The same optimiser settings as tuneloop's DPO (learning rate, epochs, batch), so the baseline differs
    # only in its data and loss; DPO/KTO-only keys are dropped, not passed.
    optimiser = ("learning_rate", "num_train_epochs", "per_device_train_batch_size")
    dpo = {k: KIND_TRAINER_ARGS["dpo"][k] for k in optimiser}
    args = {**CPU_TRAINER_ARGS, **dpo, **trainer_args, "save_strategy": "no", "seed": seed, "data_seed": seed}
    args = {k: v for k, v in args.items() if k in accepted}
    model, tokenizer = load_causal_lm(base_model)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir=str(out_dir / "checkpoints"), **args),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(**{**DEFAULT_LORA, "task_type": "CAUSAL_LM"}),
    )
    trainer.train()
    trainer.save_model(str(out_dir))
    return train_metrics(trainer, n_rows=len(rows))


@dataclass
class Evaluation:
    """Temperature-0 answers of one variant on the evaluation prompts, scored by the hidden preference."""

    scores: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def satisfaction(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


def evaluate(
    model_dir: Path, adapters: dict[str, Path | None], scenario: Scenario, max_batch_size: int = 8
) -> dict[str, Evaluation]:
    """Every variant's answers on `scenario.eval_prompts()` from one EmbeddedBackend holding every adapter.

    `adapters` maps a variant name to an adapter directory, or to None for the base model.
    """
    return asyncio.run(_evaluate(model_dir, adapters, scenario, max_batch_size))


async def _evaluate(
    model_dir: Path, adapters: dict[str, Path | None], scenario: Scenario, max_batch_size: int
) -> dict[str, Evaluation]:
    from tuneloop.serve.backends.base import GenerationRequest
    from tuneloop.serve.backends.embedded import EmbeddedBackend

    prompts = scenario.eval_prompts()
    backend = EmbeddedBackend(
        model_dir, max_queue=len(prompts) * len(adapters) + 1, max_batch_size=max_batch_size
    )
    await backend.start()
    try:
        names = {variant: f"a{i}" for i, variant in enumerate(adapters)}  # PEFT-safe adapter names
        for variant, path in adapters.items():
            if path is not None:
                await backend.load_adapter(names[variant], path)

        async def ask(variant: str, messages: list[dict[str, str]]) -> str:
            request = GenerationRequest(
                messages=messages,
                max_tokens=scenario.max_tokens,
                temperature=0,
                adapter=names[variant] if adapters[variant] is not None else None,
            )
            return (await backend.generate(request)).text

        jobs = [(v, p) for v in adapters for p in prompts]
        texts = await asyncio.gather(*(ask(v, scenario.messages(p)) for v, p in jobs))
    finally:
        await backend.close()
    out = {variant: Evaluation() for variant in adapters}
    for (variant, prompt), text in zip(jobs, texts, strict=True):
        out[variant].answers.append(text)
        out[variant].scores.append(scenario.score(prompt, text))
    return out
