"""Light candidates: a turn first composes decoding, example and prompt candidates from production, gates
them and puts the gated ones on one multi-arm experiment; on by default, when the feedback calls for any."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.monitor.seed import cooking_prompt, give, log
from tuneloop import Settings
from tuneloop.clock import now_utc
from tuneloop.learn.light_changes import BRIEF
from tuneloop.loop import Loop, LoopPolicy, stages
from tuneloop.loop import light as light_candidates
from tuneloop.loop.light import (
    CUT_SHORT,
    MIN_EXAMPLES,
    Feedback,
    LightPolicy,
    compose_candidates,
    on_production,
    ranked_sources,
)
from tuneloop.loop.stages import TurnContext, watching_trial
from tuneloop.loop.turns import advance_turn
from tuneloop.registry.composition import Decoding, ExamplePolicy, compose
from tuneloop.registry.versions import Registry, Version
from tuneloop.rollout.arms import start_arms
from tuneloop.rollout.controller import finish
from tuneloop.rollout.experiments import Experiment, active_experiment, get_experiment
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.rollout.sequential import FUTILE
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import experiments

SNAPSHOT = "f" * 64
LONG = "Thank you for reaching out! There are several ways to reset a password, and we will go through all. "


@pytest.fixture
def tenant(tuneloop_home: Path, tiny_model: Path) -> tuple[TenantStore, Settings, str]:
    """A tenant serving a composed production (the base model with a prompt and a temperature)."""
    settings = Settings(model=str(tiny_model))
    store = Store(settings.database_url)
    tenant = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    registry = Registry(tenant)
    production = compose(
        registry,
        parent=None,
        base_model=str(tiny_model),
        actor="test",
        reason="setup",
        system_prompt="You are the support desk.",
        decoding=Decoding(temperature=0.8),
    )
    registry.move(production.id, "gated", actor="test", reason="setup")
    registry.move(production.id, "production", actor="test", reason="setup")
    yield tenant, settings, production.id
    store.close()


def _policy(settings: Settings, name: str, data: dict) -> None:
    path = settings.home / "policies" / "acme" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def test_light_candidates_come_from_production_with_their_reasons_as_lineage(tenant: tuple) -> None:
    tenant, settings, production = tenant
    policy = LightPolicy(enabled=True, prompt_variants=["Answer in one line."], max_candidates=4)
    pairs = [_edit_pair(f"How do I reset password number {i}?") for i in range(12)]
    composed = compose_candidates(tenant, settings, SNAPSHOT, Feedback(pairs, [], MIN_EXAMPLES), policy)

    reasons = [c["reason"] for c in composed]
    assert reasons[0].startswith("in-context examples + users chose answers") and "shorter" in reasons[0]
    assert reasons[1:] == ["operator prompt variant 1"]
    registry = Registry(tenant)
    together, prompt = (registry.get(c["version"]) for c in composed)
    assert all(v.parent_id == production and v.state == "candidate" for v in (together, prompt))
    # What the feedback calls for goes on as one candidate: examples and the brevity instruction.
    assert together.decoding == {"temperature": 0.8, "examples": ExamplePolicy().model_dump()}
    assert together.system_prompt == f"{BRIEF.format(words=10)}\n\nYou are the support desk."
    assert prompt.system_prompt == "Answer in one line." and prompt.decoding == {"temperature": 0.8}
    # Each is held out on the snapshot it came from: production, a composed base model, has none of its own.
    assert {v.snapshot_hash for v in (together, prompt)} == {SNAPSHOT}
    # Too few answers to show: an examples candidate would be production under another name.
    fewer = compose_candidates(tenant, settings, SNAPSHOT, Feedback(pairs, [], MIN_EXAMPLES - 1), policy)
    assert [c["reason"] for c in fewer][1:] == ["operator prompt variant 1"]
    assert "shorter" in fewer[0]["reason"] and "examples" not in fewer[0]["reason"]


def test_a_bundle_users_turned_down_is_split_and_a_change_they_turned_down_is_not_tried_again(
    tenant: tuple,
) -> None:
    tenant, settings, production = tenant
    policy = LightPolicy(prompt_variants=["Answer in one line."])
    pairs = [_edit_pair(f"How do I reset password number {i}?") for i in range(12)]
    registry = Registry(tenant)

    def turned_down(candidate: str) -> None:
        registry.move(candidate, "gated", actor="test", reason="setup")
        start_arms(tenant, [candidate], RolloutPolicy(), reward_policy=RewardPolicy(), actor="test")
        finish(tenant, "rolled_back", actor="test", reason="users preferred production")

    first = compose_candidates(tenant, settings, SNAPSHOT, Feedback(pairs, [], MIN_EXAMPLES), policy)
    turned_down(first[0]["version"])
    split = compose_candidates(tenant, settings, SNAPSHOT, Feedback(pairs, [], MIN_EXAMPLES), policy)
    turned_down(split[0]["version"])
    again = compose_candidates(tenant, settings, SNAPSHOT, Feedback(pairs, [], MIN_EXAMPLES), policy)

    assert first[0]["reason"].startswith("in-context examples + ")
    assert split[0]["reason"] == "in-context examples"
    assert [c["reason"] for c in split[1:]] == [c["reason"] for c in again]
    assert "shorter" in again[0]["reason"] and again[1]["reason"] == "operator prompt variant 1"
    # On a new production the same changes are other candidates, and tried again together.
    registry.move(_gated(tenant, production, "New.").id, "production", actor="test", reason="setup")
    later = compose_candidates(tenant, settings, SNAPSHOT, Feedback(pairs, [], MIN_EXAMPLES), policy)
    assert later[0]["reason"] == first[0]["reason"]


def test_a_light_candidate_whose_trial_ended_futile_is_tried_once_more(tenant: tuple) -> None:
    """A small tenant's trial is sized for a large lift and drops a modest one as futile: not a verdict."""
    tenant, settings, _ = tenant
    pairs = [_edit_pair(f"How do I reset password number {i}?") for i in range(12)]
    registry = Registry(tenant)
    tried = []
    for _ in range(3):
        composed = compose_candidates(
            tenant, settings, SNAPSHOT, Feedback(pairs, [], MIN_EXAMPLES), LightPolicy()
        )
        tried.append(composed[0]["reason"])
        candidate = composed[0]["version"]
        registry.move(candidate, "gated", actor="test", reason="setup")
        start_arms(tenant, [candidate], RolloutPolicy(), reward_policy=RewardPolicy(), actor="test")
        futile = {"eliminated": {"arm-1": f"{FUTILE}, cannot reach the design effect +0.342: undecided"}}
        finish(tenant, "rolled_back", actor="test", reason="every candidate eliminated", stats=futile)
        # The version's own audit says why it went: its arm's elimination, not the trial's end.
        assert registry.history()[candidate][-1]["reason"].startswith(FUTILE)

    # The bundle twice, then its changes on their own arms.
    assert tried[0] == tried[1] and tried[0].startswith("in-context examples + ")
    assert tried[2] == "in-context examples"


