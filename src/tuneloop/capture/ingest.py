"""The one path by which interactions and feedback reach the store: validate, hash, redact, write.

Redaction (CPU) and the write (store) are separate steps, so a server can run them on separate pools.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from tuneloop.capture import pending
from tuneloop.capture.events import SOURCE_KINDS, FeedbackIn, InteractionIn
from tuneloop.capture.metadata_keys import keys_of, numbers_as_text, numbers_back, with_keys
from tuneloop.capture.public_terms import PublicTerms, capitalised_words
from tuneloop.capture.redact import Redactor, strings_in
from tuneloop.errors import PayloadTooLarge
from tuneloop.store.pseudonyms import Pseudonyms, key_scope
from tuneloop.store.repository import ItemResult, TenantStore, logged_or_conflict
from tuneloop.store.schema import chunks

Row = tuple[dict[str, Any], str]  # a redacted row and the keyed digest of the client's payload


# The fields of event values that name other interactions (capture/events: preference, regenerated).
REFERENCE_FIELDS = ("chosen_interaction", "rejected_interaction", "replaced_by")


def names_interactions(value: Any) -> bool:
    """Whether an event's value names other interactions (a preference between two, a regeneration)."""
    return isinstance(value, dict) and any(k in value for k in REFERENCE_FIELDS)


def _chunk_of(item: FeedbackIn) -> str | None:
    """The chunk a source event names (its value was validated as {"chunk_id": ...})."""
    return item.value["chunk_id"] if item.kind in SOURCE_KINDS else None


def _known_chunks(store: TenantStore, items: list[FeedbackIn]) -> set[str]:
    """The chunk ids named by `items` that are chunks of the tenant's documents now (one read, only when
    some event names one)."""
    named = sorted({c for c in map(_chunk_of, items) if c is not None})
    if not named:
        return set()
    return {r.id for r in store.all(chunks, chunks.c.id.in_(named), columns=(chunks.c.id,))}


def new_interaction_id() -> str:
    return "int-" + uuid.uuid4().hex


