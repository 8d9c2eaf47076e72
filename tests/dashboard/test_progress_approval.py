"""The Progress page names a canary that won and waits for a named approver, with the command to decide;
the Canary page shows a canary nothing has looked at yet."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.live import live_server
from tests.rollout.canary_traffic import POLICY, REWARDS, canary_traffic, gated_version
from tuneloop import Settings
from tuneloop.rollout import controller
from tuneloop.store.repository import Store


def test_a_canary_waiting_for_approval_is_on_the_progress_page(tmp_path: Path, tiny_model: Path) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model))
    store = Store(settings.database_url)
    created, key = store.create_tenant("acme")
    tenant = store.for_tenant(created)
    candidate = gated_version(tenant)
    policy = POLICY.model_copy(update={"approve_promotion": True})
    exp = controller.start_canary(
        tenant, candidate, policy, reward_policy=REWARDS, actor="test", experiment_id="exp-approval"
    )
    for b in range(30):
        canary_traffic(tenant, exp, 60, {"control": 0.3, "treatment": 0.8}, seed=b, start=b * 60)
        exp = controller.review(tenant, REWARDS)
        if controller.waiting_for_approval(tenant):
            break
    with live_server(settings) as url, httpx.Client(base_url=url) as http:
        assert http.post("/dashboard/login", data={"key": key}).status_code == 303  # to the dashboard
        page = http.get("/dashboard/t/acme/progress")
    store.close()
    assert page.status_code == 200
    assert f"versions approve {candidate} --tenant acme" in page.text
    assert "waits for a person before it replaces production" in page.text


def test_a_canary_started_by_hand_shows_before_anything_has_looked_at_it(
    tmp_path: Path, tiny_model: Path
) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model))
    store = Store(settings.database_url)
    created, key = store.create_tenant("acme")
    tenant = store.for_tenant(created)
    candidate = gated_version(tenant)
    controller.start_canary(tenant, candidate, POLICY, reward_policy=REWARDS, actor="cli")
    with live_server(settings) as url, httpx.Client(base_url=url) as http:
        assert http.post("/dashboard/login", data={"key": key}).status_code == 303
        page = http.get("/dashboard/t/acme/canary")
    store.close()
    assert page.status_code == 200, page.text
    assert candidate in page.text and "none yet" in page.text
