"""A new reward model takes the judge's seat by the gate's own rule, from the loop or `train reward` alike."""

from __future__ import annotations

from pathlib import Path

from tests.evaluate.conftest import GateSetup, promote
from tuneloop.config import Settings
from tuneloop.evaluate.judge import appoint_judge
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.jobs import run_job
from tuneloop.privacy.lineage import withdraw
from tuneloop.privacy.policy import PrivacyPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot


def _reward_model(setup: GateSetup, out: Path, *, flipped: bool = False):
    rows = setup.snapshot.rows("pairs", split="train")
    if flipped:  # preferences read backwards: it disagrees with the held-out humans
        rows = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    job = run_job(JobSpec(kind="reward_embedding", base_model=str(setup.base), output_dir=out), rows)
    return setup.registry.register(
        kind="reward_model",
        base_model=str(setup.base),
        actor="learn",
        artifact_path=str(job.artifact_dir),
        snapshot_hash=setup.snapshot.hash,
    )


def _any_reward_model_fit(gate_setup: GateSetup) -> Settings:
    """The gate's settings, with a tenant policy under which any reward model is fit to judge."""
    policy = gate_setup.home / "policies" / "acme" / "gate_policy.yaml"
    policy.write_text("suites: {reward_model: {min_agreement: 0.0}}\n")
    return Settings(home=gate_setup.home, model=str(gate_setup.base))


def test_a_reward_model_that_agrees_with_the_humans_becomes_the_judge(
    gate_setup: GateSetup, tmp_path: Path
) -> None:
    settings = Settings(home=gate_setup.home, model=str(gate_setup.base))
    new = _reward_model(gate_setup, tmp_path)

    verdict = appoint_judge(gate_setup.tenant, settings, new, actor="cli")

    assert verdict["judge"] == new.id and "held-out human pairs" in verdict["measured_on"]
    # The hand-over says what the sitting judge scored on the same pairs, not only the newcomer's agreement.
    assert f"and judge {gate_setup.reward_model.id} does not order surely more" in verdict["verdict"]
    assert gate_setup.registry.get(gate_setup.reward_model.id).state == "retired"


def test_a_reward_model_that_disagrees_is_blocked_and_the_judge_stays(
    gate_setup: GateSetup, tmp_path: Path
) -> None:
    settings = Settings(home=gate_setup.home, model=str(gate_setup.base))
    new = _reward_model(gate_setup, tmp_path, flipped=True)

    verdict = appoint_judge(gate_setup.tenant, settings, new, actor="loop")

    assert verdict["judge"] == gate_setup.reward_model.id and "surely below" in verdict["verdict"]
    assert f"judge {gate_setup.reward_model.id} keeps its seat: it agrees with" in verdict["verdict"]
    assert gate_setup.registry.get(new.id).state == "blocked"


def test_a_drifted_judge_steps_down_when_its_successor_is_unfit_too(
    gate_setup: GateSetup, tmp_path: Path
) -> None:
    """It kept its seat, and the gate then blocked the adapter the turn had trained for 8 minutes."""
    settings = Settings(home=gate_setup.home, model=str(gate_setup.base))
    gate_setup.registry.move(gate_setup.reward_model.id, "retired", actor="test", reason="setup")
    drifted = _reward_model(gate_setup, tmp_path / "drifted", flipped=True)
    promote(gate_setup.registry, drifted)
    new = _reward_model(gate_setup, tmp_path / "new", flipped=True)

    verdict = appoint_judge(gate_setup.tenant, settings, new, actor="loop")

    assert (
        verdict["judge"] is None and f"judge {drifted.id} steps down, as it agrees with" in verdict["verdict"]
    )
    assert gate_setup.registry.get(drifted.id).state == "retired"
    assert gate_setup.registry.get(new.id).state == "blocked"


def test_a_fit_reward_model_that_orders_fewer_pairs_right_does_not_unseat_the_judge(
    gate_setup: GateSetup, tmp_path: Path
) -> None:
    settings = _any_reward_model_fit(gate_setup)
    new = _reward_model(gate_setup, tmp_path, flipped=True)

    verdict = appoint_judge(gate_setup.tenant, settings, new, actor="loop")

    assert verdict["judge"] == gate_setup.reward_model.id
    assert f"but judge {gate_setup.reward_model.id} orders" in verdict["verdict"]
    assert gate_setup.registry.get(new.id).state == "blocked"


def test_a_sitting_judge_keeps_its_seat_only_when_surely_better_on_the_same_pairs() -> None:
    from tuneloop.evaluate.judge import surely_better_p
    from tuneloop.evaluate.policy import RewardModelConfig

    alpha = RewardModelConfig().alpha
    # One more of a dozen pairs right (10 against 9): noise, so the newer judge takes the seat.
    assert surely_better_p([True] * 10 + [False] * 2, [True] * 9 + [False] * 3) >= alpha
    # Four pairs only the sitting judge orders right and none the other way: it keeps the seat.
    assert surely_better_p([True] * 11 + [False], [True] * 7 + [False] * 5) < alpha
    # As many right, on other pairs: no evidence either way.
    assert surely_better_p([True, False] * 6, [False, True] * 6) > 0.5


