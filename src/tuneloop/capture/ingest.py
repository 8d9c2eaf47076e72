"""The one path by which interactions and feedback reach the store: validate, hash, redact, write.

Redaction (CPU) and the write (store) are separate steps, so a server can run them on separate pools.
"""

from __future__ import annotations

import uuid
from typing import Any

from tuneloop.capture.events import FeedbackIn, InteractionIn
from tuneloop.capture.metadata_keys import keys_of, with_keys
from tuneloop.capture.redact import Redactor
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import ItemResult, TenantStore

Row = tuple[dict[str, Any], str]  # a redacted row and the keyed digest of the client's payload


def new_interaction_id() -> str:
    return "int-" + uuid.uuid4().hex


class Capture:
    """Writes captured data for any tenant, redacting PII by the tenant's mode before anything is stored.

    Identifiers (user, session, rater) are stored as keyed hashes, metadata keys and the `model` field are
    redacted like text, and the idempotency digest is keyed; a tenant with redaction `off` keeps them raw.
    """

    def __init__(self, redactor: Redactor, pseudonyms: Pseudonyms) -> None:
        self.redactor = redactor
        self.pseudonyms = pseudonyms

    def identifier(self, store: TenantStore, value: str | None) -> str | None:
        """How this tenant stores an end-user identifier: its keyed hash, or itself with redaction off."""
        return value if store.tenant.redaction == "off" else self.pseudonyms.identifier(value)

    def interaction_row(
        self, store: TenantStore, item: InteractionIn, *, budget: bool = True, **served: Any
    ) -> Row:
        """The redacted row for an interaction; `served` adds what the gateway knows (adapter, arm...).

        `budget` refuses (413) more text than one request may send through redaction.
        """
        payload = item.model_dump(mode="json")
        digest = self.pseudonyms.digest({**payload, **served})
        choices = item.choices or [item.response]
        messages = [m.content for m in item.messages]
        redacted = self.redactor.redact_json(
            [messages, item.response, choices, item.metadata, keys_of(item.metadata), item.model],
            store.tenant.redaction,
            store.tenant_id,
            budget=budget,
        )
        contents, response, choices, metadata, keys, model = redacted
        row = {
            "id": item.id or new_interaction_id(),
            "user_id": self.identifier(store, item.user),
            "session_id": self.identifier(store, item.session),
            "messages": [
                {"role": m.role, "content": c} for m, c in zip(item.messages, contents, strict=True)
            ],
            "response": response,
            "choices": choices,
            "model": model,
            "metadata": with_keys(metadata, keys),
            **served,
        }
        return row, digest

    def feedback_rows(self, store: TenantStore, items: list[FeedbackIn]) -> list[Row]:
        """Redacted rows for validated events: free text, metadata keys and strings are redacted."""
        digests = [self.pseudonyms.digest(item.model_dump(mode="json")) for item in items]
        # Only strings can carry PII: thumbs, ratings and flags skip the analyzer entirely.
        redacted = self.redactor.redact_json(
            [[item.value, item.metadata, keys_of(item.metadata)] for item in items],
            store.tenant.redaction,
            store.tenant_id,
        )
        rows = [
            {
                **item.model_dump(),
                "value": value,
                "metadata": with_keys(metadata, keys),
                "rater": self.identifier(store, item.rater),
            }
            for item, (value, metadata, keys) in zip(items, redacted, strict=True)
        ]
        return list(zip(rows, digests, strict=True))

    def log_interaction(self, store: TenantStore, item: InteractionIn, **served: Any) -> ItemResult:
        """Redact and store an interaction; idempotent on its id."""
        return store.log_interaction(*self.interaction_row(store, item, **served))

    def add_feedback(self, store: TenantStore, items: list[FeedbackIn]) -> list[ItemResult]:
        """Redact and store validated events in one transaction."""
        return store.add_feedback(self.feedback_rows(store, items))
