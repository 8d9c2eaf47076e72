"""Governance by hand, over the CLI and HTTP: roll production back at once, decide on candidates held for
approval, promote and retire reward models, pause the loop. Traffic goes through the real gateway
(the `gateway` fixture in conftest.py)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tuneloop.cli import main
from tuneloop.registry.versions import Registry
from tuneloop.store.repository import Store, TenantStore


def _tenant(gateway: dict) -> tuple[TenantStore, str, str]:
    """A fresh tenant of the running gateway: (its store handle, an operator key, an ingest key)."""
    store: Store = gateway["store"]
    name = f"t-{uuid.uuid4().hex[:8]}"
    tenant, operator = store.create_tenant(name)
    return store.for_tenant(tenant), operator, store.add_key(name, role="ingest")


def _production(registry: Registry, prompt: str) -> str:
    version = registry.register(kind="adapter", base_model="base", actor="test", system_prompt=prompt)
    registry.move(version.id, "gated", actor="test", reason="setup")
    registry.move(version.id, "production", actor="test", reason="setup")
    return version.id


def _served(gateway: dict, key: str) -> str:
    answer = httpx.post(
        f"{gateway['url']}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"messages": [{"role": "user", "content": "Where to in May?"}], "user": "u-1"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.headers["x-tuneloop-version"]


def _served_within(gateway: dict, key: str, expected: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while (served := _served(gateway, key)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return served


def _audit(tenant: TenantStore, action: str) -> list[dict]:
    from tuneloop.dashboard.views import audit_rows

    return [a for a in audit_rows(tenant) if a["action"] == action]


def test_versions_rollback_restores_the_previous_production_at_once_and_is_audited(
    gateway: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    tenant, key, _ = _tenant(gateway)
    registry = Registry(tenant)
    first = _production(registry, "one")
    second = _production(registry, "two")
    assert _served_within(gateway, key, second, 3) == second
    monkeypatch.setenv("TUNELOOP_HOME", str(gateway["home"]))

    why = "complaints, see +1 415-555-0132"
    assert main(["versions", "rollback", "--tenant", tenant.tenant.name, "--reason", why]) == 0

    assert f"rolled back {second}; {first} serves" in capsys.readouterr().out
    assert (registry.get(second).state, registry.get(first).state) == ("rolled_back", "production")
    started = time.monotonic()
    assert _served_within(gateway, key, first, 3) == first
    assert time.monotonic() - started < 2  # the router re-reads the registry within a second
    [row] = _audit(tenant, "version.rollback")
    assert (row["actor"], row["subject"], row["details"]["restored"]) == ("cli", second, first)
    assert row["details"]["reason"] == "complaints, see <PHONE_NUMBER>"  # the audit log forgets nothing
    assert gateway["store"].verify_audit()[0]
    # The restored version replaced the base model: the next rollback restores the base.
    assert main(["versions", "rollback", "--tenant", tenant.tenant.name]) == 0
    assert registry.production() is None and _served_within(gateway, key, "base", 3) == "base"
    assert main(["versions", "rollback", "--tenant", tenant.tenant.name]) == 1
    assert "nothing to roll back" in capsys.readouterr().err


def test_operators_govern_over_http_and_ingest_keys_cannot(gateway: dict) -> None:
    tenant, key, ingest = _tenant(gateway)
    registry = Registry(tenant)
    old, current = _production(registry, "old"), _production(registry, "current")
    held = registry.register(kind="adapter", base_model="base", actor="test")
    registry.move(held.id, "gated", actor="test", reason="passed")
    registry.move(held.id, "pending_approval", actor="loop", reason="require_approval")
    judge = registry.register(kind="reward_model", base_model="base", actor="test")
    registry.move(judge.id, "gated", actor="test", reason="fit")
    http = httpx.Client(
        base_url=f"{gateway['url']}/v1/governance", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    with http:
        refused = httpx.post(
            f"{gateway['url']}/v1/governance/rollback", json={}, headers={"Authorization": f"Bearer {ingest}"}
        )
        assert refused.status_code == 403 and "--role operator" in refused.json()["error"]["message"]

        assert http.post(f"/versions/{held.id}/approve", json={}).status_code == 400  # who approves?
        assert http.post(f"/versions/{current}/approve", json={"by": "Dana"}).status_code == 409
        assert http.post("/versions/v-nope/approve", json={"by": "Dana"}).status_code == 404
        approved = http.post(f"/versions/{held.id}/approve", json={"by": "Dana", "reason": "read it"})
        assert approved.json() == {"id": held.id, "kind": "adapter", "state": "gated"}
        assert _audit(tenant, "version.approve")[0]["actor"] == "Dana"

        assert http.post(f"/reward-models/{judge.id}/promote", json={}).json()["state"] == "production"
        assert registry.production("reward_model").id == judge.id
        assert http.post(f"/reward-models/{judge.id}/retire", json={}).json()["state"] == "retired"
        assert http.post(f"/reward-models/{current}/promote", json={}).status_code == 409  # an adapter

        assert http.post("/rollback", json={"to": held.id}).status_code == 409  # gated, never served
        assert http.post("/rollback", json={"kind": "reward_model"}).status_code == 400  # not served
        assert http.post("/rollback", json={"to": ""}).status_code == 400  # not "the one it replaced"
        no_reranker = http.post("/rollback", json={"kind": "reranker"})
        assert no_reranker.status_code == 409 and "the embedding order serves" in no_reranker.text
        assert http.post("/rollback", json={"to": old}).json() == {"rolled_back": current, "production": old}
        assert _served_within(gateway, key, old, 3) == old

        paused = http.post("/loop/pause", json={"reason": "audit week, ask jane.doe@example.com"})
        assert paused.json() == {"paused": True}
        assert http.post("/loop/pause", json={}).status_code == 409
        # The audit log keeps what it is given forever, so a reason is redacted on the way in.
        assert http.get("/loop").json()["paused"]["reason"] == "audit week, ask <EMAIL_ADDRESS>"
        assert http.post("/loop/resume", json={}).json() == {"paused": False}
        assert http.get("/loop").json() == {"paused": None, "turns": []}
        states = {v["id"]: v["state"] for v in http.get("/versions").json()["data"]}
    assert states == {old: "production", current: "rolled_back", held.id: "gated", judge.id: "retired"}
