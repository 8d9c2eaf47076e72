"""The re-ranker's path on a real store: logs and source feedback in, a gated, registered re-ranker on an
interleaved canary out; the canary promoted or rolled back by what users then prefer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import mean

import httpx
import pytest

from tests.live import live_server
from tests.retrieve.world import store_logs, world
from tuneloop import Settings
from tuneloop.cli import main
from tuneloop.errors import BadRequest, Conflict
from tuneloop.loop import Loop
from tuneloop.registry.versions import Registry
from tuneloop.retrieve.serving import CACHE_SECONDS, serving_rerankers
from tuneloop.retrieve.training import retrain, train_and_gate
from tuneloop.sim.scenarios.rag import DOCUMENTS
from tuneloop.sim.sources import retrieval_sessions
from tuneloop.store.repository import Store, TenantStore


@pytest.fixture
def tenant(tmp_path: Path) -> TenantStore:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    return store.for_tenant(store.create_tenant("acme", redaction="off")[0])


def test_a_reranker_that_beats_the_shown_order_is_registered_with_lineage_and_put_on_canary(
    tenant: TenantStore, tmp_path: Path
) -> None:
    _, logs = world(seed=5, sessions=600)
    store_logs(tenant, logs)

    version, gate = train_and_gate(tenant, tmp_path, actor="test")

    assert gate.passed, gate.reason
    assert (version.kind, version.state, version.base_model) == ("reranker", "canary", "all-MiniLM-L6-v2")
    assert version.metrics["ndcg@5_candidate"] > version.metrics["ndcg@5_production"]
    assert version.snapshot_hash and list(version.artifact_checksums or {}) == ["reranker.json"]
    served = serving_rerankers(tenant)
    assert served.production is None and served.canary is not None and served.canary.version == version.id
    with pytest.raises(Conflict, match="on canary"):  # one canary at a time
        train_and_gate(tenant, tmp_path, actor="test")


def test_a_reranker_with_too_little_feedback_is_blocked_and_never_served(
    tenant: TenantStore, tmp_path: Path
) -> None:
    _, logs = world(seed=5, sessions=40)
    store_logs(tenant, logs)

    version, gate = train_and_gate(tenant, tmp_path, actor="test")

    assert not gate.passed and "held-out retrievals" in gate.reason and version.state == "blocked"
    assert Registry(tenant).production("reranker") is None


def test_a_single_retrieval_with_feedback_is_blocked_for_too_little_not_a_crash(
    tenant: TenantStore, tmp_path: Path
) -> None:
    _, logs = world(seed=5, sessions=40)
    clicked = next(log for log in logs if log.clicked)
    store_logs(tenant, [clicked])

    version, gate = train_and_gate(tenant, tmp_path, actor="test")

    assert version.state == "blocked" and "only 1 held-out retrievals" in gate.reason


def test_a_tampered_reranker_is_not_served(tenant: TenantStore, tmp_path: Path) -> None:
    _, logs = world(seed=5, sessions=600)
    store_logs(tenant, logs)
    version, _ = train_and_gate(tenant, tmp_path, actor="test")
    artifact = Path(version.artifact_path or "") / "reranker.json"
    artifact.write_text(json.dumps({**json.loads(artifact.read_text()), "bias": 99.0}))
    other = Store(tenant.store.url).for_tenant(tenant.tenant)  # a fresh process's view: nothing cached

    assert version.state == "canary" and serving_rerankers(other).canary is None


def test_no_feedback_on_sources_is_a_clear_error(tenant: TenantStore, tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no feedback on sources"):
        train_and_gate(tenant, tmp_path)


def _promote(tenant: TenantStore, report: dict) -> str:
    """Promote the re-ranker a retrain put on canary, as a canary users preferred would be."""
    Registry(tenant).move(report["version"], "production", actor="test", reason="users preferred it")
    return report["version"]


def test_retraining_skips_until_new_source_feedback_arrives(tenant: TenantStore, tmp_path: Path) -> None:
    assert retrain(tenant, tmp_path, actor="loop") == {"skipped": "no feedback on sources"}
    _, logs = world(seed=5, sessions=600)
    store_logs(tenant, logs[:500])

    first = retrain(tenant, tmp_path, actor="loop")
    waiting = retrain(tenant, tmp_path, actor="loop")
    _promote(tenant, first)
    again = retrain(tenant, tmp_path, actor="loop")
    store_logs(tenant, logs[500:], start=500)
    after_more = retrain(tenant, tmp_path, actor="loop")

    assert first["state"] == "canary", first
    # No interleaved retrieval yet: the canary waits, and no second candidate is trained meanwhile.
    assert waiting == {"canary": {"version": first["version"], "state": "canary", "wins": 0, "decisive": 0}}
    assert again == {"skipped": f"no new retrievals or source feedback since {first['version']}"}
    # Trained on the longer log, but the users' world did not change: no better than production, blocked.
    assert after_more["state"] == "blocked" and "not above production's" in after_more["reason"]
    assert Registry(tenant).get(after_more["version"]).parent_id == first["version"]


def _reranker(registry: Registry, state: str) -> str:
    version = registry.register(kind="reranker", base_model="all-MiniLM-L6-v2", actor="test")
    registry.move(version.id, "gated", actor="test", reason="passed its gate")
    registry.move(version.id, state, actor="test", reason="setup")
    return version.id


def test_a_reranker_rolls_back_its_canary_then_to_the_one_it_replaced_then_to_the_embedding_order(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    store = Store(Settings().database_url)
    registry = Registry(store.for_tenant(store.create_tenant("acme", redaction="off")[0]))
    first, second = _reranker(registry, "production"), _reranker(registry, "production")
    third = _reranker(registry, "canary")
    rollback = ["versions", "rollback", "--tenant", "acme", "--kind", "reranker"]

    assert main(rollback) == 0  # the canary goes first; production stays
    assert f"rolled back {third}; {second} serves acme now" in capsys.readouterr().out
    assert main(rollback) == 0
    assert f"rolled back {second}; {first} serves acme now" in capsys.readouterr().out
    states = [registry.get(v).state for v in (first, second, third)]
    assert states == ["production", "rolled_back", "rolled_back"]
    assert registry.production("adapter") is None
    assert main(rollback) == 0
    assert "the embedding order serves acme now" in capsys.readouterr().out
    assert main(rollback) == 1
    assert "nothing to roll back: the embedding order serves" in capsys.readouterr().err


def test_the_loop_promotes_a_reranker_users_prefer_on_its_interleaved_canary_over_http(
    tuneloop_home: Path,
) -> None:
    settings = Settings(backend="none", tenant_rate_limit=10_000, tenant_rate_burst=10_000)
    store = Store(settings.database_url)
    row, key = store.create_tenant("rag", redaction="off")
    tenant = store.for_tenant(row)
    loop = Loop(tenant, settings)
    with (
        live_server(settings) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
    ):
        for doc, text in DOCUMENTS.items():
            http.put(f"/v1/documents/{doc}", json={"text": text, "format": "markdown"}).raise_for_status()
        before = retrieval_sessions(http, 300, seed=1, tag="before")
        turn = loop.tick(force=True)
        assert turn is not None and turn.report["reranker"]["state"] == "canary", turn.report
        candidate = turn.report["reranker"]["version"]
        time.sleep(CACHE_SECONDS)  # the server's view of the re-rankers catches up

        canary = retrieval_sessions(http, 25, seed=2, tag="canary")
        [record] = http.get("/v1/retrievals", params={"interaction_id": "int-canary-0"}).json()["data"]
        while Registry(tenant).get(candidate).state == "canary" and len(canary) < 500:
            loop.tick()
            canary += retrieval_sessions(http, 25, seed=len(canary), tag=f"canary-{len(canary)}")
        time.sleep(CACHE_SECONDS)  # the server's view of production catches up
        after = retrieval_sessions(http, 100, seed=3, tag="after")

    assert record["ranker"] == f"interleaved:{candidate}"
    assert {r["side"] for r in record["results"]} == {"production", "candidate"}
    assert Registry(tenant).production("reranker").id == candidate  # type: ignore[union-attr]
    assert mean(s.ndcg() for s in after) > mean(s.ndcg() for s in before) + 0.1
