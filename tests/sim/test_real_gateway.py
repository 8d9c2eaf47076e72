"""The simulator against tuneloop's real gateway (tiny random-weight model) over real HTTP: every event it
sends is accepted and lands on the interaction the completion created."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.live import live_server
from tuneloop import Settings
from tuneloop.sim import run_traffic, satisfaction, support
from tuneloop.store.repository import Store


def test_simulated_users_feedback_lands_on_real_interactions(tiny_model: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model), max_batch_size=8)
    store = Store(settings.database_url)
    _, key = store.create_tenant("finly", redaction="off")
    scenario = support(0)
    try:
        with live_server(settings) as url:
            report = run_traffic(url, key, scenario, 24, concurrency=8, seed=0)
            assert report.episodes == 24 and not report.errors and report.rejected == 0
            assert sum(report.events.values()) > 0 and set(report.by_version) == {"base"}
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
            stored = http.get("/v1/feedback", params={"limit": 1000}).json()["data"]
            assert len(stored) == sum(report.events.values())
            probe = satisfaction(url, key, scenario, scenario.eval_prompts(4), concurrency=4)
            assert 0.0 <= probe <= 1.0
    finally:
        store.close()