class Capture:
    """Writes captured data for any tenant, redacting PII by the tenant's mode before anything is stored.

    Identifiers (user, session, rater) are stored as keyed hashes, and so are interaction and event ids
    unless opaque (`Pseudonyms.reference`); metadata keys and the `model` field are redacted like text, and
    the idempotency digest is keyed. A tenant with redaction `off` keeps them raw.
    """

    def __init__(
        self, redactor: Redactor, pseudonyms: Pseudonyms, public_terms: PublicTerms | None = None
    ) -> None:
        self.redactor = redactor
        self.pseudonyms = pseudonyms
        self.public_terms = public_terms or PublicTerms(0)

    def identifier(self, store: TenantStore, value: str | None) -> str | None:
        """How this tenant stores an end-user identifier: its keyed hash, or itself with redaction off."""
        if store.tenant.redaction == "off":
            return value
        return self.pseudonyms.identifier(value, key_scope(store.tenant))

    def reference(self, store: TenantStore, value: str) -> str:
        """How this tenant stores a client-chosen interaction or event id; lookups pass ids through it too."""
        if store.tenant.redaction == "off":
            return value
        return self.pseudonyms.reference(value, key_scope(store.tenant))

    def as_sent(self, store: TenantStore, message: str, sent: Iterable[str | None]) -> str:
        """`message` naming the `sent` ids as the client sent them rather than as they are stored (keyed)."""
        for value in sent:
            if value:
                message = message.replace(self.reference(store, value), value)
        return message

    def check_interactions_budget(self, items: list[InteractionIn]) -> None:
        """413 when `items` together hold more text to redact than one request may send (an OTLP export's
        spans are one request, however small each is)."""
        self.redactor.check_budget(strings_in([_redactable(item) for item in items]))

    def interaction_rows(
        self, store: TenantStore, calls: list[tuple[InteractionIn, dict[str, Any]]]
    ) -> list[Row]:
        """`interaction_row(store, item, **options)` for each call, the texts of all analysed in one batch
        first (analysis is cached, so each row then costs its placeholders alone)."""
        if store.tenant.redaction != "off" and len(calls) > 1:
            texts: list[str] = []
            for item, options in calls:
                strings = strings_in(_redactable(item, options.get("decoding")))
                try:
                    if options.get("budget", True):
                        self.redactor.check_budget(strings)
                except PayloadTooLarge:
                    continue  # its own row refuses it
                texts += strings
            self.redactor.finds(texts, store.tenant_id)
        return [self.interaction_row(store, item, **options) for item, options in calls]

    def interaction_row(
        self,
        store: TenantStore,
        item: InteractionIn,
        *,
        budget: bool = True,
        teaches: bool = False,
        **served: Any,
    ) -> Row:
        """The redacted row for an interaction; `served` adds what the gateway knows (adapter, arm...).

        `budget` refuses (413) more text than one request may send through redaction. With `teaches`, names
        in its system prompts count toward the tenant's public terms: only for a sender the operator trusts
        (an operator key), as an ingest key may ship inside a browser or mobile app.
        """
        payload = item.model_dump(mode="json")
        digest = self.pseudonyms.digest({**payload, **served})
        user = self.identifier(store, item.user)
        mode = store.tenant.redaction
        # The gateway's decoding holds the client's stop sequences: free text, redacted like the messages.
        decoding = served.get("decoding") or {}
        redacted = self.redactor.redact_json(
            _redactable(item, decoding),
            mode,
            store.tenant_id,
            budget=budget,
            keep=self.public_terms.public(store.tenant_id, store.tenant.name),
            key_scope=key_scope(store.tenant),
        )
        system = [m.content for m in item.messages if m.role in ("system", "developer")]
        if mode != "off" and teaches and self.public_terms.min_users and system:
            # The system texts were just analysed, so finding their names again is a cache hit.
            names = self.redactor.names(system, store.tenant_id) | capitalised_words(system)
            self.public_terms.observe(store.tenant_id, user, names)
        contents, response, choices, metadata, keys, model, stops = redacted
        if stops:
            served = {**served, "decoding": {**decoding, "stop": stops}}
        row = {
            "id": self.reference(store, item.id) if item.id else new_interaction_id(),
            "user_id": user,
            "session_id": self.identifier(store, item.session),
            "messages": [
                {"role": m.role, "content": c} for m, c in zip(item.messages, contents, strict=True)
            ],
            "response": response,
            "choices": choices,
            "model": model,
            "metadata": with_keys(numbers_back(item.metadata, metadata), keys),
            **served,
        }
        return row, digest

    def feedback_rows(self, store: TenantStore, items: list[FeedbackIn]) -> list[Row]:
        """Redacted rows for validated events: free text, metadata keys and strings are redacted."""
        # An event without a session digests as before sessions could be named, so retries still match.
        digests = [
            self.pseudonyms.digest(
                item.model_dump(mode="json", exclude={"session"} if not item.session else None)
            )
            for item in items
        ]
        # With redaction off nothing is redacted either way: no read of the tenant's chunks is needed.
        known = _known_chunks(store, items) if store.tenant.redaction != "off" else set()
        # Only strings can carry PII: thumbs, ratings and flags skip the analyzer entirely.
        redacted = self.redactor.redact_json(
            # A value that names interactions holds ids only: keyed, not redacted, so a reference stays whole;
            # one that names a chunk of the tenant's documents holds an id its documents were checked for.
            [
                [
                    None if names_interactions(item.value) or _chunk_of(item) in known else item.value,
                    numbers_as_text(item.metadata),
                    keys_of(item.metadata),
                ]
                for item in items
            ],
            store.tenant.redaction,
            store.tenant_id,
            keep=self.public_terms.public(store.tenant_id, store.tenant.name),
            # A find spreads to the events about the same conversation, not to other requests' events
            # analysed in the same batch (`TenantThreads.many`).
            scopes=[item.interaction_id or item.session or item.id for item in items],
            key_scope=key_scope(store.tenant),
        )
        named = self._interaction_references(store, items)
        rows = [
            {
                **item.model_dump(exclude={"session"}),
                "id": self.reference(store, item.id),
                "interaction_id": item.interaction_id and named[item.interaction_id],
                **({"session": self.identifier(store, item.session)} if item.session else {}),
                "value": {k: named[v] for k, v in item.value.items()}
                if names_interactions(item.value)
                else item.value
                if _chunk_of(item) in known
                else value,
                "metadata": with_keys(numbers_back(item.metadata, metadata), keys),
                "rater": self.identifier(store, item.rater),
            }
            for item, (value, metadata, keys) in zip(items, redacted, strict=True)
        ]
        return list(zip(rows, digests, strict=True))

    def _interaction_references(self, store: TenantStore, items: list[FeedbackIn]) -> dict[str, str]:
        """Each interaction id the events name, as stored: keyed, unless an interaction was logged under the
        id as sent before ids were keyed (one read, only when some id was keyed)."""
        sent = {i.interaction_id for i in items if i.interaction_id}
        sent |= {v for i in items if names_interactions(i.value) for v in i.value.values()}
        named = {x: self.reference(store, x) for x in sent}
        changed = [x for x, stored in named.items() if stored != x]
        if changed:
            named |= {x: x for x in store.logged(changed)}
        return named

    def log_interaction(self, store: TenantStore, item: InteractionIn, **served: Any) -> ItemResult:
        """Redact and store an interaction; idempotent on its id (Conflict for another payload)."""
        [result] = pending.store_interactions(store, [self.interaction_row(store, item, **served)])
        return self.logged(store, item, result)

    def logged(self, store: TenantStore, item: InteractionIn, result: ItemResult) -> ItemResult:
        """An interaction's stored result, or Conflict (409) naming its id as sent when another payload holds
        that id."""
        error = result.error and self.as_sent(store, result.error, (item.id,))
        return logged_or_conflict(replace(result, error=error))

    def add_feedback(self, store: TenantStore, items: list[FeedbackIn]) -> list[ItemResult]:
        """Redact and store validated events; those whose interaction is not logged yet wait for it."""
        return pending.store_feedback(store, self.feedback_rows(store, items))


def _redactable(item: InteractionIn, decoding: dict[str, Any] | None = None) -> list[Any]:
    """What redaction reads of an interaction, in the order `interaction_row` unpacks it; the gateway's
    `decoding` adds the client's stop sequences (free text)."""
    choices = item.choices or [item.response]
    messages = [m.content for m in item.messages]
    metadata = numbers_as_text(item.metadata)
    stops = (decoding or {}).get("stop") or []
    return [messages, item.response, choices, metadata, keys_of(item.metadata), item.model, stops]
