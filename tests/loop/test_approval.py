"""Approval: with `require_approval`, a gated candidate waits for a named person before any user sees it;
and a paused loop does nothing until resumed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tuneloop import Settings
from tuneloop.cli import main
from tuneloop.errors import Conflict, NotFound
from tuneloop.loop import Loop, LoopPolicy
from tuneloop.loop.pause import pause, paused
from tuneloop.loop.turns import advance_turn, start_turn
from tuneloop.registry.versions import Registry
from tuneloop.rollout import controller
from tuneloop.rollout.experiments import active_experiment
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.serve.routing import pinned_version
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store, TenantStore

APPROVAL = LoopPolicy(require_approval=True, on_alerts=False)


@pytest.fixture
def setup(tuneloop_home: Path) -> tuple[Store, TenantStore, Settings]:
    settings = Settings()  # the CLI reads the same TUNELOOP_HOME
    store = Store(settings.database_url)
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    return store, tenant, settings


def _gated_turn(tenant: TenantStore) -> tuple[str, str]:
    """A turn at its gate stage whose candidate passed the gate; returns (candidate, production)."""
    registry = Registry(tenant)
    production = registry.register(kind="adapter", base_model="base", actor="test", system_prompt="old")
    registry.move(production.id, "gated", actor="test", reason="setup")
    registry.move(production.id, "production", actor="test", reason="setup")
    candidate = registry.register(kind="adapter", base_model="base", actor="test", system_prompt="new")
    registry.move(candidate.id, "gated", actor="test", reason="passed the gate")
    turn = start_turn(tenant, "manual", "gate")
    advance_turn(tenant, turn, "gate", {"candidate": candidate.id})
    return candidate.id, production.id


def _audit(tenant: TenantStore, action: str) -> list[dict]:
    from tuneloop.dashboard.views import audit_rows

    return [a for a in audit_rows(tenant) if a["action"] == action]


def test_a_gated_candidate_never_reaches_users_until_approved(setup: tuple) -> None:
    store, tenant, settings = setup
    candidate, production = _gated_turn(tenant)
    loop = Loop(tenant, settings, APPROVAL)

    for _ in range(2):  # however often the loop looks, it waits
        turn = loop.tick()
        assert (turn.stage, turn.outcome) == ("approval", None)
    registry = Registry(tenant)
    assert registry.get(candidate).state == "pending_approval"
    assert active_experiment(tenant) is None and registry.production().id == production
    with pytest.raises(Conflict, match="only gated versions"):  # nor by hand, around the loop
        controller.start_canary(tenant, candidate, RolloutPolicy(), reward_policy=RewardPolicy(), actor="cli")
    with pytest.raises(Conflict, match="cannot move to production"):
        registry.move(candidate, "production", actor="cli", reason="skip the line")
    with pytest.raises(NotFound, match="not servable"):  # nor when a request pins it by id
        asyncio.run(pinned_version(tenant, candidate))

    # Who decides goes into the audit chain for good: an escape sequence or a bidi override is refused.
    for garbled in ("Dana\x1b[2J", "Dana \u202eseyeR"):
        assert main(["versions", "approve", candidate, "--tenant", "acme", "--by", garbled]) == 1
    assert main(["versions", "approve", candidate, "--tenant", "acme", "--by", "Dana Reyes"]) == 0
    turn = loop.tick()
    assert turn.stage == "canary" and turn.report["approval"]["decision"] == "approved"
    assert active_experiment(tenant).treatment_version == candidate
    [approved] = _audit(tenant, "version.approve")
    assert (approved["actor"], approved["subject"]) == ("Dana Reyes", candidate)
    assert store.verify_audit()[0]


def test_a_rejected_candidate_is_blocked_and_the_turn_ends_rejected(setup: tuple, capsys) -> None:
    _, tenant, settings = setup
    candidate, production = _gated_turn(tenant)
    loop = Loop(tenant, settings, APPROVAL)
    loop.tick()
    reject = ["versions", "reject", candidate, "--tenant", "acme", "--by", "Sam", "--reason", "tone"]
    assert main(reject) == 0
    turn = loop.tick()
    assert (turn.stage, turn.outcome) == ("done", "rejected")
    assert Registry(tenant).get(candidate).state == "blocked"
    assert Registry(tenant).production().id == production and active_experiment(tenant) is None
    assert _audit(tenant, "version.reject")[0]["details"]["reason"] == "tone"
    # A decision needs a version that waits for one: a second one is refused, in one line.
    assert main(reject) == 1
    assert "only a version pending approval" in capsys.readouterr().err


def test_without_approval_a_gated_candidate_goes_straight_to_the_canary(setup: tuple) -> None:
    _, tenant, settings = setup
    candidate, _ = _gated_turn(tenant)
    turn = Loop(tenant, settings, LoopPolicy(on_alerts=False)).tick()
    assert turn.stage == "canary" and active_experiment(tenant).treatment_version == candidate


def test_a_paused_loop_skips_the_tenant_and_says_so_until_resumed(setup: tuple, capsys) -> None:
    _, tenant, settings = setup
    _gated_turn(tenant)
    loop = Loop(tenant, settings, LoopPolicy(on_alerts=False))
    assert main(["loop", "pause", "--tenant", "acme", "--reason", "incident 42"]) == 0
    assert loop.tick(force=True) is None and active_experiment(tenant) is None
    assert main(["loop", "--tenant", "acme", "--once"]) == 0
    assert "no turn ran: acme's loop is paused since" in capsys.readouterr().out
    with pytest.raises(Conflict, match="paused already"):
        pause(tenant, actor="api", reason="again")
    assert main(["loop", "resume", "--tenant", "acme"]) == 0
    assert paused(tenant) is None
    assert loop.tick().stage == "canary"
    assert main(["loop", "turns", "--tenant", "acme"]) == 0
    assert '"stage": "canary"' in capsys.readouterr().out
    assert [a["details"]["reason"] for a in _audit(tenant, "loop.pause")] == ["incident 42"]
