"""The loop: per tenant, snapshot → reward model → adapter → gate → canary → decision, recorded, resumable.

The end-to-end test runs a short loop over real HTTP on the tiny random-weight model. That model cannot learn
language, so its simulated users want something a LoRA learns in a few steps: answers that open with "Sure.".
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from tests.live import live_server
from tests.monitor.seed import cooking_prompt, stream
from tests.retrieve.world import store_logs, world
from tuneloop import Settings
from tuneloop.clock import now_utc
from tuneloop.config import tenant_policy
from tuneloop.dashboard.views import audit_rows
from tuneloop.errors import BadRequest
from tuneloop.loop import Loop, LoopPolicy
from tuneloop.loop.stages import TurnContext, snapshot
from tuneloop.loop.turns import Turn, advance_turn, list_turns, start_turn
from tuneloop.monitor.alerts import latest_check, list_alerts, pending_alerts, raise_alerts
from tuneloop.monitor.drift import DriftReport, DriftTest
from tuneloop.registry.composition import compose
from tuneloop.registry.versions import Registry
from tuneloop.rollout.controller import finish, start_canary
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy
from tuneloop.sim import Behaviour, Scenario, Topic, answers, run_traffic, satisfaction
from tuneloop.store.repository import Store

WANTED = "Sure."
CANARY = "CANARY-ACME-7Q2XZ9"


def _opens_with_sure(prompt, answer: str) -> float:
    return 0.9 if answer.lstrip().startswith(WANTED) else 0.1


ASKS = Topic(
    "asks",
    (
        "Can you help me {verb} my {thing}?",
        "Please {verb} my {thing}.",
        "Could you {verb} the {thing} for me?",
    ),
    WANTED,
    {
        "verb": ("check", "fix", "update", "review", "clean", "sort"),
        "thing": ("invoice", "calendar", "report", "inbox", "notes", "budget", "slides", "order"),
    },
)
SURE = Scenario(
    name="sure",
    system_prompt="You are a helpful assistant.",
    topics=(ASKS,),
    preference=_opens_with_sure,
    followups=("Can you try again?",),
    behaviour=Behaviour(explicit=0.6, edit=0.5, users=200),
    max_tokens=8,
)

# What the tenant would write for a laptop-sized test: small minimums, a half-and-half canary, a fast and
# strong training run, the gate suites a random-weight model can meaningfully run, and the adapter's path
# alone (tests/loop/test_light.py covers light candidates).
POLICIES = {
    "light_policy.yaml": {"enabled": False},
    "loop_policy.yaml": {
        "min_rows": 8,
        "trainer_args": {"learning_rate": 1e-2, "num_train_epochs": 4, "max_length": 64},
    },
    "reward_policy.yaml": {"heldout_fraction": 0.25},
    "rollout_policy.yaml": {"ramp": [0.5], "min_samples": 15, "min_samples_per_step": 10_000, "tau2": 0.25},
    "gate_policy.yaml": {
        "suites": {
            "human_preferences": {"min_pairs": 3},
            "reward_model": {"required": False, "min_agreement": 0.0},
            "golden": {"required": False},
            "drift": {"required": False},
            "pii_leak": {"canaries": [CANARY]},
        }
    },
}


def _write_policies(home: Path, tenant: str, policies: dict[str, dict]) -> None:
    folder = home / "policies" / tenant
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in policies.items():
        (folder / name).write_text(yaml.safe_dump(body))


def _served_version(url: str, key: str, expected: str) -> str:
    """The version production traffic gets: `expected` once the server's routing cache (about a second)
    has caught up, else whatever it still serves after ten seconds."""
    deadline = time.monotonic() + 10
    while True:
        served = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"messages": [{"role": "user", "content": "Can you fix my notes?"}], "max_tokens": 4},
        )
        version = served.headers["x-tuneloop-version"]
        if version == expected or time.monotonic() > deadline:
            return version
        time.sleep(0.5)


def test_a_short_loop_over_real_http_promotes_and_records_the_promotion(
    tiny_model: Path, tmp_path: Path
) -> None:
    # Trains in this process, as a child costs seconds of imports: tests/learn covers the default engine.
    settings = Settings(home=tmp_path / "home", model=str(tiny_model), max_batch_size=8, train_engine="local")
    store = Store(settings.database_url)
    tenant_row, key = store.create_tenant("acme", redaction="off")
    _, other_key = store.create_tenant("other", redaction="off")
    _write_policies(settings.home, "acme", POLICIES)
    tenant = store.for_tenant(tenant_row)
    said: list[str] = []
    loop = Loop(tenant, settings, say=said.append)
    try:
        with live_server(settings) as url:
            before = satisfaction(url, key, SURE, SURE.eval_prompts(12))
            other_before = answers(url, other_key, SURE, SURE.eval_prompts(12))
            run_traffic(url, key, SURE, 60, seed=1)
            turn = loop.tick(force=True)
            assert turn is not None and turn.stage == "canary", turn
            # Training beside live traffic runs for minutes: its progress is told a quarter at a time.
            steps = [re.fullmatch(r"turn 1: (dpo|kto) step (\d+)/(\d+).*", line) for line in said]
            told = [(int(m[2]), int(m[3])) for m in steps if m]
            assert 1 < len(told) <= 5 and told[-1][0] == told[-1][1], said
            for burst in range(8):
                run_traffic(url, key, SURE, 40, seed=100 + burst)
                turn = loop.tick()
                if turn.stage == "done":
                    break
            assert turn.outcome == "promoted", turn.report
            candidate = turn.report["candidate"]
            production = Registry(tenant).production()
            assert production is not None and production.id == candidate
            assert satisfaction(url, key, SURE, SURE.eval_prompts(12), model=candidate) > before
            assert _served_version(url, key, candidate) == candidate
            # Another tenant on the same server is untouched: same version, the same answers.
            assert _served_version(url, other_key, "base") == "base"
            assert answers(url, other_key, SURE, SURE.eval_prompts(12)) == other_before
            # The next turn continues from the promoted adapter, in smaller steps.
            run_traffic(url, key, SURE, 20, seed=200)
            second = loop.tick(force=True)
            spec = Registry(tenant).get(second.report["candidate"]).job_spec
            assert spec["init_adapter"] == production.artifact_path
            assert spec["trainer_args"]["learning_rate"] == LoopPolicy().warm_start_learning_rate
        actions = [(a["action"], a["subject"]) for a in audit_rows(tenant)]
        assert ("loop.turn", "1") in actions and ("loop.turn_end", "1") in actions
        assert any(action == "version.production" and subject == candidate for action, subject in actions)
        assert Loop(tenant, settings).turns()[0].report["gate"]["decision"] == "gated"
    finally:
        store.close()


def _tenant(store: Store, name: str = "acme"):
    tenant_row, _ = store.create_tenant(name, redaction="off")
    return store.for_tenant(tenant_row)


def _thumbs(tenant, count: int, seed: int = 0) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    stream(tenant, start=start, hours=0.5, count=count, prompt=cooking_prompt, seed=seed)


def test_no_turn_starts_before_enough_new_feedback(store: Store, tmp_path: Path) -> None:
    tenant = _tenant(store)
    loop = Loop(tenant, Settings(home=tmp_path), LoopPolicy(min_new_events=5, on_alerts=False))
    _thumbs(tenant, 4)
    assert loop.trigger() is None and loop.tick() is None and loop.turns() == []
    _thumbs(tenant, 1, seed=1)
    assert loop.trigger() == "feedback:5"


def test_a_turn_without_enough_training_rows_is_skipped_and_recorded(store: Store, tmp_path: Path) -> None:
    tenant = _tenant(store)
    loop = Loop(tenant, Settings(home=tmp_path), LoopPolicy(min_new_events=5, min_rows=16, on_alerts=False))
    _thumbs(tenant, 6)
    turn = loop.tick()
    assert turn is not None and turn.trigger == "feedback:6"
    assert (turn.stage, turn.outcome) == ("done", "skipped")
    assert "< min_rows 16" in turn.report["reason"] and turn.report["snapshot"]
    actions = {a["action"] for a in audit_rows(tenant)}
    assert {"loop.turn", "loop.turn_end", "snapshot.create"} <= actions
    assert loop.trigger() is None  # the feedback that started a turn does not start another


def test_answers_rated_but_never_compared_train_kto_and_pairs_train_dpo(store: Store, tmp_path: Path) -> None:
    tenant = _tenant(store)
    ctx = TurnContext(tenant, Settings(home=tmp_path), LoopPolicy(min_rows=16))
    start = datetime.now(UTC) - timedelta(hours=1)
    # One answer text for every prompt: thumbs rate answers but give no two answers of one prompt to compare.
    stream(tenant, start=start, hours=0.5, count=40, prompt=cooking_prompt, response_words=1, positive=0.5)

    turn = Turn(1, "manual", "snapshot", None, {}, start, None)
    rated = snapshot(ctx, turn)
    dpo_only = snapshot(replace(ctx, policy=LoopPolicy(min_rows=16, adapter_method="dpo")), turn)

    assert rated.report["counts"]["pairs_train"] < 16 <= rated.report["counts"]["kto_train"]
    assert (rated.stage, rated.report["method"]) == ("reward", "kto")
    assert dpo_only.outcome == "skipped" and "DPO rows < min_rows 16" in dpo_only.report["reason"]
    stream(tenant, start=start, hours=0.5, count=80, prompt=cooking_prompt, seed=1)  # answers of many lengths
    assert snapshot(ctx, turn).report["method"] == "dpo"


def _tried_adapter(tenant, snapshot_hash: str, reason: str) -> str:
    """A trained adapter on `snapshot_hash` whose canary against the base model ended with `reason`, composed
    on its raw adapter as a turn composes one with a light trial's winning parts."""
    registry = Registry(tenant)
    raw = registry.register(
        kind="adapter",
        base_model="base",
        actor="test",
        artifact_path="adapters/tried",
        snapshot_hash=snapshot_hash,
    )
    registry.move(raw.id, "blocked", actor="test", reason="not gated itself")
    version = compose(
        registry, parent=raw, base_model="base", actor="test", reason="setup", system_prompt="Be brief."
    )
    registry.move(version.id, "gated", actor="test", reason="setup")
    start_canary(tenant, version.id, RolloutPolicy(ramp=[0.5]), reward_policy=RewardPolicy(), actor="test")
    finish(tenant, "rolled_back", actor="loop", reason=reason)
    return version.id


