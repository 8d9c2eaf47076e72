"""Seed a tenant's store with traffic through the tenant-scoped store API (what capture itself calls)."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from tuneloop.store.repository import TenantStore, payload_hash

COOKING = [
    "How long should I roast a {} at 200C?",
    "What spices go well with {} in a stew?",
    "Can I freeze cooked {} and reheat it later?",
    "Give me a quick weeknight recipe with {}.",
    "How do I keep {} from sticking to the pan?",
]
FOODS = ["chicken", "salmon", "lentils", "potatoes", "tofu", "carrots", "rice", "mushrooms", "beef", "pasta"]
TAXES = [
    "How do I file a {} tax return as a freelancer?",
    "Which {} expenses are deductible for a small business?",
    "What is the deadline for the {} VAT declaration?",
    "Do I owe capital gains tax when selling {} shares?",
    "How are {} pension contributions taxed?",
]
TAX_WORDS = ["quarterly", "annual", "foreign", "employee", "inherited", "corporate", "rental", "crypto"]


def cooking_prompt(rng: random.Random) -> str:
    return rng.choice(COOKING).format(rng.choice(FOODS))


def tax_prompt(rng: random.Random) -> str:
    return rng.choice(TAXES).format(rng.choice(TAX_WORDS))


def log(
    tenant: TenantStore,
    *,
    prompt: str,
    response: str,
    created_at: datetime,
    version: str | None = None,
    latency_ms: float = 100.0,
    metadata: dict[str, Any] | None = None,
    arm: str | None = None,
    experiment_id: str | None = None,
    user: str | None = None,
    session: str | None = None,
) -> str:
    """Store one interaction as the gateway would; returns its id."""
    row = {
        "id": "int-" + uuid.uuid4().hex,
        "user_id": user,
        "session_id": session,
        "messages": [{"role": "user", "content": prompt}],
        "response": response,
        "choices": [response],
        "model": "test-model",
        "adapter_version": version,
        "arm": arm,
        "experiment_id": experiment_id,
        "metadata": metadata,
        "latency_ms": latency_ms,
        "created_at": created_at,
    }
    tenant.log_interaction(row, payload_hash(row))
    return row["id"]


def give(tenant: TenantStore, interaction_id: str, kind: str, value: Any, at: datetime) -> None:
    """Store one user feedback event on an interaction."""
    event = {
        "id": "ev-" + uuid.uuid4().hex,
        "interaction_id": interaction_id,
        "kind": kind,
        "value": value,
        "rater": None,
        "source": "user",
        "metadata": None,
        "created_at": at,
    }
    [result] = tenant.add_feedback([(event, payload_hash(event))])
    assert result.status == "accepted", result


def stream(
    tenant: TenantStore,
    *,
    start: datetime,
    hours: float,
    count: int,
    prompt: Any,
    version: str | None = None,
    positive: float = 0.7,
    response_words: int = 20,
    seed: int = 0,
    error_rate: float = 0.0,
    escalation_rate: float = 0.0,
    **extra: Any,
) -> list[str]:
    """`count` interactions spread over `hours`, each with a thumbs event (+1 with prob. `positive`); a
    share `error_rate` failed and a share `escalation_rate` was escalated."""
    rng = random.Random(seed)
    ids = []
    for i in range(count):
        at = start + timedelta(hours=hours * i / count)
        words = max(1, int(rng.gauss(response_words, response_words / 5)))
        iid = log(
            tenant,
            prompt=prompt(rng),
            response=" ".join(["word"] * words),
            created_at=at,
            version=version,
            latency_ms=rng.uniform(50, 150),
            **({"metadata": {"error": "timeout"}} if rng.random() < error_rate else {}),
            **extra,
        )
        give(tenant, iid, "thumbs", 1 if rng.random() < positive else -1, at + timedelta(minutes=1))
        if rng.random() < escalation_rate:
            give(tenant, iid, "escalated", None, at + timedelta(minutes=2))
        ids.append(iid)
    return ids