def _right(agreed: int, pairs: int) -> list[bool]:
    return [True] * agreed + [False] * (pairs - agreed)


def test_a_judge_is_unfit_only_when_its_agreement_is_surely_below_the_bar() -> None:
    from tuneloop.evaluate.policy import RewardModelConfig

    rule = RewardModelConfig()  # min_agreement 0.6, alpha 0.2
    assert rule.fit_to_judge(_right(6, 12), "12 pairs")[0]  # a dozen pairs cannot tell 50 % from 60 %
    assert not rule.fit_to_judge(_right(3, 12), "12 pairs")[0]
    assert not rule.fit_to_judge(_right(55, 100), "100 pairs")[0]  # a hundred can
    assert rule.fit_to_judge(_right(58, 100), "100 pairs")[0]
    assert not rule.fit_to_judge([], "no pairs")[0]  # no evidence is no seat


def test_pairs_of_one_prompt_count_as_fewer_independent_ones() -> None:
    from tuneloop.evaluate.policy import RewardModelConfig

    rule = RewardModelConfig()
    # 55 of 100 pairs right is surely below 60 % when each pair is its own prompt ...
    right = [True] * 55 + [False] * 45
    assert not rule.fit_to_judge(right, "100 pairs", [f"p{i}" for i in range(100)])[0]
    # ... but not when they are ten prompts' pairs, each ordered all right or all wrong.
    ten = [f"p{i // 10}" for i in range(100)]
    right = [i // 10 < 5 or i % 10 < 1 for i in range(100)]  # 5 prompts right, one pair of each other
    fit, why = rule.fit_to_judge(right, "100 pairs", ten)
    assert fit and "worth" in why


def test_a_judge_at_the_bar_on_clustered_pairs_is_declared_unfit_at_most_alpha_of_the_time() -> None:
    """A/A for the judge's check: a judge that orders each prompt's pairs right at exactly the bar (60 %),
    with prompts of 1-12 pairs that go all right or all wrong together."""
    import random

    from tuneloop.evaluate.policy import RewardModelConfig

    rule, rng, runs = RewardModelConfig(), random.Random(7), 2000
    unfit = naive = 0
    for _ in range(runs):
        sizes = [rng.randint(1, 12) for _ in range(rng.randint(6, 20))]
        prompts = [f"p{c}" for c, size in enumerate(sizes) for _ in range(size)]
        verdict = {p: rng.random() < rule.min_agreement for p in set(prompts)}
        right = [verdict[p] for p in prompts]
        unfit += not rule.fit_to_judge(right, "pairs", prompts)[0]
        naive += not rule.fit_to_judge(right, "pairs")[0]
    assert naive / runs > 1.5 * rule.alpha  # counted as independent, a fit judge is retired far too often
    assert unfit / runs <= rule.alpha + 0.02


def test_a_judge_trained_on_erased_data_gives_its_seat_to_any_fit_successor(
    gate_setup: GateSetup, tmp_path: Path
) -> None:
    settings = _any_reward_model_fit(gate_setup)
    withdraw(gate_setup.tenant, [gate_setup.reward_model], PrivacyPolicy(), request="r-1", actor="test")
    new = _reward_model(gate_setup, tmp_path, flipped=True)  # orders fewer pairs right than the old one

    verdict = appoint_judge(gate_setup.tenant, settings, new, actor="loop")

    assert verdict["judge"] == new.id


def test_a_sitting_judge_is_not_scored_on_the_pairs_it_trained_on(
    gate_setup: GateSetup, tmp_path: Path
) -> None:
    settings = _any_reward_model_fit(gate_setup)
    # The sitting judge's snapshot held every prompt in training, the held-out ones of the new judge's too
    # (as when a held-out cluster grows with new paraphrases): scored on those, it would look surely better.
    everything = RewardPolicy(
        near_duplicate_threshold=1.0, heldout_fraction=0.0, min_heldout_pairs=0, min_heldout_prompts=0
    )
    older = create_snapshot(gate_setup.tenant, gate_setup.home, everything)
    assert older.rows("pairs", split="heldout") == []
    job = run_job(
        JobSpec(kind="reward_embedding", base_model=str(gate_setup.base), output_dir=tmp_path / "old"),
        older.rows("pairs", split="train"),
    )
    sitting = gate_setup.registry.register(
        kind="reward_model",
        base_model=str(gate_setup.base),
        actor="learn",
        artifact_path=str(job.artifact_dir),
        snapshot_hash=older.hash,
    )
    promote(gate_setup.registry, sitting)
    new = _reward_model(gate_setup, tmp_path / "new", flipped=True)

    verdict = appoint_judge(gate_setup.tenant, settings, new, actor="loop")

    assert verdict["judge"] == new.id, verdict  # no pair left that the sitting judge had not seen
