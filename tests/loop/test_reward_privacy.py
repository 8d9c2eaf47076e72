"""The loop's reward stage trains the reward model by DP-SGD when the tenant's loop policy sets reward_dp."""

from __future__ import annotations

from pathlib import Path

from tests.signals.test_snapshots import POLICY, _seed
from tuneloop.clock import now_utc
from tuneloop.config import Settings
from tuneloop.learn.privacy import DifferentialPrivacy
from tuneloop.loop import LoopPolicy
from tuneloop.loop.stages import TurnContext, reward
from tuneloop.loop.turns import Turn
from tuneloop.registry.versions import Registry
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.repository import Store


def test_reward_stage_spends_the_policys_budget_and_records_it(tmp_path: Path, tiny_model: Path) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model))
    store = Store(settings.database_url)
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    _seed(tenant)
    snapshot = create_snapshot(tenant, settings.home, POLICY).hash
    policy = LoopPolicy(reward_dp=DifferentialPrivacy(epsilon=2.0, delta=1e-6))
    turn = Turn(1, "manual", "reward", None, {"snapshot": snapshot}, now_utc(), None)

    step = reward(TurnContext(tenant, settings, policy), turn)

    version = Registry(tenant).get(step.report["reward_model"]["trained"])
    assert 0 < version.metrics["privacy"]["epsilon"] <= 2.0 and version.metrics["privacy"]["delta"] == 1e-6
    assert version.job_spec["trainer_args"]["dp"]["epsilon"] == 2.0
