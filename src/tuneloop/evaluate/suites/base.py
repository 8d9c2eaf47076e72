"""What every suite shares: the gate's context (versions, held-out data, the evaluator) and its verdict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import BadRequest
from tuneloop.evaluate.generation import Evaluator, Messages
from tuneloop.evaluate.policy import GatePolicy
from tuneloop.registry.versions import Version
from tuneloop.signals.snapshots import Snapshot
from tuneloop.store.repository import TenantStore

CANDIDATE = "candidate"
PRODUCTION = "production"
MAX_ROWS = 50  # evidence rows kept per suite in the report
# What a suite short of held-out prompts says to do about it (a snapshot holds out whole prompt clusters).
FEWER_PROMPTS = (
    " (snapshots hold out whole questions: collect feedback on more distinct ones, or lower the suite's "
    "min_prompts in gate_policy.yaml)"
)


class MissingInput(BadRequest):
    """A suite lacks the data it needs; the gate fails closed on it."""


@dataclass
class Verdict:
    """A suite's outcome: pass or fail, one line of why, its figures and per-item evidence rows."""

    passed: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)


def trial_judges(missing: str) -> Verdict:
    """A suite's pass, as skipped, for a candidate that keeps production's weights when `missing` leaves the
    suite nothing to judge it on: a prompt or decoding change is undone at runtime, the other suites still
    check it offline, and its trial on users, with guardrails, judges it (a trained adapter fails closed)."""
    reason = (
        f"skipped: {missing}, and the candidate keeps production's weights (its trial on users judges it)"
    )
    return Verdict(True, reason, {"skipped": True})


@dataclass
class GateContext:
    """Everything a suite may read; production None means the base model is serving."""

    tenant: TenantStore
    home: Path
    policy: GatePolicy
    candidate: Version
    production: Version | None
    snapshot: Snapshot | None
    evaluator: Evaluator
    snapshot_problem: str | None = None

    @property
    def same_weights(self) -> bool:
        """Whether the candidate serves production's weights, so only its prompt or decoding differ."""
        production = self.production
        if production is None:
            return self.candidate.artifact_path is None
        return (self.candidate.base_model, self.candidate.artifact_path) == (
            production.base_model,
            production.artifact_path,
        )

    def _snapshot(self) -> Snapshot:
        if self.snapshot is None:
            raise MissingInput(
                self.snapshot_problem
                or f"candidate {self.candidate.id} names no training snapshot (snapshot_hash), so there "
                "is no held-out data to evaluate on — register it with the snapshot it was trained on"
            )
        return self.snapshot

    def heldout_pairs(self) -> list[dict[str, Any]]:
        """Held-out human preference pairs of the candidate's snapshot, in a stable order."""
        return sorted(self._snapshot().rows("pairs", split="heldout"), key=_key)

    def heldout_prompts(self, limit: int) -> list[Messages]:
        """Distinct held-out prompts (from pairs, labels and SFT rows), in a stable order, at most `limit`."""
        snapshot = self._snapshot()
        prompts: dict[str, Messages] = {}
        for dataset in ("pairs", "kto", "sft"):
            for row in snapshot.rows(dataset, split="heldout"):
                prompt = row["prompt"] if "prompt" in row else row["messages"][:-1]
                prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
                prompts.setdefault(json.dumps(prompt, sort_keys=True), prompt)
        return [prompts[k] for k in sorted(prompts)][:limit]

    def training_rows(self) -> list[dict[str, Any]]:
        """Every row of the candidate's snapshot (all datasets, both splits); empty without a snapshot."""
        if self.snapshot is None:
            return []
        return [row for dataset in ("pairs", "kto", "sft") for row in self.snapshot.rows(dataset)]


def _key(row: dict[str, Any]) -> str:
    return json.dumps([row.get("prompt"), row.get("chosen"), row.get("rejected")], sort_keys=True)


def prompt_preview(prompt: Messages | str, limit: int = 120) -> str:
    """The last user message of a prompt, shortened for a report table."""
    if isinstance(prompt, str):
        text = prompt
    else:
        text = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    return text if len(text) <= limit else text[: limit - 1] + "…"
