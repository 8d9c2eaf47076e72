"""Feedback before its interaction, on SQLite and PostgreSQL: kept as pending, attached when the interaction
(or its session) lands, idempotent, bounded per tenant, expiring, and scoped to its tenant."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tuneloop.capture import pending
from tuneloop.capture.events import FeedbackIn, InteractionIn
from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import Redactor
from tuneloop.dashboard.views import audit_rows
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import pending_feedback

SECRET = b"s" * 32


@pytest.fixture
def capture() -> Capture:
    return Capture(Redactor(hash_key=SECRET), Pseudonyms(SECRET))


@pytest.fixture
def tenants(store: Store) -> tuple[TenantStore, TenantStore]:
    a, _ = store.create_tenant("a", redaction="off")
    b, _ = store.create_tenant("b", redaction="off")
    return store.for_tenant(a), store.for_tenant(b)


def _thumbs(eid: str, iid: str | None = None, session: str | None = None, value: int = 1) -> FeedbackIn:
    return FeedbackIn(id=eid, interaction_id=iid, session=session, kind="thumbs", value=value)


def _interaction(iid: str, session: str | None = None) -> InteractionIn:
    return InteractionIn(id=iid, session=session, messages=[{"role": "user", "content": "q"}], response="a")


def _kinds(tenant: TenantStore, iid: str) -> list[str]:
    return [e["id"] for e in tenant.get_interaction(iid)["feedback"]]


def test_feedback_before_its_interaction_waits_and_lands_with_it(capture: Capture, tenants: tuple) -> None:
    a, _ = tenants
    [early] = capture.add_feedback(a, [_thumbs("e-1", "later")])
    assert (early.status, early.code) == ("pending", 202)
    [again] = capture.add_feedback(a, [_thumbs("e-1", "later")])
    [changed] = capture.add_feedback(a, [_thumbs("e-1", "later", value=-1)])
    assert again.status == "pending" and (changed.status, changed.code) == ("rejected", 409)
    assert capture.log_interaction(a, _interaction("later")).status == "accepted"
    assert _kinds(a, "later") == ["e-1"]
    # Delivered once: a resend is now an ordinary duplicate.
    assert capture.add_feedback(a, [_thumbs("e-1", "later")])[0].status == "duplicate"


def test_session_feedback_lands_on_the_sessions_latest_interaction_or_waits_for_its_first(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    [waiting] = capture.add_feedback(a, [_thumbs("s-1", session="conv-1")])
    assert waiting.status == "pending"
    capture.log_interaction(a, _interaction("first", session="conv-1"))
    assert _kinds(a, "first") == ["s-1"]
    capture.log_interaction(a, _interaction("second", session="conv-1"))
    [landed] = capture.add_feedback(a, [_thumbs("s-2", session="conv-1")])
    assert landed.status == "accepted" and _kinds(a, "second") == ["s-2"]


def test_pending_feedback_never_crosses_tenants(capture: Capture, tenants: tuple) -> None:
    a, b = tenants
    capture.add_feedback(a, [_thumbs("e-x", "shared-id"), _thumbs("s-x", session="conv")])
    capture.log_interaction(b, _interaction("shared-id", session="conv"))
    assert _kinds(b, "shared-id") == []
    capture.log_interaction(a, _interaction("shared-id", session="conv"))
    assert sorted(_kinds(a, "shared-id")) == ["e-x", "s-x"]


def test_a_sweep_attaches_feedback_to_interactions_written_by_other_paths(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    capture.add_feedback(a, [_thumbs("e-2", "spooled")])
    a.log_interaction(*capture.interaction_row(a, _interaction("spooled")))  # as the spool replay writes
    assert _kinds(a, "spooled") == []
    assert pending.sweep(a) == 1 and _kinds(a, "spooled") == ["e-2"]


def test_a_sweep_attaches_session_feedback_to_sessions_written_by_other_paths(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    capture.add_feedback(a, [_thumbs("s-3", session="traced")])
    for iid in ("span-1", "span-2"):  # as OTLP writes a trace's spans
        a.log_interaction(*capture.interaction_row(a, _interaction(iid, session="traced")))
    assert pending.sweep(a) == 1 and _kinds(a, "span-2") == ["s-3"]


def test_pending_feedback_expires(capture: Capture, tenants: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = tenants
    monkeypatch.setattr(pending, "PENDING_TTL", timedelta(seconds=-1))
    capture.add_feedback(a, [_thumbs("e-3", "too-late")])
    capture.log_interaction(a, _interaction("too-late"))
    assert _kinds(a, "too-late") == []
    pending.sweep(a)
    assert a.all(pending_feedback) == []


def test_pending_feedback_is_bounded_per_tenant(
    capture: Capture, tenants: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tenants
    monkeypatch.setattr(pending, "MAX_PENDING", 2)
    results = capture.add_feedback(a, [_thumbs(f"e-{i}", f"missing-{i}") for i in range(3)])
    assert [r.status for r in results] == ["pending", "pending", "rejected"]
    assert results[2].code == 404 and "log the interaction first" in results[2].error
    assert capture.add_feedback(b, [_thumbs("e-b", "missing-b")])[0].status == "pending"


def test_forgetting_a_user_drops_the_pending_events_they_gave(
    capture: Capture, tenants: tuple, tuneloop_home
) -> None:
    from tuneloop.privacy.erasure import forget_user

    a, _ = tenants
    capture.log_interaction(
        a,
        InteractionIn(id="theirs", user="u-9", messages=[{"role": "user", "content": "q"}], response="a"),
    )
    capture.add_feedback(
        a,
        [
            FeedbackIn(id="by-them", interaction_id="later", kind="comment", value="from u-9", rater="u-9"),
            FeedbackIn(id="kept", interaction_id="later", kind="thumbs", value=1, rater="u-1"),
        ],
    )
    forget_user(a, tuneloop_home, "u-9")
    assert [r.id for r in a.all(pending_feedback)] == ["kept"]


def test_a_pending_event_its_interaction_refuses_is_dropped_with_an_audit_record(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    value = {"chosen": 3, "rejected": 1}
    choice = FeedbackIn(id="e-9", interaction_id="one-choice", kind="preference", value=value)
    [early] = capture.add_feedback(a, [choice])
    assert early.status == "pending"
    capture.log_interaction(a, _interaction("one-choice"))

    assert _kinds(a, "one-choice") == []
    [record] = [r for r in audit_rows(a) if r["action"] == "feedback.rejected"]
    assert record["subject"] == "e-9" and record["details"]["interaction_id"] == "one-choice"
    assert "choice" in record["details"]["error"]


def test_an_id_held_by_a_pending_event_is_a_conflict_for_any_other_payload_and_the_event_still_lands(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    capture.log_interaction(a, _interaction("known"))
    [early] = capture.add_feedback(a, [_thumbs("e-1", "later")])
    [other_value] = capture.add_feedback(a, [_thumbs("e-1", "later", value=-1)])
    [other_interaction] = capture.add_feedback(a, [_thumbs("e-1", "known")])
    assert early.status == "pending"
    assert (other_value.code, other_interaction.code) == (409, 409)
    assert "different payload" in other_interaction.error

    capture.log_interaction(a, _interaction("later"))
    assert _kinds(a, "later") == ["e-1"] and _kinds(a, "known") == []
    assert not [r for r in audit_rows(a) if r["action"] == "feedback.rejected"]


def test_an_id_stored_as_feedback_is_not_kept_pending_under_another_payload(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    capture.log_interaction(a, _interaction("known"))
    assert capture.add_feedback(a, [_thumbs("e-2", "known")])[0].status == "accepted"
    [reused] = capture.add_feedback(a, [_thumbs("e-2", "later")])
    assert (reused.status, reused.code) == ("rejected", 409) and a.all(pending_feedback) == []


def test_a_pending_event_resent_once_its_interaction_exists_lands_once(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    capture.add_feedback(a, [_thumbs("e-3", "spooled")])
    a.log_interaction(*capture.interaction_row(a, _interaction("spooled")))  # no attach, as the spool writes
    assert capture.add_feedback(a, [_thumbs("e-3", "spooled")])[0].status == "accepted"
    assert pending.sweep(a) == 0 and a.all(pending_feedback) == []
    assert _kinds(a, "spooled") == ["e-3"]


def test_a_regeneration_that_lands_on_the_interaction_it_names_as_replacement_is_refused(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    capture.log_interaction(a, _interaction("newest", session="conv-2"))
    regenerated = FeedbackIn(id="r-1", session="conv-2", kind="regenerated", value={"replaced_by": "newest"})
    [result] = capture.add_feedback(a, [regenerated])
    assert (result.status, result.code) == ("rejected", 400) and "replaced_by" in result.error
    assert _kinds(a, "newest") == []


def _regenerated(eid: str, iid: str | None, replaced_by: str, session: str | None = None) -> FeedbackIn:
    value = {"replaced_by": replaced_by}
    return FeedbackIn(id=eid, interaction_id=iid, session=session, kind="regenerated", value=value)


def test_a_regeneration_waits_for_the_answer_that_replaced_it_whichever_lands_first(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    [early] = capture.add_feedback(a, [_regenerated("r-2", "old", "new")])
    assert early.status == "pending"
    capture.log_interaction(a, _interaction("old"))  # the event's own interaction: it waits on for "new"
    assert _kinds(a, "old") == [] and not [r for r in audit_rows(a) if r["action"] == "feedback.rejected"]
    capture.log_interaction(a, _interaction("new"))
    assert _kinds(a, "old") == ["r-2"]
    capture.log_interaction(a, _interaction("older"))
    [later] = capture.add_feedback(a, [_regenerated("r-3", "older", "newer")])  # its own is in already
    assert (later.status, later.code) == ("pending", 202)
    capture.log_interaction(a, _interaction("newer"))
    assert _kinds(a, "older") == ["r-3"]


def test_a_preference_between_interactions_waits_for_both_and_a_session_event_keeps_its_interaction(
    capture: Capture, tenants: tuple
) -> None:
    a, _ = tenants
    capture.log_interaction(a, _interaction("asked", session="conv-3"))
    value = {"chosen_interaction": "b-side", "rejected_interaction": "a-side"}
    choice = FeedbackIn(id="p-1", session="conv-3", kind="preference", value=value)
    assert capture.add_feedback(a, [choice])[0].status == "pending"
    capture.log_interaction(a, _interaction("later-in-session", session="conv-3"))
    capture.log_interaction(a, _interaction("a-side"))
    assert _kinds(a, "asked") == []
    capture.log_interaction(a, _interaction("b-side"))
    # On the session's latest interaction when it was sent, not the one logged while it waited.
    assert _kinds(a, "asked") == ["p-1"] and _kinds(a, "later-in-session") == []
