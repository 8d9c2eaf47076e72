"""A turn's record: its stages in order, each timed with the feedback events that had come in by its end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.monitor.seed import cooking_prompt, stream
from tuneloop.dashboard.views import audit_rows
from tuneloop.loop.turns import DONE, advance_turn, start_turn
from tuneloop.store.repository import Store


def test_each_ended_stage_is_timed_with_the_feedback_events_into_the_turn(store: Store) -> None:
    row, _ = store.create_tenant("acme", redaction="off")
    tenant = store.for_tenant(row)
    earlier = datetime.now(UTC) - timedelta(hours=1)
    stream(tenant, start=earlier, hours=0.5, count=4, prompt=cooking_prompt)  # before the turn: not counted
    turn = start_turn(tenant, "manual", "snapshot")
    stream(tenant, start=earlier, hours=0.5, count=3, prompt=cooking_prompt, seed=1)
    turn = advance_turn(tenant, turn, "gate", {"snapshot": "abc"})
    stream(tenant, start=earlier, hours=0.5, count=2, prompt=cooking_prompt, seed=2)
    turn = advance_turn(tenant, turn, DONE, {"gate": "blocked"}, "blocked")

    timeline = turn.report["timeline"]
    assert [(t["stage"], t["events"]) for t in timeline] == [("snapshot", 3), ("gate", 5)]
    assert 0 <= timeline[0]["minutes"] <= timeline[1]["minutes"] < 1
    assert turn.report["snapshot"] == "abc" and turn.report["gate"] == "blocked"


def test_a_rolled_back_turn_still_says_which_light_candidate_it_shipped(store: Store) -> None:
    row, _ = store.create_tenant("acme", redaction="off")
    tenant = store.for_tenant(row)
    turn = start_turn(tenant, "manual", "canary")
    light = {"light_trial": {"outcome": "promoted", "winner": "v-light"}, "candidate": "v-adapter"}
    turn = advance_turn(tenant, turn, DONE, light, "rolled_back")
    assert turn.outcome == "rolled_back" and turn.report["shipped"] == ["v-light"]
    ended = [a for a in audit_rows(tenant) if a["action"] == "loop.turn_end"]
    assert ended[-1]["details"] == {"outcome": "rolled_back", "shipped": ["v-light"]}

    both = advance_turn(tenant, start_turn(tenant, "manual", "canary"), DONE, light, "promoted")
    assert both.report["shipped"] == ["v-light", "v-adapter"]
    blocked = advance_turn(
        tenant, start_turn(tenant, "manual", "gate"), DONE, {"candidate": "v-2"}, "blocked"
    )
    assert blocked.report["shipped"] == []