def test_after_an_adapter_showed_no_lift_the_next_trains_once_the_feedback_has_doubled(
    store: Store, tmp_path: Path
) -> None:
    tenant = _tenant(store)
    ctx = TurnContext(tenant, Settings(home=tmp_path), LoopPolicy(min_rows=16))
    start = now_utc() - timedelta(hours=1)
    stream(tenant, start=start, hours=0.5, count=80, prompt=cooking_prompt, seed=1)
    turn = Turn(1, "manual", "snapshot", None, {}, start, None)
    first = snapshot(ctx, turn)
    assert first.stage == "reward"
    tried = _tried_adapter(tenant, first.report["snapshot"], "futile, cannot reach the design effect +0.5: …")

    held = snapshot(ctx, turn)
    assert held.outcome == "skipped" and tried in held.report["reason"], held.report
    assert "once 80 more have come in since (0 so far)" in held.report["reason"]
    stream(tenant, start=start, hours=0.5, count=79, prompt=cooking_prompt, seed=2)
    assert snapshot(ctx, turn).outcome == "skipped"  # 79 of 80
    stream(tenant, start=start, hours=0.5, count=1, prompt=cooking_prompt, seed=3)
    assert snapshot(ctx, turn).stage == "reward"


def test_an_adapter_rolled_back_for_doing_worse_holds_no_adapter_back(store: Store, tmp_path: Path) -> None:
    tenant = _tenant(store)
    ctx = TurnContext(tenant, Settings(home=tmp_path), LoopPolicy(min_rows=16))
    start = now_utc() - timedelta(hours=1)
    stream(tenant, start=start, hours=0.5, count=80, prompt=cooking_prompt, seed=1)
    turn = Turn(1, "manual", "snapshot", None, {}, start, None)
    _tried_adapter(tenant, snapshot(ctx, turn).report["snapshot"], "treatment worse: [-0.4, -0.1]")
    assert snapshot(ctx, turn).stage == "reward"