def test_a_trial_undecided_past_its_expected_time_is_cut_short_and_its_candidate_tried_again(
    tenant: tuple,
) -> None:
    """The turn's trained adapter waits for the trial: past the time its design expected to decide by, the
    loop ends it rather than hold the adapter for the trial's whole horizon; no verdict on its candidate."""
    tenant, settings, _ = tenant
    pairs = [_edit_pair(f"How do I reset password number {i}?") for i in range(12)]
    feedback = Feedback(pairs, [], MIN_EXAMPLES)
    [first] = compose_candidates(tenant, settings, SNAPSHOT, feedback, LightPolicy())
    Registry(tenant).move(first["version"], "gated", actor="test", reason="setup")
    exp = start_arms(tenant, [first["version"]], RolloutPolicy(), reward_policy=RewardPolicy(), actor="test")
    design = {
        **exp.decision["design"],
        "expected_decision_at": (now_utc() + timedelta(minutes=5)).isoformat(),
    }
    looked = {"design": design, "action": "continue", "reason": "undecided among ['arm-1']"}
    tenant.transaction(lambda tx: tx.update(experiments, experiments.c.id == exp.id, decision=looked))
    assert light_candidates.cut_short(tenant, exp.id) is None  # its time is ahead

    due = {**looked, "design": {**design, "expected_decision_at": now_utc().isoformat()}}
    tenant.transaction(lambda tx: tx.update(experiments, experiments.c.id == exp.id, decision=due))
    outcome = light_candidates.cut_short(tenant, exp.id)["light_trial"]

    assert outcome["outcome"] == "rolled_back" and outcome["reason"].startswith(CUT_SHORT)
    assert outcome["reason"].endswith("(undecided among ['arm-1'])") and active_experiment(tenant) is None
    [again] = compose_candidates(tenant, settings, SNAPSHOT, feedback, LightPolicy())
    assert again["reason"] == first["reason"]


