from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tuneloop.errors import BadRequest, NotFound
from tuneloop.evaluate.policy import PiiLeakConfig
from tuneloop.signals import canaries
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot, export_trl, get_snapshot, list_snapshots
from tuneloop.store.repository import Store, TenantStore, payload_hash

# Exact-duplicate prompts only: these tests are about freezing and hashing, not about embeddings.
POLICY = RewardPolicy(near_duplicate_threshold=1.0)


def _seed(tenant: TenantStore, flip: bool = False, prefix: str = "") -> None:
    for i in range(12):
        iid = f"{prefix}i{i}"
        question = f"{prefix}How do I close account number {i}?"
        tenant.log_interaction(
            {
                "id": iid,
                "user_id": f"u{i % 4}",
                "messages": [{"role": "user", "content": question}],
                "response": f"Answer {i}",
                "choices": [f"Answer {i}", f"Other {i}"],
            },
            f"d{iid}",
        )
        events = [
            {
                "id": f"{prefix}t{i}",
                "interaction_id": iid,
                "kind": "thumbs",
                "value": -1 if flip and i == 3 else 1,
            },
            {
                "id": f"{prefix}p{i}",
                "interaction_id": iid,
                "kind": "preference",
                "value": {"chosen": 1, "rejected": 0},
            },
            {"id": f"{prefix}e{i}", "interaction_id": iid, "kind": "edit", "value": f"Better answer {i}"},
        ]
        tenant.add_feedback([({**e, "source": "user"}, payload_hash(e)) for e in events])


def _tenant(tmp_path: Path, name: str) -> TenantStore:
    store = Store(f"sqlite:///{tmp_path / name / 'db.sqlite'}")
    tenant, _ = store.create_tenant("acme")
    return store.for_tenant(tenant)


def test_same_events_and_policy_give_the_same_hash_and_one_changed_event_changes_it(tmp_path: Path) -> None:
    hashes = []
    for name, flip in (("one", False), ("two", False), ("three", True)):
        tenant = _tenant(tmp_path, name)
        _seed(tenant, flip=flip)
        hashes.append(create_snapshot(tenant, tmp_path / name, POLICY).hash)
    assert hashes[0] == hashes[1]
    assert hashes[2] != hashes[0]


def test_snapshot_is_registered_with_counts_lineage_and_is_idempotent(tmp_path: Path) -> None:
    tenant = _tenant(tmp_path, "one")
    _seed(tenant)
    snap = create_snapshot(tenant, tmp_path, POLICY)
    assert create_snapshot(tenant, tmp_path, POLICY).hash == snap.hash
    assert [s.hash for s in list_snapshots(tenant)] == [snap.hash]
    assert get_snapshot(tenant, snap.hash[:8]).counts == snap.counts
    pairs = [row for row in snap.rows("pairs") if row["origin"] != canaries.ORIGIN]
    assert snap.counts["pairs_train"] + snap.counts["pairs_heldout"] == len(pairs) > 0
    assert all(row["event_ids"] for row in pairs)
    assert json.loads((snap.path / "manifest.json").read_text())["hash"] == snap.hash


def test_every_snapshot_plants_a_canary_the_gate_probes_for_and_never_stores_it(tmp_path: Path) -> None:
    tenant = _tenant(tmp_path, "one")
    _seed(tenant)

    snap = create_snapshot(tenant, tmp_path, POLICY)

    secret = canaries.secret(snap.hash)
    assert re.fullmatch(PiiLeakConfig().canary_pattern, secret)
    for dataset in ("pairs", "kto", "sft"):
        [planted] = [row for row in snap.rows(dataset) if row["origin"] == canaries.ORIGIN]
        assert planted["split"] == "train" and secret in json.dumps(planted)
    assert snap.counts["planted_canaries"] == 1
    stored = json.dumps([tenant.interactions(), tenant.feedback()], default=str)
    assert "CANARY-" not in stored  # planted in the training rows only, never in users' data


def test_tenant_snapshot_holds_no_row_from_another_tenant(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    _seed(store.for_tenant(a), prefix="a-")
    _seed(store.for_tenant(b), prefix="b-")
    snap = create_snapshot(store.for_tenant(a), tmp_path, POLICY)
    lineage = [
        i for name in ("pairs", "kto", "sft") for row in snap.rows(name) for i in row["interaction_ids"]
    ]
    assert lineage and all(i.startswith("a-") for i in lineage)


def test_snapshot_of_a_tenant_without_feedback_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no feedback yet"):
        create_snapshot(_tenant(tmp_path, "one"), tmp_path, POLICY)


def test_exported_files_pass_trl_dataset_preparation(tmp_path: Path, tiny_model: Path) -> None:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    tenant = _tenant(tmp_path, "one")
    _seed(tenant)
    out = tmp_path / "trl"
    export_trl(create_snapshot(tenant, tmp_path, POLICY), out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    common = {"output_dir": str(tmp_path / "run"), "report_to": "none", "use_cpu": True, "max_steps": 1}
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    for trainer_cls, config_cls, name in (
        (DPOTrainer, DPOConfig, "preference"),
        (KTOTrainer, KTOConfig, "unpaired"),
    ):
        data = load_dataset("json", data_files=str(out / f"{name}_train.jsonl"), split="train")
        assert len(data) > 0
        trainer = trainer_cls(
            model=AutoModelForCausalLM.from_pretrained(tiny_model),
            args=config_cls(**common),
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora,
        )
        tokenized = [c for c in trainer.train_dataset.column_names if c.endswith("ids")]
        assert tokenized and all(len(trainer.train_dataset[0][c]) > 0 for c in tokenized)


def test_a_snapshot_prefix_with_like_wildcards_matches_nothing(tmp_path: Path) -> None:
    tenant = _tenant(tmp_path, "one")
    _seed(tenant)
    create_snapshot(tenant, tmp_path, POLICY)
    for prefix in ("______", "%%%%%%"):
        with pytest.raises(NotFound):
            get_snapshot(tenant, prefix)


def test_concurrent_snapshots_of_the_same_feedback_register_it_once(tmp_path: Path) -> None:
    """Two ticks of one tenant (a worker's lease is re-entrant for its own name) froze the same signals at
    once: the second insert hit the first's row on every retry, and the turn failed."""
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    from tuneloop.store.schema import audit_log

    tenant = _tenant(tmp_path, "one")
    _seed(tenant)
    with ThreadPoolExecutor(max_workers=4) as pool:
        hashes = set(pool.map(lambda _: create_snapshot(tenant, tmp_path, POLICY).hash, range(4)))
    [digest] = hashes
    assert [s.hash for s in list_snapshots(tenant)] == [digest]
    with tenant.store.read() as conn:
        created = conn.execute(
            sa.select(sa.func.count()).where(audit_log.c.action == "snapshot.create")
        ).scalar_one()
    assert created == 1 and get_snapshot(tenant, digest).rows("pairs")
