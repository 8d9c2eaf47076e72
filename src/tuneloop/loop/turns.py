"""The stored record of a tenant's loop turns: one row per turn with its stage, outcome and report.

A turn's stage and results live in `loop_turns`, so a restarted controller resumes the open turn where it
stopped. Every change of a turn is one transaction with its audit row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tuneloop.clock import now_utc, utc
from tuneloop.store import audit
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import feedback, loop_turns

DONE = "done"
# The stages a turn waits at until users' traffic decides: its canary, its trial of light candidates.
TRAFFIC_STAGES = ("canary", "light_trial")


@dataclass(frozen=True)
class Turn:
    turn: int
    trigger: str
    stage: str
    outcome: str | None
    report: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None


def list_turns(tenant: TenantStore) -> list[Turn]:
    """The tenant's turns, oldest first."""
    return [_turn(r) for r in tenant.all(loop_turns, order_by=(loop_turns.c.turn,))]


def open_turn(tenant: TenantStore) -> Turn | None:
    """The turn still running, if any (one at a time per tenant)."""
    turns = list_turns(tenant)
    return turns[-1] if turns and turns[-1].stage != DONE else None


def start_turn(tenant: TenantStore, trigger: str, first_stage: str) -> Turn:
    """Open the next turn, or return the one already open."""

    def insert(tx: TenantTx) -> int:
        last = tx.all(
            loop_turns,
            columns=(loop_turns.c.turn, loop_turns.c.stage),
            order_by=(loop_turns.c.turn.desc(),),
            limit=1,
        )
        if last and last[0].stage != DONE:
            return last[0].turn
        number = last[0].turn + 1 if last else 1
        now = now_utc()
        tx.insert(
            loop_turns,
            turn=number,
            trigger=trigger,
            stage=first_stage,
            report={},
            started_at=now,
            updated_at=now,
        )
        tx.audit(actor="loop", action="loop.turn", subject=str(number), details={"trigger": trigger})
        return number

    return get_turn(tenant, tenant.transaction(insert))


def get_turn(tenant: TenantStore, number: int) -> Turn:
    row = tenant.first(loop_turns, loop_turns.c.turn == number)
    assert row is not None, f"turn {number} vanished"
    return _turn(row)


def advance_turn(
    tenant: TenantStore, turn: Turn, stage: str, report: dict[str, Any], outcome: str | None = None
) -> Turn:
    """Move `turn` to `stage`, merging `report` into its report; stage DONE ends it with `outcome`.

    The report's `timeline` gains the stage just ended: the minutes and the feedback events into the turn
    when it ended, which say where a turn's time went and how soon it improved anything."""

    def update(tx: TenantTx) -> None:
        now = now_utc()
        events = tx.conn.execute(
            tx.query(feedback, feedback.c.received_at > turn.started_at, columns=(sa.func.count(),))
        ).scalar_one()
        ended = {"stage": turn.stage, "minutes": round((now - turn.started_at).total_seconds() / 60, 2)}
        timeline = [*turn.report.get("timeline", []), {**ended, "events": events}]
        merged = {**turn.report, **report, "timeline": timeline}
        if stage == DONE:
            # A turn whose adapter was rolled back may still have shipped its light candidate: the outcome
            # is the adapter's, `shipped` what reached production.
            merged["shipped"] = shipped(merged, outcome)
        tx.update(
            loop_turns,
            loop_turns.c.turn == turn.turn,
            stage=stage,
            report=audit.json_safe(merged),
            outcome=outcome,
            updated_at=now,
            ended_at=now if stage == DONE else None,
        )
        if stage == DONE:
            tx.audit(
                actor="loop",
                action="loop.turn_end",
                subject=str(turn.turn),
                details={"outcome": outcome, "shipped": merged["shipped"]},
            )

    tenant.transaction(update)
    return get_turn(tenant, turn.turn)


def shipped(report: dict[str, Any], outcome: str | None) -> list[str]:
    """The versions a finished turn put into production: its light trial's winner, its promoted candidate."""
    light = report.get("light_trial") or {}
    found = [light["winner"]] if light.get("outcome") == "promoted" and light.get("winner") else []
    if outcome == "promoted" and report.get("candidate"):
        found.append(report["candidate"])
    return found


def _turn(row: sa.Row) -> Turn:
    return Turn(
        turn=row.turn,
        trigger=row.trigger,
        stage=row.stage,
        outcome=row.outcome,
        report=row.report or {},
        started_at=utc(row.started_at),
        ended_at=utc(row.ended_at) if row.ended_at else None,
    )
