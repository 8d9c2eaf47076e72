"""What erasure does to versions under the `retire` policy, through the CLI: production retired at once, a
live canary of an affected version rolled back, and the next turn never warm-starting from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.privacy.traffic import JANE, capture
from tuneloop import Settings
from tuneloop.cli import main
from tuneloop.config import tenant_policy_file
from tuneloop.loop.policy import LoopPolicy
from tuneloop.loop.stages import _warm_start_from
from tuneloop.registry.versions import Registry
from tuneloop.retrieve.search import log_retrieval
from tuneloop.rollout import controller
from tuneloop.rollout.experiments import get_experiment
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.repository import Store


def test_retire_policy_retires_production_and_rolls_back_the_canary(
    tuneloop_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(settings.database_url, secret=settings.hash_key())
    tenant = store.for_tenant(store.create_tenant("acme", redaction="off")[0])  # ids are stored as sent
    capture(tenant, settings)
    snapshot = create_snapshot(tenant, tuneloop_home, RewardPolicy())
    registry = Registry(tenant)
    lora = {"lora": {"r": 16}}
    production, candidate = (
        registry.register(
            kind="adapter",
            base_model="b",
            actor="t",
            snapshot_hash=snapshot.hash,
            artifact_path=f"/a/{n}",
            job_spec=lora,
        )
        for n in ("prod", "cand")
    )
    for version, to in ((production, "gated"), (production, "production"), (candidate, "gated")):
        registry.move(version.id, to, actor="t", reason="t")
    exp = controller.start_canary(
        tenant, candidate.id, RolloutPolicy(), reward_policy=RewardPolicy(), actor="t"
    )
    assert _warm_start_from(LoopPolicy(lora=lora["lora"]), registry.get(production.id)) == "/a/prod"
    path = tenant_policy_file(tuneloop_home, "acme", "privacy_policy.yaml")
    path.parent.mkdir(parents=True)
    path.write_text("erasure: retire\n")

    assert main(["users", "forget", "--tenant", "acme", JANE]) == 0

    out = capsys.readouterr().out
    assert "3 interactions and 11 feedback events deleted" in out and JANE not in out
    assert registry.get(production.id).state == "retired"
    assert registry.get(candidate.id).state == "rolled_back"
    assert get_experiment(tenant, exp.id).state == "rolled_back"
    assert registry.production() is None  # the base model serves until the next turn
    assert _warm_start_from(LoopPolicy(lora=lora["lora"]), registry.get(production.id)) is None
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    assert all(JANE.encode() not in p.read_bytes() for p in database.parent.glob("tuneloop.db*"))
    assert main(["audit", "verify"]) == 0
    store.close()


def test_unknown_tenant_is_a_one_line_cli_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert main(["users", "forget", "--tenant", "nope", JANE]) == 1
    assert "unknown tenant 'nope'" in capsys.readouterr().err


def test_erasure_retires_rerankers_trained_after_the_users_first_retrieval(tuneloop_home: Path) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(settings.database_url, secret=settings.hash_key())
    tenant = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    capture(tenant, settings)
    registry = Registry(tenant)

    def reranker(*states: str) -> str:
        version = registry.register(kind="reranker", base_model="e", actor="t", artifact_path="/r")
        for to in states:
            registry.move(version.id, to, actor="t", reason="t")
        return version.id

    before = reranker("gated", "production")
    log_retrieval(tenant, [], ranker="embedding", interaction_id="j0")  # Jane's question was searched
    production, canary = reranker("gated", "production"), reranker("gated", "canary")
    path = tenant_policy_file(tuneloop_home, "acme", "privacy_policy.yaml")
    path.parent.mkdir(parents=True)
    path.write_text("erasure: retire\n")

    assert main(["users", "forget", "--tenant", "acme", JANE]) == 0

    assert registry.get(production).state == "retired" and registry.get(canary).state == "rolled_back"
    assert registry.get(before).state == "retired" and registry.get(before).erased_at is None
    assert registry.production("reranker") is None  # the embedding order serves until the next turn
    store.close()
