"""Gateway replicas on one store: every replica routes a user to the same arm, and a rollback reaches them all
within the routing cache's bound (STATE_TTL_SECONDS)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.live import serve_app
from tests.serve.openai_standin import standin
from tuneloop import Settings
from tuneloop.registry.composition import compose
from tuneloop.registry.versions import Registry
from tuneloop.rollout.controller import finish, start_canary
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.serve.app import create_app
from tuneloop.serve.routing import STATE_TTL_SECONDS
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store, TenantStore

USERS = [f"user-{i}" for i in range(16)]


def _served(url: str, key: str, user: str) -> str:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"messages": [{"role": "user", "content": "Where is my order?"}], "user": user},
    )
    assert response.status_code == 200, response.text
    return response.headers["x-tuneloop-version"]


def _versions(tenant: TenantStore) -> tuple[str, str]:
    """A production version and a gated candidate on a half-and-half canary; returns their ids."""
    registry = Registry(tenant)
    prod = compose(registry, parent=None, base_model="base", actor="test", reason="setup", system_prompt="A")
    registry.move(prod.id, "gated", actor="test", reason="setup")
    registry.move(prod.id, "production", actor="test", reason="setup")
    canary = compose(
        registry, parent=prod, base_model="base", actor="test", reason="setup", system_prompt="B"
    )
    registry.move(canary.id, "gated", actor="test", reason="setup")
    start_canary(tenant, canary.id, RolloutPolicy(ramp=[0.5]), reward_policy=RewardPolicy(), actor="test")
    return prod.id, canary.id


def test_replicas_route_alike_and_all_obey_a_rollback_within_the_bound(postgres, tmp_path: Path) -> None:
    db_url = postgres.create_database("replicas")
    store = Store(db_url)
    tenant_row, key = store.create_tenant("acme", redaction="off")
    tenant = store.for_tenant(tenant_row)
    production, canary = _versions(tenant)
    with ExitStack() as stack:
        upstream = stack.enter_context(serve_app(standin([])))
        # Replicas share the store and the server secret (here through one HOME), as a deployment must.
        settings = Settings(
            home=tmp_path / "home", db_url=db_url, backend="openai", upstream_url=f"{upstream}/v1"
        )
        replicas = [stack.enter_context(serve_app(create_app(settings))) for _ in range(2)]

        arms = {user: {_served(url, key, user) for url in replicas} for user in USERS}
        assert all(len(served) == 1 for served in arms.values()), arms  # sticky across replicas
        on_canary = [user for user, served in arms.items() if served == {canary}]
        assert on_canary and len(on_canary) < len(USERS)

        finish(tenant, "rolled_back", actor="test", reason="guardrail")  # written once, to the store
        rolled_back = time.monotonic()
        while any(_served(url, key, user) != production for url in replicas for user in on_canary):
            assert time.monotonic() - rolled_back < STATE_TTL_SECONDS + 1.0, "a replica kept the canary"
            time.sleep(0.05)
        assert {_served(url, key, user) for url in replicas for user in USERS} == {production}
    store.close()