def test_the_light_trial_stage_waits_past_the_expected_time_only_for_a_turn_with_nothing_trained(
    tenant: tuple,
) -> None:
    tenant, settings, production = tenant
    loop = Loop(tenant, settings, LoopPolicy(on_alerts=False))
    _, exp = _on_trial(tenant, production, "Answer in one line.")
    due = {
        **exp.decision,
        "design": {**exp.decision["design"], "expected_decision_at": now_utc().isoformat()},
    }
    tenant.transaction(lambda tx: tx.update(experiments, experiments.c.id == exp.id, decision=due))
    ctx = TurnContext(tenant, settings, loop.policy)
    turn = advance_turn(tenant, loop.start("manual"), "light_trial", {"light": {"experiment": exp.id}})
    assert stages.light_trial(ctx, turn) is None  # no adapter waits: the trial runs its course

    served = Registry(tenant).get(production)
    trained = Registry(tenant).register(
        kind="adapter",
        base_model="base",
        actor="test",
        system_prompt=served.system_prompt,
        decoding=served.decoding,
    )
    step = stages.light_trial(ctx, advance_turn(tenant, turn, "light_trial", {"candidate": trained.id}))
    assert step is not None and (step.stage, step.report["candidate"]) == ("gate", trained.id)
    assert step.report["light_trial"]["reason"].startswith(CUT_SHORT)


def test_once_a_reranker_orders_the_sources_a_candidate_shows_half_of_them(tenant: tuple) -> None:
    tenant, settings, production = tenant
    _policy(settings, "retrieval_policy.yaml", {"enabled": True, "k": 4})
    registry = Registry(tenant)
    assert ranked_sources(tenant, settings.home, registry.get(production)) is None  # embedding order
    reranker = registry.register(kind="reranker", base_model="all-MiniLM-L6-v2", actor="test")
    registry.move(reranker.id, "gated", actor="test", reason="setup")
    registry.move(reranker.id, "production", actor="test", reason="setup")
    shown = ranked_sources(tenant, settings.home, registry.get(production))

    (composed,) = compose_candidates(tenant, settings, SNAPSHOT, Feedback([], [], 0, shown), LightPolicy())

    assert shown == 4
    assert composed["reason"] == "users' source feedback orders the sources: the top 2 of the 4 shown"
    candidate = registry.get(composed["version"])
    assert Decoding.parse(candidate.decoding) == Decoding(temperature=0.8, sources=2)
    assert ranked_sources(tenant, settings.home, candidate) == 2  # and a later turn would try 1


def _edit_pair(question: str) -> dict:
    """A pair as a snapshot holds a user's edit: the edited text chosen over the model's long answer."""
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": "Settings, then Reset."}],
        "rejected": [{"role": "assistant", "content": LONG * 2}],
        "origin": "edit",
    }


def _gated(tenant: TenantStore, production: str, prompt: str) -> Version:
    """A light candidate with `prompt` composed on `production`, past its gate."""
    registry = Registry(tenant)
    candidate = compose(
        registry,
        parent=registry.get(production),
        base_model="base",
        actor="test",
        reason="t",
        system_prompt=prompt,
    )
    registry.move(candidate.id, "gated", actor="test", reason="setup")
    return candidate


def _on_trial(tenant: TenantStore, production: str, prompt: str) -> tuple[Version, Experiment]:
    """A gated light candidate with `prompt`, on a live trial against production."""
    candidate = _gated(tenant, production, prompt)
    exp = start_arms(tenant, [candidate.id], RolloutPolicy(), reward_policy=RewardPolicy(), actor="test")
    return candidate, exp