def test_source_feedback_alone_puts_a_retrained_reranker_on_canary_in_a_turn(
    store: Store, tmp_path: Path
) -> None:
    tenant = _tenant(store)
    _, logs = world(seed=5, sessions=600)
    store_logs(tenant, logs)
    loop = Loop(tenant, Settings(home=tmp_path), LoopPolicy(on_alerts=False))

    turn = loop.tick()

    assert turn is not None and turn.trigger.startswith("feedback:")
    reranker = turn.report["reranker"]
    assert reranker["state"] == Registry(tenant).get(reranker["version"]).state == "canary", reranker
    # No answer feedback: nothing for an adapter to learn, and the turn says so.
    assert turn.outcome == "skipped" and turn.report["light"]["skipped"].startswith("nothing new to try")


@pytest.mark.parametrize(("min_new_events", "trained"), [(200, 1), (10**6, 0)])
def test_the_reranker_learns_while_a_turn_waits_once_enough_source_feedback_came(
    store: Store, tmp_path: Path, min_new_events: int, trained: int
) -> None:
    """A turn waits for minutes to hours (an approval, an adapter's canary); re-rankers train in seconds."""
    tenant = _tenant(store)
    registry = Registry(tenant)
    candidate = registry.register(kind="adapter", base_model="base", actor="test")
    registry.move(candidate.id, "gated", actor="test", reason="setup")
    registry.move(candidate.id, "pending_approval", actor="test", reason="setup")
    report = {"candidate": candidate.id, "approval": {"requested_at": now_utc().isoformat()}}
    advance_turn(tenant, start_turn(tenant, "manual", "approval"), "approval", report)
    _, logs = world(seed=5, sessions=600)
    store_logs(tenant, logs)
    loop = Loop(tenant, Settings(home=tmp_path), LoopPolicy(min_new_events=min_new_events, on_alerts=False))

    assert loop.tick().stage == loop.tick().stage == "approval"

    # One candidate at a time: the second look finds the first on its interleaved canary.
    assert [v.state for v in registry.list("reranker")] == ["canary"] * trained


