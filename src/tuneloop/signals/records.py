"""Interaction and feedback records as plain dicts (as the store hands them over) and shared helpers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tuneloop.clock import utc
from tuneloop.errors import BadRequest

Record = Mapping[str, Any]


def one_tenant(interactions: Iterable[Record], events: Iterable[Record]) -> str | None:
    """The single tenant id the records share; BadRequest if they mix tenants (scoping is the store's job)."""
    tenants = {r["tenant_id"] for r in interactions} | {e["tenant_id"] for e in events}
    if len(tenants) > 1:
        raise BadRequest(
            f"signals got records from several tenants ({', '.join(sorted(map(str, tenants)))}); "
            "build each tenant's dataset from its own store scope"
        )
    return next(iter(tenants), None)


def as_of(
    interactions: Iterable[Record], events: Iterable[Record], now: datetime
) -> tuple[dict[str, Record], list[Record]]:
    """Interactions by id and events (by time, then id) that existed at `now`; later ones are unseen."""
    now = utc(now)
    by_id = {r["id"]: r for r in interactions if utc(r["created_at"]) <= now}
    seen = [e for e in events if utc(e["created_at"]) <= now]
    seen.sort(key=lambda e: (utc(e["created_at"]), e["id"]))
    return by_id, seen


def choices_of(interaction: Record) -> list[str]:
    """Every alternative the user was shown; choices[0] is the response."""
    return list(interaction.get("choices") or [interaction["response"]])


def rater_of(event: Record, interaction: Record | None) -> str | None:
    """Who gave the event: its rater, else (end-user feedback) the interaction's user; None if anonymous."""
    if event.get("rater"):
        return str(event["rater"])
    if event.get("source", "user") == "user" and interaction is not None and interaction.get("user"):
        return f"user:{interaction['user']}"
    return None


def prompt_messages(messages: Sequence[Record]) -> list[dict[str, str]]:
    """The messages as plain {"role", "content"} dicts (TRL's conversational shape)."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def completion_text(completion: Sequence[Record] | str) -> str:
    """The assistant text of a TRL conversational completion (or a plain string)."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m["content"]) for m in completion if m.get("role") == "assistant")


def prompt_text(messages: Sequence[Record], limit: int = 1000) -> str:
    """The text that identifies a prompt for near-duplicate search.

    System messages are left out (a tenant's system prompt is shared by everything it asks) and the end of
    the conversation is kept, because the embedding model reads only its first ~256 tokens.
    """
    text = "\n".join(
        f"{m['role']}: {m['content']}" for m in messages if m["role"] not in ("system", "developer")
    )
    return text[-limit:]


def row_prompt(row: Record) -> list[Record]:
    """The prompt messages of a dataset row of any shape (pair, KTO label or SFT conversation)."""
    return list(row["prompt"]) if "prompt" in row else list(row["messages"][:-1])


def record_hash(row: Record) -> str:
    """A content hash of one row; stable across runs and machines."""
    return hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def canonical(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows sorted by content hash, so a hash over the list depends on the rows, never on input order."""
    return sorted(rows, key=record_hash)


def rows_hash(rows: Iterable[Record]) -> str:
    """One hash over a canonically ordered list of rows."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(record_hash(row).encode())
    return digest.hexdigest()


def owner(weight_by_rater: Mapping[str | None, float]) -> str | None:
    """The rater who supplied over half of a row's evidence weight, else None: a shared row has no owner.

    The owner is whom the per-rater row cap charges; consensus rows belong to nobody and are never capped.
    """
    total = sum(weight_by_rater.values())
    named = sorted((-w, r) for r, w in weight_by_rater.items() if r is not None)
    if not named or -named[0][0] * 2 <= total:
        return None
    return named[0][1]
