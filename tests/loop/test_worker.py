"""Loop workers share tenants' loops through leases: a turn runs once; a killed worker's turn resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.monitor.seed import cooking_prompt, give, log, stream
from tuneloop import Settings
from tuneloop.cli import main
from tuneloop.dashboard.views import audit_rows
from tuneloop.loop import Loop
from tuneloop.loop.turns import advance_turn, list_turns, start_turn
from tuneloop.loop.worker import Worker
from tuneloop.registry.versions import Registry
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.leases import Leases
from tuneloop.store.repository import Store, TenantStore


def _policy(home: Path, tenant: str, **fields: object) -> None:
    folder = home / "policies" / tenant
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loop_policy.yaml").write_text(yaml.safe_dump(fields))


def _actions(tenant: TenantStore, action: str) -> int:
    return sum(1 for a in audit_rows(tenant) if a["action"] == action)


def test_a_lease_is_never_held_by_two_workers_at_once(store: Store) -> None:
    tenant = store.create_tenant("acme")[0]
    leases = Leases(store, ttl=0.3)
    tokens = []
    for _ in range(3):  # each round, eight workers race for the free (or expired) lease
        start = threading.Barrier(8)
        won: list = []

        def race(name: str, start: threading.Barrier = start, won: list = won) -> None:
            start.wait()
            lease = leases.acquire(tenant.id, name)
            if lease is not None:
                won.append(lease)

        threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        [lease] = won
        assert leases.holders() == {tenant.id: lease.holder} and leases.holds(lease)
        tokens.append(lease.token)
        time.sleep(0.35)  # the holder dies without releasing: the lease expires
        assert not leases.holds(lease) and leases.holders() == {}
    assert tokens == sorted(set(tokens))  # every acquisition fences out the holders before it
    stale = leases.acquire(tenant.id, "w-new")
    assert stale is not None and not leases.renew(won[0]) and leases.holds(stale)
    leases.release(stale)
    assert leases.acquire(tenant.id, "w-other") is not None  # released: free at once, no TTL to wait


def test_two_workers_run_every_due_turn_exactly_once(postgres, tmp_path: Path) -> None:
    url = postgres.create_database("workers_three_tenants")
    settings = Settings(home=tmp_path / "home", db_url=url)
    store = Store(url)
    names = ("acme", "beta", "gamma")
    start = datetime.now(UTC) - timedelta(hours=1)
    for i, name in enumerate(names):
        tenant = store.for_tenant(store.create_tenant(name)[0])
        stream(tenant, start=start, hours=0.5, count=6, prompt=cooking_prompt, seed=i)
        _policy(settings.home, name, min_new_events=5, min_rows=1000, on_alerts=False)
    # Two workers, each with its own store connection pool as a separate process would have.
    workers = [Worker(Store(url), settings, f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=w.run_once) for w in workers for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for name in names:
        tenant = store.for_tenant(store.tenant_by_name(name))
        [turn] = list_turns(tenant)
        assert (turn.stage, turn.outcome) == ("done", "skipped"), turn.report  # too few rows
        assert _actions(tenant, "loop.turn") == 1 and _actions(tenant, "snapshot.create") == 1
    assert Leases(store, 60).holders() == {}  # every lease was given back


def _edited_chats(tenant: TenantStore, count: int) -> None:
    """Interactions whose users each rewrote the answer: one preference pair (edit > original) apiece."""
    at = datetime.now(UTC) - timedelta(hours=2)
    for i in range(count):
        iid = log(tenant, prompt=f"How long do I boil egg number {i}?", response="No idea.", created_at=at)
        give(tenant, iid, "edit", f"Sure. Boil egg {i} for seven minutes.", at + timedelta(minutes=1))


def test_a_killed_workers_turn_is_resumed_by_another_from_its_stage(
    postgres, tiny_model: Path, tmp_path: Path
) -> None:
    url = postgres.create_database("workers_kill")
    home = tmp_path / "home"
    # Trains in the workers' processes: a child's imports would add seconds (a killed launcher's job stops
    # with it: tests/learn/test_launchers.py).
    settings = Settings(
        home=home, db_url=url, model=str(tiny_model), loop_lease_seconds=2, train_engine="local"
    )
    store = Store(url)
    tenant = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    _edited_chats(tenant, 16)
    args = {"max_steps": 6, "save_steps": 2, "max_length": 64, "per_device_train_batch_size": 2}
    _policy(
        home,
        "acme",
        min_new_events=10_000,
        on_alerts=False,
        min_rows=4,
        trainer_args=args,
        repeat={"edit": 1},
    )
    # A turn that reached its adapter stage: training is the long stage, the one a crash is likeliest in.
    snap = create_snapshot(tenant, home, RewardPolicy(), actor="test")
    advance_turn(tenant, start_turn(tenant, "manual", "adapter"), "adapter", {"snapshot": snap.hash})
    Loop(tenant, settings).check()  # this hour's drift checks are done: the workers go straight to the turn
    env = {**os.environ, "TUNELOOP_HOME": str(home), "TUNELOOP_DB_URL": url}
    env |= {
        "TUNELOOP_MODEL": str(tiny_model),
        "TUNELOOP_LOOP_LEASE_SECONDS": "2",
        "TUNELOOP_TRAIN_ENGINE": "local",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneloop", "worker", "--once", "--name", "doomed"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    jobs = home / "jobs" / tenant.tenant_id
    deadline = time.monotonic() + 300
    while not list(jobs.glob(".partial-*/checkpoints/checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.monotonic() < deadline, list_turns(tenant)[-1].report.get("error")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    worker = Worker(store, settings, "survivor")
    assert Leases(store, 2).holders() == {tenant.tenant_id: "doomed"}
    assert worker.run_once() == []  # the dead worker's lease holds until it expires
    time.sleep(2.1)
    [turn] = worker.run_once()

    assert turn.turn == 1 and "gate" in turn.report, turn.report  # on from the adapter stage through the gate
    candidate = Registry(tenant).get(turn.report["candidate"])
    assert candidate.metrics["steps"] == 6  # training resumed from the dead worker's checkpoint and finished
    assert [t.turn for t in list_turns(tenant)] == [1] and _actions(tenant, "snapshot.create") == 1
    assert len(Registry(tenant).list(kind="adapter")) == 1


def test_a_bad_worker_interval_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--interval", "0"])
    assert (
        exited.value.code == 2 and "argument --interval: 0: give seconds above 0" in capsys.readouterr().err
    )