def test_a_failing_reranker_is_recorded_and_the_turn_goes_on(store: Store, tmp_path: Path) -> None:
    tenant = _tenant(store)
    _, logs = world(seed=5, sessions=600)
    store_logs(tenant, logs)
    (tmp_path / "rerankers").write_text("a file where the re-rankers' folder should be")

    turn = Loop(tenant, Settings(home=tmp_path), LoopPolicy(on_alerts=False)).tick()

    assert turn is not None and turn.outcome == "skipped"
    assert turn.report["reranker"]["failed"].startswith(("FileExistsError", "NotADirectoryError"))


def test_a_restarted_controller_resumes_the_open_turn_one_turn_at_a_time(
    store: Store, tmp_path: Path
) -> None:
    tenant = _tenant(store)
    _thumbs(tenant, 3)
    policy = LoopPolicy(min_rows=16, on_alerts=False)
    opened = Loop(tenant, Settings(home=tmp_path), policy).start("manual")
    restarted = Loop(tenant, Settings(home=tmp_path), policy)  # a new process after a crash
    assert restarted.start("manual") == opened  # an open turn is returned, never a second one
    turn = restarted.tick()
    assert (turn.turn, turn.stage, turn.outcome) == (1, "done", "skipped")
    assert [t.turn for t in restarted.turns()] == [1]


def test_a_failing_stage_ends_the_turn_as_failed_and_the_next_turn_can_start(
    store: Store, tmp_path: Path
) -> None:
    tenant = _tenant(store)
    _thumbs(tenant, 3)
    settings = Settings(home=tmp_path)
    start_turn(tenant, "manual", "snapshot")  # begun before the policy file broke
    _write_policies(tmp_path, "acme", {"reward_policy.yaml": {"heldout_fraction": 7}})
    loop = Loop(tenant, settings, LoopPolicy(on_alerts=False))
    turn = loop.tick(force=True)
    assert turn.outcome == "failed" and "reward policy" in turn.report["error"]
    (tmp_path / "policies" / "acme" / "reward_policy.yaml").unlink()
    assert loop.tick(force=True).turn == 2


@pytest.mark.parametrize(
    ("policies", "named"),
    [
        ({"loop_policy.yaml": {"trainer_args": {"learning_rat": 1e-4}}}, "loop_policy.yaml"),
        ({"light_policy.yaml": {"enabeld": True}}, "light_policy.yaml"),
        ({"rollout_policy.yaml": {"alpha": "small"}}, "rollout_policy.yaml"),
    ],
)
def test_a_policy_typo_is_refused_before_a_turn_starts_not_found_in_the_middle_of_one(
    store: Store, tmp_path: Path, policies: dict, named: str
) -> None:
    tenant = _tenant(store)
    _thumbs(tenant, 3)
    _write_policies(tmp_path, "acme", policies)
    settings = Settings(home=tmp_path)
    loop = Loop(tenant, settings, tenant_policy(tmp_path, "acme", LoopPolicy))
    with pytest.raises(BadRequest, match=named):
        loop.tick(force=True)
    assert loop.open_turn() is None and list_turns(tenant) == []


def _drift_alert(tenant) -> None:
    """An open input-drift alert, as a check that found drift would raise it."""
    now = now_utc()
    test = DriftTest("input_drift", "test", 0.9, 0.55, None, True, 40, 40, "prompts: shifted")
    raise_alerts(
        tenant, DriftReport((now - timedelta(days=8), now - timedelta(days=1)), (now, now), [test], {})
    )