def test_a_turn_with_light_candidates_waits_on_their_trial(tenant: tuple) -> None:
    tenant, settings, production = tenant
    loop = Loop(tenant, settings, LoopPolicy(on_alerts=False))
    loop.start("manual")  # a turn that started its trial and stopped before recording it
    _, exp = _on_trial(tenant, production, "Answer in one line.")
    _policy(settings, "light_policy.yaml", {"enabled": True})

    turn = loop.tick()

    # The restarted turn's live trial is picked up, not composed again; the turn waits on its decision.
    assert (turn.stage, turn.report["light"]) == ("light_trial", {"experiment": exp.id, "picked_up": True})


def test_the_light_stage_stands_aside_when_off_or_when_approval_is_required(tenant: tuple) -> None:
    tenant, settings, _ = tenant
    unused = _no_judge_needed
    _policy(settings, "light_policy.yaml", {"enabled": False})
    off = light_candidates.start_trial(tenant, settings, approval=False, train_judge=unused)
    assert off == {"light": {"skipped": "off"}}
    _policy(settings, "light_policy.yaml", {})
    # Candidates that must wait for a person are never put before users by a light trial either.
    skipped = light_candidates.start_trial(tenant, settings, approval=True, train_judge=unused)
    assert skipped == {"light": {"skipped": "require_approval"}} and active_experiment(tenant) is None


def test_feedback_that_calls_for_no_light_candidate_skips_the_stage_before_any_judge_or_gate(
    tenant: tuple,
) -> None:
    """On by default, so a tenant's first turns, with a handful of ratings, must not pay for a judge, a gate
    and a trial of candidates that could not differ from production."""
    tenant, settings, _ = tenant
    now = now_utc()
    for i in range(MIN_EXAMPLES - 1):
        interaction = log(
            tenant, prompt=f"How do I reset password number {i}?", response="Settings.", created_at=now
        )
        give(tenant, interaction, "thumbs", 1, now)

    report = light_candidates.start_trial(tenant, settings, approval=False, train_judge=_no_judge_needed)[
        "light"
    ]

    assert report["skipped"].startswith(
        "nothing new to try: 0 preference pairs (0 on production's answers), 15"
    )
    assert Registry(tenant).list("adapter") == [Registry(tenant).production()]
    assert active_experiment(tenant) is None


def test_light_changes_are_read_from_feedback_on_the_answers_production_wrote(tenant: tuple) -> None:
    """A later turn's snapshot still holds the edits that asked an older production for shorter answers;
    read again, they would ask a production that already is brief for briefer still."""
    tenant, settings, production = tenant
    now = now_utc()
    _policy(settings, "light_policy.yaml", {"examples": None})
    older = [
        log(tenant, prompt=f"How do I reset pin {i}?", response=LONG * 2, created_at=now) for i in range(40)
    ]
    for interaction in older:
        give(tenant, interaction, "edit", "Settings, then Reset.", now)

    report = light_candidates.start_trial(tenant, settings, approval=False, train_judge=_no_judge_needed)

    assert report["light"]["skipped"].startswith("nothing new to try: 40 preference pairs (0 on production's")
    own = log(tenant, prompt="How do I reset my pin?", response=LONG, created_at=now, version=production)
    rows = [{"interaction_ids": [older[0]]}, {"interaction_ids": [own]}, {"interaction_ids": [own, older[1]]}]
    assert on_production(tenant, Registry(tenant).get(production), [*rows, {"origin": "canary"}]) == [rows[1]]
    assert on_production(tenant, None, rows) == [rows[0]]  # a tenant with no version yet: the base model's


def test_a_trial_holds_no_more_candidates_than_its_users_can_fill_and_none_for_too_few(
    tenant: tuple,
) -> None:
    tenant, settings, _ = tenant
    now = now_utc()
    _policy(settings, "light_policy.yaml", {"prompt_variants": ["Be brief.", "Be warm.", "Be exact."]})
    for i in range(19):  # one user short of two arms of MIN_UNITS each
        question = f"How do I reset password number {i}?"
        interaction = log(tenant, prompt=question, response=LONG, created_at=now, user=f"user-{i}")
        give(tenant, interaction, "thumbs", 1, now)

    report = light_candidates.start_trial(tenant, settings, approval=False, train_judge=_no_judge_needed)

    assert report["light"]["skipped"].startswith("19 users with feedback in the last 7 days: too few")
    assert Registry(tenant).list("adapter") == [Registry(tenant).production()]


