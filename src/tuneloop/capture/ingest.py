"""The one path by which interactions and feedback reach the store: validate, hash, redact, write."""

from __future__ import annotations

import uuid
from typing import Any

from tuneloop.capture.events import FeedbackIn, InteractionIn
from tuneloop.capture.redact import Redactor
from tuneloop.store.repository import ItemResult, TenantStore, payload_hash


def new_interaction_id() -> str:
    return "int-" + uuid.uuid4().hex


class Capture:
    """Writes captured data for any tenant, redacting PII by the tenant's mode before anything is stored."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def log_interaction(self, store: TenantStore, item: InteractionIn, **served: Any) -> ItemResult:
        """Store an interaction; `served` adds what the gateway knows (adapter, arm, decoding...)."""
        payload = item.model_dump(mode="json")
        digest = payload_hash({**payload, **served})
        choices = item.choices or [item.response]
        messages = [m.content for m in item.messages]
        redacted = self.redactor.redact_json(
            [messages, item.response, choices, item.metadata], store.tenant.redaction
        )
        contents, response, choices, metadata = redacted
        row = {
            "id": item.id or new_interaction_id(),
            "user_id": item.user,
            "session_id": item.session,
            "messages": [
                {"role": m.role, "content": c} for m, c in zip(item.messages, contents, strict=True)
            ],
            "response": response,
            "choices": choices,
            "model": item.model,
            "metadata": metadata,
            **served,
        }
        return store.log_interaction(row, digest)

    def add_feedback(self, store: TenantStore, items: list[FeedbackIn]) -> list[ItemResult]:
        """Store validated events in one transaction; free text and metadata strings are redacted first."""
        payloads = [item.model_dump(mode="json") for item in items]
        digests = [payload_hash(p) for p in payloads]
        # Only strings can carry PII: thumbs, ratings and flags skip the analyzer entirely.
        redacted = self.redactor.redact_json(
            [[item.value, item.metadata] for item in items], store.tenant.redaction
        )
        rows = []
        for item, (value, metadata) in zip(items, redacted, strict=True):
            rows.append({**item.model_dump(), "value": value, "metadata": metadata})
        return store.add_feedback(list(zip(rows, digests, strict=True)))
