"""Hand-made interaction and feedback records, shaped exactly as the store hands them to signals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
_ids = count()


def interaction(
    iid: str,
    question: str = "How do I reset my password?",
    response: str = "Open Settings, then Security, then Reset.",
    *,
    choices: list[str] | None = None,
    user: str | None = None,
    tenant: str = "acme",
    days_ago: float = 1.0,
    system: str | None = "You are the Acme help desk.",
) -> dict[str, Any]:
    """One logged interaction; choices[0] is the response."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    return {
        "id": iid,
        "tenant_id": tenant,
        "user": user,
        "session": None,
        "messages": messages,
        "response": response,
        "choices": choices or [response],
        "model": "smollm2-135m",
        "adapter_version": None,
        "created_at": NOW - timedelta(days=days_ago),
    }


def event(
    iid: str,
    kind: str,
    value: Any = True,
    *,
    rater: str | None = None,
    source: str = "user",
    tenant: str = "acme",
    days_ago: float = 0.5,
    eid: str | None = None,
) -> dict[str, Any]:
    """One feedback event on interaction `iid`."""
    return {
        "id": eid or f"ev{next(_ids)}",
        "tenant_id": tenant,
        "interaction_id": iid,
        "kind": kind,
        "value": value,
        "rater": rater,
        "source": source,
        "created_at": NOW - timedelta(days=days_ago),
    }
