"""The loop's reward stage: DP-SGD when the tenant's loop policy sets reward_dp; the LoRA reward model when
the fast one is unfit to judge and no judge sits; no adapter trained for a gate bound to block it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.signals.test_snapshots import POLICY, _seed
from tuneloop.clock import now_utc
from tuneloop.config import Settings
from tuneloop.learn import job_config
from tuneloop.learn.privacy import DifferentialPrivacy
from tuneloop.loop import LoopPolicy
from tuneloop.loop.stages import TurnContext, _train_judge, reward
from tuneloop.loop.turns import DONE, Turn
from tuneloop.registry.versions import Registry
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.repository import Store, TenantStore, payload_hash


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


def _contradicted(tenant: TenantStore) -> None:
    """`_seed`'s pairs, and each held-out prompt's pair again the other way round: no judge orders all."""
    _seed(tenant)
    for i in (0, 3, 4, 9):
        iid = f"again{i}"
        tenant.log_interaction(
            {
                "id": iid,
                "user_id": f"u{i % 4}",
                "messages": [{"role": "user", "content": f"How do I close account number {i}?"}],
                "response": f"Other {i}",
                "choices": [f"Other {i}", f"Answer {i}"],
            },
            f"d{iid}",
        )
        event = {
            "id": f"p-{iid}",
            "interaction_id": iid,
            "kind": "preference",
            "value": {"chosen": 1, "rejected": 0},
        }
        tenant.add_feedback([({**event, "source": "user"}, payload_hash(event))])


UNFIT_FAST = "{min_agreement: 1.0, alpha: 0.99}"  # the contradicted pairs leave the fast judge unfit


def _unfit_fast_judge(tmp_path: Path, tiny_model: Path, suite: str = UNFIT_FAST) -> TurnContext:
    """A tenant with `_contradicted`'s feedback under a reward-model `suite` rule, and the loop's context."""
    settings = Settings(home=tmp_path / "home", model=str(tiny_model), train_engine="local")
    store = Store(settings.database_url)
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    _contradicted(tenant)
    policies = settings.home / "policies" / "acme"
    policies.mkdir(parents=True)
    (policies / "gate_policy.yaml").write_text(f"suites: {{reward_model: {suite}}}\n")
    return TurnContext(tenant, settings, LoopPolicy())


def _reward_turn(ctx: TurnContext, **report: object) -> Turn:
    snapshot = create_snapshot(ctx.tenant, ctx.settings.home, POLICY).hash
    return Turn(1, "manual", "reward", None, {"snapshot": snapshot, **report}, now_utc(), None)


def test_an_unfit_fast_reward_model_is_followed_by_the_lora_one(tmp_path: Path, tiny_model: Path) -> None:
    # A judge must order every held-out pair as the humans did: the contradicted pairs make that impossible.
    ctx = _unfit_fast_judge(tmp_path, tiny_model)

    judged = reward(ctx, _reward_turn(ctx)).report["reward_model"]

    assert (
        judged["first_try"]["method"] == "reward_embedding"
        and "surely below" in judged["first_try"]["verdict"]
    )
    assert judged["method"] == "reward"  # the LoRA reward model was trained and measured in turn
    kinds = {v.job_spec["kind"]: v.state for v in Registry(ctx.tenant).list()}
    assert kinds["reward_embedding"] == "blocked" and "reward" in kinds


@pytest.mark.parametrize(
    ("suite", "next_stage"),
    [(UNFIT_FAST, DONE), ("{min_agreement: 1.0, alpha: 0.99, required: false}", "adapter")],
)
def test_an_adapter_is_trained_only_when_a_judge_sits_or_the_gate_needs_none(
    tmp_path: Path, tiny_model: Path, suite: str, next_stage: str
) -> None:
    ctx = _unfit_fast_judge(tmp_path, tiny_model, suite)
    fast_only = TurnContext(ctx.tenant, ctx.settings, LoopPolicy(reward_method="reward_embedding"))

    step = reward(fast_only, _reward_turn(ctx))

    # With no judge, and a gate that requires one, an adapter trained now could only be blocked.
    assert step.report["reward_model"]["judge"] is None and step.stage == next_stage
    if next_stage == DONE:
        assert step.outcome == "skipped" and "no reward model is fit" in step.report["reason"]


def test_a_private_lora_reward_model_is_refused_when_the_policy_loads(tmp_path: Path) -> None:
    from tuneloop.config import load_policy_file
    from tuneloop.errors import BadRequest

    path = tmp_path / "loop_policy.yaml"
    path.write_text("reward_method: reward\nreward_dp: {epsilon: 2}\n")
    with pytest.raises(BadRequest, match="reward_embedding head only"):
        load_policy_file(path, LoopPolicy)


def test_feedback_too_thin_for_any_reward_model_ends_the_turn_skipped_not_failed(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Thumbs rate answers one at a time: a young tenant's snapshot can hold KTO labels and no pairs."""
    settings = Settings(home=tmp_path / "home", model=str(tiny_model))
    store = Store(settings.database_url)
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    for i in range(24):
        row = {"id": f"i{i}", "user_id": f"u{i % 6}", "response": f"Answer {i}", "choices": [f"Answer {i}"]}
        tenant.log_interaction({**row, "messages": [{"role": "user", "content": f"Question {i}?"}]}, f"d{i}")
        event = {"id": f"t{i}", "interaction_id": f"i{i}", "kind": "thumbs", "value": 1 if i % 2 else -1}
        tenant.add_feedback([({**event, "source": "user"}, payload_hash(event))])
    snapshot = create_snapshot(tenant, settings.home, POLICY).hash
    turn = Turn(1, "manual", "reward", None, {"snapshot": snapshot}, now_utc(), None)

    step = reward(TurnContext(tenant, settings, LoopPolicy()), turn)

    judged = step.report["reward_model"]
    assert "needs at least 5 pairs" in judged["skipped"] and judged["judge"] is None
    assert (step.stage, step.outcome) == (DONE, "skipped")


