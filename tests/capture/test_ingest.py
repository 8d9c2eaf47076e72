"""Capture's rows: `interaction_rows` (many interactions, one analysis) gives what `interaction_row` gives one
at a time, and keeps each one's redaction budget."""

from __future__ import annotations

import pytest

from tuneloop.capture.events import FeedbackIn, InteractionIn
from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import Redactor
from tuneloop.errors import PayloadTooLarge
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store, TenantStore

KEY = b"k" * 32


@pytest.fixture
def tenant() -> TenantStore:
    store = Store("sqlite://")
    yield store.for_tenant(store.create_tenant("acme")[0])
    store.close()


def _item(n: int, text: str = "") -> InteractionIn:
    return InteractionIn(
        id=f"i{n}",
        user=f"user-{n}",
        messages=[{"role": "user", "content": text or f"I am Maria Gonzales, call me on 020 7946 {n:04d}"}],
        response=f"Thanks Maria, ticket {n} is open",
    )


def test_interaction_rows_are_the_rows_interaction_row_makes_one_by_one(tenant: TenantStore) -> None:
    calls = [(_item(n), {"teaches": False}) for n in range(5)]
    calls.append((_item(5), {"budget": False, "decoding": {"stop": ["Maria Gonzales says"]}}))

    merged = Capture(Redactor(hash_key=KEY), Pseudonyms(KEY)).interaction_rows(tenant, calls)

    alone = Capture(Redactor(hash_key=KEY), Pseudonyms(KEY))
    assert merged == [alone.interaction_row(tenant, item, **options) for item, options in calls]
    row, _ = merged[5]
    assert "Maria" not in str(row) and "7946" not in str(row)
    assert row["decoding"]["stop"] == ["<PERSON> says"]


def test_an_interaction_over_the_budget_is_refused_in_a_merged_call(tenant: TenantStore) -> None:
    capture = Capture(Redactor(hash_key=KEY, max_chars=500), Pseudonyms(KEY))
    calls = [(_item(0), {}), (_item(1, "word " * 200), {})]
    with pytest.raises(PayloadTooLarge):
        capture.interaction_rows(tenant, calls)
    assert capture.interaction_rows(tenant, calls[:1])[0][0]["id"] != "i0"  # stored keyed, redacted


def test_a_value_found_in_one_conversations_event_is_not_removed_from_anothers(tenant: TenantStore) -> None:
    def comment(n: int, interaction: str, text: str) -> FeedbackIn:
        return FeedbackIn(id=f"e{n}", interaction_id=interaction, kind="comment", value=text)

    # As `TenantThreads.many` merges two requests: each its own conversation.
    events = [
        comment(1, "i1", "my phone number is 5420266"),
        comment(2, "i2", "build 5420266 failed on CI"),
        comment(3, "i1", "again: 5420266"),
    ]
    rows = Capture(Redactor(hash_key=KEY), Pseudonyms(KEY)).feedback_rows(tenant, events)
    assert [row["value"] for row, _ in rows] == [
        "my phone number is <PHONE_NUMBER>",
        "build 5420266 failed on CI",
        "again: <PHONE_NUMBER>",
    ]
