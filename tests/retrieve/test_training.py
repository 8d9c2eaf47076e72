"""`tuneloop docs rerank`'s path on a real store: logs and source feedback in, a gated, registered,
served re-ranker out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.retrieve.world import world
from tuneloop.clock import now_utc
from tuneloop.errors import BadRequest
from tuneloop.registry.versions import Registry
from tuneloop.retrieve.training import Logged, production_reranker, train_and_gate
from tuneloop.store.repository import Store, TenantStore, TenantTx
from tuneloop.store.schema import feedback, interactions, retrievals


@pytest.fixture
def tenant(tmp_path: Path) -> TenantStore:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    return store.for_tenant(store.create_tenant("acme", redaction="off")[0])


def _log(tenant: TenantStore, logs: list[Logged]) -> None:
    """Each retrieval with its interaction and a source_clicked event per click, as the API stores them."""

    def write(tx: TenantTx) -> None:
        now = now_utc()
        for n, log in enumerate(logs):
            iid = f"int-{n}"
            tx.insert(interactions, id=iid, messages=[{"role": "user", "content": "q"}], response="a",
                      choices=["a"], payload_hash="-", created_at=now)  # fmt: skip
            tx.insert(retrievals, id=log.id, interaction_id=iid, ranker="embedding", results=log.results,
                      created_at=now)  # fmt: skip
            for chunk in sorted(log.clicked):
                tx.insert(feedback, id=f"{iid}-{chunk}", interaction_id=iid, kind="source_clicked",
                          value={"chunk_id": chunk}, source="user", payload_hash="-", created_at=now,
                          received_at=now)  # fmt: skip

    tenant.transaction(write)


def test_a_reranker_that_beats_the_shown_order_is_registered_with_lineage_and_served(
    tenant: TenantStore, tmp_path: Path
) -> None:
    _, logs = world(seed=5, sessions=600)
    _log(tenant, logs)

    version, gate = train_and_gate(tenant, tmp_path, actor="test")

    assert gate.passed, gate.reason
    assert (version.kind, version.state, version.base_model) == ("reranker", "production", "all-MiniLM-L6-v2")
    assert version.metrics["ndcg@5_candidate"] > version.metrics["ndcg@5_production"]
    assert version.snapshot_hash and list(version.artifact_checksums or {}) == ["reranker.json"]
    served = production_reranker(tenant)
    assert served is not None and served.version == version.id


def test_a_reranker_with_too_little_feedback_is_blocked_and_never_served(
    tenant: TenantStore, tmp_path: Path
) -> None:
    _, logs = world(seed=5, sessions=40)
    _log(tenant, logs)

    version, gate = train_and_gate(tenant, tmp_path, actor="test")

    assert not gate.passed and "held-out retrievals" in gate.reason and version.state == "blocked"
    assert Registry(tenant).production("reranker") is None  # type: ignore[arg-type]


def test_a_tampered_reranker_is_not_served(tenant: TenantStore, tmp_path: Path) -> None:
    _, logs = world(seed=5, sessions=600)
    _log(tenant, logs)
    version, _ = train_and_gate(tenant, tmp_path, actor="test")
    artifact = Path(version.artifact_path or "") / "reranker.json"
    artifact.write_text(json.dumps({**json.loads(artifact.read_text()), "bias": 99.0}))
    other = Store(tenant.store.url).for_tenant(tenant.tenant)  # a fresh process's view: nothing cached

    assert production_reranker(other) is None or production_reranker(other).version != version.id


def test_no_feedback_on_sources_is_a_clear_error(tenant: TenantStore, tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no feedback on sources"):
        train_and_gate(tenant, tmp_path)