def test_the_light_stages_judge_leaves_the_lora_fallback_to_the_reward_stage(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The light stage tries the fast reward model only, so its trial starts minutes sooner; the reward
    stage, running beside the trial, trains the LoRA one the adapter's gate needs."""
    ctx = _unfit_fast_judge(tmp_path, tiny_model)
    turn = _reward_turn(ctx)

    light = _train_judge(ctx, turn.report["snapshot"], fall_back=False)

    assert light["method"] == "reward_embedding" and light["judge"] is None and light["fallback_due"]
    assert {v.job_spec["kind"] for v in Registry(ctx.tenant).list()} == {"reward_embedding"}
    step = reward(ctx, _reward_turn(ctx, light={"reward_model": light}))
    judged = step.report["reward_model"]
    assert judged["method"] == "reward" and judged["first_try"]["trained"] == light["trained"]
    assert "fallback_due" not in judged["first_try"] and step.stage == "adapter"


def test_a_lora_reward_model_that_cannot_train_leaves_the_turn_without_a_judge_not_failed(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant's long system prompt once had TRL's reward trainer drop every pair as too long, and the turn
    failed beside the light trial it had started."""
    ctx = _unfit_fast_judge(tmp_path, tiny_model)
    monkeypatch.setattr(job_config, "MIN_TRAIN_TOKENS", 8)  # every pair is longer
    monkeypatch.setattr(job_config, "MAX_TRAIN_TOKENS", 8)

    step = reward(ctx, _reward_turn(ctx))

    judged = step.report["reward_model"]
    assert "none of the" in judged["fallback_failed"] and "max_length 8" in judged["fallback_failed"]
    assert judged["judge"] is None and judged["method"] == "reward_embedding"
    assert (step.stage, step.outcome) == (DONE, "skipped") and "no reward model is fit" in step.report[
        "reason"
    ]
