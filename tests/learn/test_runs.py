from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.signals.test_snapshots import POLICY, _seed
from tuneloop.config import Settings
from tuneloop.errors import BadRequest, NotFound
from tuneloop.learn.runs import train_version
from tuneloop.registry.versions import Registry
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.repository import Store

FAST = {"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "save_steps": 1}


@pytest.fixture
def setup(tmp_path: Path, tiny_model: Path) -> dict:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model))
    store = Store(settings.database_url)
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    tenant_a = store.for_tenant(a)
    _seed(tenant_a)
    snap = create_snapshot(tenant_a, settings.home, POLICY)
    return {
        "settings": settings,
        "a": tenant_a,
        "b": store.for_tenant(b),
        "snapshot": snap.hash,
        "store": store,
    }


def test_policy_run_registers_a_candidate_with_its_lineage(setup: dict) -> None:
    version = train_version(setup["a"], setup["settings"], setup["snapshot"], "dpo", trainer_args=FAST)
    assert version.state == "candidate" and version.snapshot_hash == setup["snapshot"]
    assert version.base_model_hash and "adapter_model.safetensors" in version.artifact_checksums
    assert version.job_spec["trainer_args"]["max_steps"] == 3 and version.metrics["method"] == "dpo"
    assert version.job_spec["engine"] == "process"  # the default: the job trained in a child process
    again = train_version(setup["a"], setup["settings"], setup["snapshot"], "dpo", trainer_args=FAST)
    assert again.id == version.id and len(Registry(setup["a"]).list()) == 1
    ok, _ = setup["store"].verify_audit()
    assert ok


def test_tenant_b_cannot_train_on_tenant_a_snapshot(setup: dict) -> None:
    with pytest.raises(NotFound):
        train_version(setup["b"], setup["settings"], setup["snapshot"], "dpo", trainer_args=FAST)


def test_cancelled_job_leaves_no_registered_version(setup: dict) -> None:
    cancel = threading.Event()
    cancel.set()
    assert (
        train_version(
            setup["a"], setup["settings"], setup["snapshot"], "dpo", trainer_args=FAST, cancel=cancel
        )
        is None
    )
    assert Registry(setup["a"]).list() == []


@pytest.mark.parametrize(
    "args",
    [
        {"trainer_args": {"bogus": 1}},
        {"trainer_args": {"learning_rate": "fast"}},
        {"lora": {"bogus": 1}},
        {"lora": {"r": "big"}},
    ],
)
def test_bad_trainer_or_lora_arguments_are_refused_before_any_job_starts(setup: dict, args: dict) -> None:
    with pytest.raises(BadRequest):
        train_version(setup["a"], setup["settings"], setup["snapshot"], "dpo", **args)
    assert not (setup["settings"].home / "jobs").exists()