def _no_judge_needed(snapshot_hash: str) -> dict:
    raise AssertionError("no reward model should be trained here")


def test_each_light_stage_trains_a_judge_on_its_snapshot_before_gating_its_candidates(tenant: tuple) -> None:
    """Light candidates come before a turn's training. A new tenant has no judge, and the gate's reward-model
    suite needs one; a later turn's sitting judge was trained on older feedback and may have drifted from
    this snapshot's held-out pairs, which blocked every candidate a minute before the reward stage trained
    a fit judge."""
    tenant, settings, production = tenant
    registry = Registry(tenant)
    rng = random.Random(0)

    def edits(n: int) -> None:  # n users (each request its own), more than a trial's two arms need
        now = now_utc()
        for i in range(n):
            at = now - timedelta(minutes=i)
            question = cooking_prompt(rng)
            interaction = log(tenant, prompt=question, response=LONG * 2, created_at=at, version=production)
            give(tenant, interaction, "edit", "Settings, then Reset.", at)

    edits(32)
    _policy(settings, "light_policy.yaml", {"enabled": True, "examples": None})
    # The light stage only: no turn trains an adapter here.
    loop = Loop(tenant, settings, LoopPolicy(on_alerts=False, min_rows=10**9))

    turn = loop.tick(force=True)

    light = turn.report["light"]
    first = registry.production("reward_model")
    assert first is not None and light["reward_model"]["judge"] == first.id
    reports = [Path(registry.get(c["version"]).gate_report).read_text() for c in light["candidates"]]
    assert reports and all("no production reward model" not in r for r in reports)

    futile = {"eliminated": {"arm-1": f"{FUTILE}, cannot reach the design effect +0.342: undecided"}}
    finish(tenant, "rolled_back", actor="test", reason="every candidate eliminated", stats=futile)
    assert loop.tick().outcome == "skipped"
    edits(8)

    light = loop.tick(force=True).report["light"]

    trained = registry.get(light["reward_model"]["trained"])
    assert trained.id != first.id and trained.snapshot_hash == light["snapshot"] != first.snapshot_hash


def test_the_adapter_trains_during_the_light_trial_and_is_gated_with_the_winners_light_parts(
    tenant: tuple,
) -> None:
    """A turn no longer waits for its light trial before training (a low-traffic tenant would wait days for
    its adapter); the trained candidate takes the trial winner's prompt and decoding before its gate."""
    tenant, settings, production = tenant
    registry = Registry(tenant)
    now = now_utc()
    rng = random.Random(0)
    for i in range(48):  # prompts of many clusters, so most pairs train rather than hold out
        at = now - timedelta(minutes=i)
        interaction = log(tenant, prompt=cooking_prompt(rng), response=LONG * 2, created_at=at)
        give(tenant, interaction, "edit", "Settings, then Reset.", at)
    heard: list[str] = []
    loop = Loop(tenant, settings, LoopPolicy(on_alerts=False, min_rows=4), say=heard.append)
    loop.start("manual")  # the turn whose light stage started the trial below
    brief, _ = _on_trial(tenant, production, f"{BRIEF.format(words=10)}\n\nYou are the support desk.")
    _policy(settings, "light_policy.yaml", {"enabled": True})

    turn = loop.tick()

    assert turn.stage == "light_trial" and active_experiment(tenant) is not None
    trained = registry.get(turn.report["candidate"])
    assert trained.system_prompt == "You are the support desk."  # production's while it trained

    finish(tenant, "promoted", actor="test", reason="the brief arm won", winner=brief.id)
    turn = loop.tick()

    carried = registry.get(turn.report["candidate"])
    assert turn.report["light_trial"]["outcome"] == "promoted" and "gate" in turn.report
    # Decided while the turn waited for it, not beside its training: the look that found it says so.
    assert [line for line in heard if "light trial" in line] == [f"turn 1: light trial promoted {brief.id}"]
    assert turn.report["light_trial"]["winner"] == brief.id  # promoted by hand: no look named the arm
    assert carried.parent_id == trained.id and carried.system_prompt == brief.system_prompt
    assert carried.decoding == {"temperature": 0.8}
    assert (carried.artifact_path, carried.job_spec) == (trained.artifact_path, trained.job_spec)
    assert registry.get(trained.id).state == "blocked"  # set aside, not judged: `versions list` says so
    assert registry.history()[trained.id][-1]["reason"].startswith("not gated itself: its weights carry")
    assert light_candidates.carry_light_parts(tenant, trained.id) == carried.id  # a restart picks it up


