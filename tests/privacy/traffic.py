"""Captured rows for the privacy tests: one user to forget (Jane), one to keep (Bob), through real capture."""

from __future__ import annotations

from datetime import datetime

from tuneloop.capture.events import FeedbackIn, InteractionIn
from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import Redactor
from tuneloop.config import Settings
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import TenantStore

JANE = "jane.doe@example.com"
BOB = "bob-7"
# What Jane wrote: none of it may survive her erasure anywhere under HOME.
CASES = ("alpha", "bravo", "charlie")


def jane_texts(word: str = "case") -> list[str]:
    return [f"Please close my savings account before the move abroad, {word} {c}" for c in CASES]


def jane_edits(word: str = "case") -> list[str]:
    return [f"Your savings account closes before the move abroad, {word} {c}" for c in CASES]


JANE_TEXTS, JANE_EDITS = jane_texts(), jane_edits()
BOB_TEXTS = [f"How do I order a replacement debit card, question {c}?" for c in CASES]
BOB_EDITS = [f"Order it under Cards, then Replace, question {c}" for c in CASES]


def interactions_of(prefix: str, user: str, texts: list[str]) -> list[dict]:
    return [
        {
            "id": f"{prefix}{n}",
            "user": user,
            "messages": [{"role": "user", "content": text}],
            "response": "Done, anything else?",
            "choices": ["Done, anything else?", "I cannot help with that."],
        }
        for n, text in enumerate(texts)
    ]


def feedback_of(prefix: str, edits: list[str]) -> list[dict]:
    """A thumbs up, an edit and a choice on each of the user's interactions."""
    events = []
    for n, edit in enumerate(edits):
        iid = f"{prefix}{n}"
        events += [
            {"id": f"{iid}-up", "interaction_id": iid, "kind": "thumbs", "value": 1},
            {"id": f"{iid}-edit", "interaction_id": iid, "kind": "edit", "value": edit},
            {
                "id": f"{iid}-pick",
                "interaction_id": iid,
                "kind": "preference",
                "value": {"chosen": 0, "rejected": 1},
            },
        ]
    return events


# Jane rates one of Bob's answers as a labeler, and Bob prefers his own answer to one of Jane's: both events
# go with her, Bob's interaction stays.
CROSS_EVENTS = [
    {
        "id": "jane-rates-bob",
        "interaction_id": "b0",
        "kind": "rating",
        "value": 2,
        "rater": JANE,
        "source": "labeler",
    },
    {
        "id": "bob-prefers",
        "interaction_id": "b1",
        "kind": "preference",
        "value": {"chosen_interaction": "b1", "rejected_interaction": "j1"},
    },
]


def capture(
    tenant: TenantStore, settings: Settings, created_at: datetime | None = None, word: str = "case"
) -> None:
    """Jane's and Bob's interactions and feedback, written as the capture API writes them; `word` sets
    Jane's texts apart from another tenant's."""
    items = interactions_of("j", JANE, jane_texts(word)) + interactions_of("b", BOB, BOB_TEXTS)
    events = feedback_of("j", jane_edits(word)) + feedback_of("b", BOB_EDITS) + CROSS_EVENTS
    write(tenant, settings, items, events, created_at)


def write(
    tenant: TenantStore,
    settings: Settings,
    items: list[dict],
    events: list[dict],
    created_at: datetime | None,
) -> None:
    """Interactions (created at `created_at`, default now) and events through capture's redaction."""
    secret = settings.hash_key()
    cap = Capture(Redactor(hash_key=secret), Pseudonyms(secret))
    for item in items:
        row, digest = cap.interaction_row(tenant, InteractionIn.model_validate(item))
        if created_at is not None:
            row = {**row, "created_at": created_at}
        assert tenant.log_interaction(row, digest).status == "accepted"
    results = tenant.add_feedback(cap.feedback_rows(tenant, [FeedbackIn.model_validate(e) for e in events]))
    assert {r.status for r in results} == {"accepted"}, results
