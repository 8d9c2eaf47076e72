"""The demo's report: what a reader of `make demo` gets besides the printed table."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from tests.rollout.canary_traffic import POLICY, REWARDS, canary_traffic, gated_version
from tuneloop.demo import Promotions, TurnLine, beside_traffic, shipped, start_server, timed, write_report
from tuneloop.errors import Conflict
from tuneloop.loop.stages import FIRST
from tuneloop.loop.turns import advance_turn, start_turn
from tuneloop.rollout import controller
from tuneloop.store.repository import Store


def test_report_has_a_row_per_turn_a_plot_and_the_turns_as_json(tmp_path: Path) -> None:
    lines = [
        TurnLine(1, 352, 0.327, 0.03, "gated", "promoted", 509.0, {"candidate": "v-1"}),
        TurnLine(2, 320, 0.588, None, "blocked", "-", 590.0),
    ]
    write_report(tmp_path, lines, final=0.791)
    html = (tmp_path / "report.html").read_text()
    assert html.count("<tr><td>") == 2 and "0.791" in html and "n/a" in html
    assert (tmp_path / "satisfaction.png").read_bytes().startswith(b"\x89PNG")
    turns = json.loads((tmp_path / "turns.json").read_text())
    assert [t["turn"] for t in turns] == [1, 2] and turns[0]["details"] == {"candidate": "v-1"}


def test_the_server_is_not_started_on_a_port_another_process_listens_on(tmp_path: Path) -> None:
    # Another server's /healthz on that port would answer for the child that failed to bind it.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(Conflict, match="in use"):
            start_server(tmp_path, other.getsockname()[1])
    assert not (tmp_path / "server.log").exists()


def test_users_keep_talking_while_the_loop_works_and_the_tick_sees_their_traffic() -> None:
    """A turn's light trial needs traffic while the adapter trains; a demo that paused its users for the
    tick would measure neither that nor training beside serving."""
    traffic = threading.Event()
    bursts: list[int] = []

    def tick() -> None:
        assert traffic.wait(timeout=30), "no users talked while the loop worked"

    def burst() -> None:
        bursts.append(len(bursts))
        traffic.set()

    assert beside_traffic(tick, burst) is None and bursts


def test_the_demo_says_what_a_turn_shipped_and_how_far_into_the_turn(store: Store) -> None:
    created, _ = store.create_tenant("acme")
    tenant = store.for_tenant(created)
    turn = start_turn(tenant, "manual", FIRST)
    candidate = gated_version(tenant)
    # A fixed id fixes which users land in which arm (a rare split can end a canary before its win), and
    # each batch is assigned at the share the last look ramped to, or the ratio check halts the canary.
    exp = controller.start_canary(
        tenant, candidate, POLICY, reward_policy=REWARDS, actor="test", experiment_id="exp-demo"
    )
    for batch in range(30):
        canary_traffic(tenant, exp, 60, {"control": 0.3, "treatment": 0.8}, seed=batch, start=batch * 60)
        if (exp := controller.review(tenant, REWARDS)).state != "running":
            break
    [line] = shipped(tenant, turn)
    events = len(tenant.feedback(since=turn.started_at))
    assert line.startswith(f"{candidate} (adapter) promoted +")
    assert line.endswith(f"min and {events} feedback events into turn 1")
    assert timed(turn) == []  # the loop turn is still open

    ended = advance_turn(tenant, turn, "done", {}, "promoted")
    [timing] = timed(ended)
    assert timing.startswith("loop turn 1 (promoted), each stage's end in minutes/events: ")
    assert timing.endswith(f" min/{events}") and FIRST in timing


def test_production_is_measured_again_when_another_version_reaches_it_during_a_turn(store: Store) -> None:
    """A light candidate promoted 3 minutes into a turn served users for the rest of it, and the demo's row
    (measured before the turn) showed none of it until the next turn."""
    created, _ = store.create_tenant("acme")
    tenant = store.for_tenant(created)
    scores = iter([0.8])
    promotions = Promotions(tenant, lambda: next(scores), len(tenant.feedback()))
    promotions.look()  # nothing changed: nothing measured
    candidate = gated_version(tenant)
    exp = controller.start_canary(
        tenant, candidate, POLICY, reward_policy=REWARDS, actor="test", experiment_id="exp-demo"
    )
    canary_traffic(tenant, exp, 30, {"control": 0.3, "treatment": 0.8}, seed=0)
    controller.finish(tenant, "promoted", actor="test", reason="by hand")
    promotions.look()
    promotions.look()  # the same production: measured once
    assert promotions.measured == [(len(tenant.feedback()), 0.8, candidate)]
