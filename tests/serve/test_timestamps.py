"""Client times with any UTC offset mean the same instant everywhere, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx

from tests.live import live_server
from tuneloop.config import Settings
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.repository import Store

PLUS_FIVE = timezone(timedelta(hours=5))


def test_offsets_are_kept_as_instants_and_since_with_an_offset_finds_new_events(
    tmp_path: Path, db_url: str
) -> None:
    settings = Settings(home=tmp_path / "home", db_url=db_url, backend="none")
    store = Store(db_url)
    tenant, key = store.create_tenant("acme", redaction="off")
    with (
        live_server(settings) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http,
    ):
        http.post(
            "/v1/interactions",
            json={"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "r"},
        )
        sent = http.post(
            "/v1/feedback",
            json={
                "id": "e1",
                "interaction_id": "i1",
                "kind": "thumbs",
                "value": 1,
                "created_at": "2024-03-01T10:00:00+05:00",
            },
        )
        assert sent.status_code == 201, sent.text
        [event] = http.get("/v1/feedback").json()["data"]
        received = datetime.fromisoformat(event["received_at"])
        since = (received - timedelta(seconds=5)).astimezone(PLUS_FIVE).isoformat()
        found = http.get("/v1/feedback", params={"since": since}).json()["data"]
        later = (received + timedelta(seconds=5)).astimezone(PLUS_FIVE).isoformat()
        none = http.get("/v1/feedback", params={"since": later}).json()["data"]
    assert datetime.fromisoformat(event["created_at"]) == datetime(2024, 3, 1, 5, 0, tzinfo=UTC)
    stored = store.for_tenant(tenant).feedback()[0]["created_at"]
    assert stored == datetime(2024, 3, 1, 5, 0, tzinfo=UTC)
    assert [e["id"] for e in found] == ["e1"] and none == []
    store.close()


def test_a_client_time_ahead_of_receipt_does_not_move_the_snapshot_past_now(tmp_path: Path) -> None:
    from tuneloop.capture.events import FeedbackIn
    from tuneloop.store.repository import payload_hash

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    tenant, _ = store.create_tenant("acme")
    scoped = store.for_tenant(tenant)
    scoped.log_interaction(
        {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "a", "choices": ["a", "b"]},
        "d",
    )
    ahead = (datetime.now(UTC) + timedelta(hours=20)).isoformat()  # within the day of slack clients get
    event = FeedbackIn.model_validate(
        {"id": "p1", "interaction_id": "i1", "kind": "thumbs", "value": 1, "created_at": ahead}
    )
    scoped.add_feedback([(event.model_dump(), payload_hash(event.model_dump(mode="json")))])
    before = datetime.now(UTC)
    snapshot = create_snapshot(scoped, tmp_path, RewardPolicy(near_duplicate_threshold=1.0))
    assert snapshot.as_of <= datetime.now(UTC) and snapshot.as_of < before + timedelta(minutes=1)
    store.close()