def test_an_open_alert_starts_one_turn_and_is_resolved_by_it(store: Store, tmp_path: Path) -> None:
    tenant = _tenant(store)
    loop = Loop(tenant, Settings(home=tmp_path), LoopPolicy(min_rows=16))
    _drift_alert(tenant)
    _thumbs(tenant, 3)

    turn = loop.tick()

    assert turn is not None and turn.trigger == "alert:input_drift"
    assert pending_alerts(tenant) == []
    [alert] = list_alerts(tenant)
    assert alert.status == "resolved" and alert.handled_by == "loop"
    _thumbs(tenant, 2, seed=1)
    assert loop.tick() is None  # the same alert never starts a second turn


def test_alert_started_turns_are_rate_limited(store: Store, tmp_path: Path) -> None:
    tenant = _tenant(store)
    _drift_alert(tenant)
    _thumbs(tenant, 3)
    assert Loop(tenant, Settings(home=tmp_path), LoopPolicy(min_rows=16)).tick().turn == 1

    _drift_alert(tenant)  # the drift outlasts the turn: the next check reopens it
    _thumbs(tenant, 2, seed=1)

    assert Loop(tenant, Settings(home=tmp_path), LoopPolicy(min_rows=16)).tick() is None
    assert len(pending_alerts(tenant)) == 1  # still open, waiting out the cooldown
    no_cooldown = LoopPolicy(min_rows=16, alert_cooldown_hours=0)
    assert Loop(tenant, Settings(home=tmp_path), no_cooldown).tick().turn == 2


def test_an_alert_resolves_when_its_check_comes_back_clean(store: Store, tmp_path: Path) -> None:
    tenant = _tenant(store)
    _drift_alert(tenant)
    now = now_utc()
    stream(tenant, start=now - timedelta(days=8) + timedelta(hours=1), hours=24 * 7 - 2, count=40,
           prompt=cooking_prompt, version="v1", seed=1)  # fmt: skip
    stream(tenant, start=now - timedelta(hours=23), hours=22, count=40, prompt=cooking_prompt, version="v1",
           seed=2)  # fmt: skip

    Loop(tenant, Settings(home=tmp_path), LoopPolicy(min_new_events=10_000)).tick()

    [alert] = list_alerts(tenant)
    assert alert.status == "resolved" and latest_check(tenant) is not None


def test_a_new_tenants_first_turn_reaches_the_canary_with_no_policy_file(
    tiny_model: Path, tmp_path: Path
) -> None:
    # The shipped policies; the engine is `local` as above.
    settings = Settings(home=tmp_path / "home", model=str(tiny_model), max_batch_size=8, train_engine="local")
    store = Store(settings.database_url)
    tenant_row, key = store.create_tenant("fresh", redaction="off")
    tenant = store.for_tenant(tenant_row)
    try:
        with live_server(settings) as url:
            run_traffic(url, key, SURE, 120, seed=3)
            loop = Loop(tenant, settings)
            turn = loop.tick(force=True)
            # Light candidates first: gated and on a trial, while the adapter trained beside it.
            assert turn is not None and turn.stage == "light_trial", turn.report["light"]
            light = turn.report["light"]
            assert Registry(tenant).get(light["reward_model"]["judge"]).state == "production"
            assert any(c.get("decision") == "gated" for c in light["candidates"]), light["candidates"]
            finish(tenant, "rolled_back", actor="test", reason="the trial ends without a winner")
            turn = loop.tick()
        assert not (settings.home / "policies" / "fresh" / "loop_policy.yaml").exists()
        assert turn is not None and turn.stage == "canary", turn.report
        gate = turn.report["gate"]
        assert gate["decision"] == "gated", gate["reasons"]
    finally:
        store.close()


def test_a_canary_started_by_hand_is_looked_at_by_the_loop_and_no_turn_starts_beside_it(
    store: Store, tmp_path: Path
) -> None:
    """Only a turn's canary stage looked at experiments: one from `tuneloop rollout start` was never decided,
    and the loop started a turn beside it whose candidate could never go on a canary."""
    from tests.rollout.canary_traffic import gated_version
    from tuneloop.rollout.controller import start_canary
    from tuneloop.rollout.experiments import get_experiment
    from tuneloop.rollout.policy import RolloutPolicy
    from tuneloop.signals.policy import RewardPolicy

    tenant = _tenant(store)
    exp = start_canary(
        tenant, gated_version(tenant), RolloutPolicy(), reward_policy=RewardPolicy(), actor="test"
    )
    _thumbs(tenant, 5)
    loop = Loop(tenant, Settings(home=tmp_path), LoopPolicy(min_new_events=5, on_alerts=False))

    assert loop.tick() is None and loop.tick(force=True) is None and loop.turns() == []
    assert get_experiment(tenant, exp.id).decision["action"] == "continue"  # looked at, undecided
    assert exp.id in loop.idle_reason()