def test_the_light_trial_is_looked_at_while_a_stage_trains_without_reporting_steps(
    tenant: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training job reports no step while it loads and computes its reference log-probabilities (minutes
    under load); the trial must still be looked at, so a guardrail or a winner does not wait for it."""
    tenant, settings, production = tenant
    loop = Loop(tenant, settings, LoopPolicy(on_alerts=False))
    _, exp = _on_trial(tenant, production, "Answer in one line.")
    turn = advance_turn(tenant, loop.start("manual"), "adapter", {"light": {"experiment": exp.id}})
    monkeypatch.setattr(stages, "TRIAL_LOOK_SECONDS", 0.05)

    with watching_trial(TurnContext(tenant, settings, loop.policy), turn):
        deadline = time.monotonic() + 30
        while "checked_at" not in (get_experiment(tenant, exp.id).decision or {}):
            assert time.monotonic() < deadline, "the trial was not looked at while the stage ran"
            time.sleep(0.05)  # the stage's training, silent
    looked = get_experiment(tenant, exp.id).decision["checked_at"]
    time.sleep(0.2)
    assert get_experiment(tenant, exp.id).decision["checked_at"] == looked  # no look once the stage ended


def test_a_trial_decided_while_a_stage_trains_is_told_at_once(
    tenant: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's log said nothing of a trial that promoted its candidate 20 minutes before the training
    beside it ended: the look that decides it tells the caller then, and looks no more."""
    tenant, settings, production = tenant
    loop = Loop(tenant, settings, LoopPolicy(on_alerts=False))
    brief, exp = _on_trial(tenant, production, "Answer in one line.")
    turn = advance_turn(tenant, loop.start("manual"), "adapter", {"light": {"experiment": exp.id}})
    monkeypatch.setattr(stages, "TRIAL_LOOK_SECONDS", 0.05)
    heard: list[str] = []

    with watching_trial(TurnContext(tenant, settings, loop.policy, heard.append), turn):
        finish(tenant, "promoted", actor="test", reason="the brief arm won", winner=brief.id)
        deadline = time.monotonic() + 30
        while not heard:
            assert time.monotonic() < deadline, "the decided trial was not told"
            time.sleep(0.05)
        time.sleep(0.3)
    assert heard == [f"turn {turn.turn}: light trial promoted {brief.id}"]  # by hand: no test's reason
    outcome = light_candidates.trial_outcome(tenant, settings, exp.id)
    assert outcome is not None
    assert outcome["light_trial"]["ended_at"] == get_experiment(tenant, exp.id).ended_at.isoformat()


def test_a_look_tells_each_line_once() -> None:
    """A trial decided beside training is told by the watcher; the light_trial stage after it in the same
    look finds it decided and would tell it again."""
    heard: list[str] = []
    tell = stages.once_each(heard.append)
    for line in (
        "turn 1: light trial promoted v-1",
        "turn 1: light trial promoted v-1",
        "turn 1: dpo step 8/32",
    ):
        tell(line)
    assert heard == ["turn 1: light trial promoted v-1", "turn 1: dpo step 8/32"]


def test_the_light_stage_says_why_it_starts_no_trial(tenant: tuple[TenantStore, Settings, str]) -> None:
    """The loop's output said nothing of the light stage until its trial ended, minutes later."""
    tenant, settings, _ = tenant
    heard: list[str] = []
    turn = Loop(tenant, settings, LoopPolicy(on_alerts=False)).start("manual")
    ctx = TurnContext(tenant, settings, LoopPolicy(on_alerts=False), say=heard.append)

    step = stages.light(ctx, turn)

    assert heard == [f"turn {turn.turn}: no light trial: {step.report['light']['skipped']}"]
