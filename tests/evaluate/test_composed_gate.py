"""The gate judges a composed version as it is served: its prompt and decoding, not just its adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.evaluate.conftest import Adapters, GateSetup
from tuneloop.cli import main
from tuneloop.evaluate.gate import CANDIDATE, build_context
from tuneloop.evaluate.generation import Arm, Evaluator
from tuneloop.evaluate.suites import preferences, reward
from tuneloop.evaluate.suites.base import MissingInput
from tuneloop.registry.composition import Decoding, compose

PROMPT = "You are the support desk of Acme. Always end with: Anything else?"


def _compose(setup: GateSetup, **decoding: float) -> str:
    """A candidate serving production's adapter with PROMPT, held out on the tenant's snapshot."""
    return compose(
        setup.registry,
        parent=setup.registry.production(),
        base_model=str(setup.base),
        actor="test",
        reason="test",
        system_prompt=PROMPT,
        decoding=Decoding(**decoding),
        snapshot_hash=setup.snapshot.hash,
    ).id


def test_gate_run_judges_a_prompt_only_candidate(
    gate_setup: GateSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TUNELOOP_DB_URL", f"sqlite:///{tmp_path / 'gate.db'}")
    policy = tmp_path / "gate.yaml"
    policy.write_text(yaml.safe_dump(gate_setup.policy.model_dump(mode="json")))
    assert main(["versions", "create", "--tenant", "acme", "--system-prompt", PROMPT,
                 "--snapshot", gate_setup.snapshot.hash]) == 0  # fmt: skip
    version_id = capsys.readouterr().out.strip()

    code = main(["gate", "run", "--tenant", "acme", "--version", version_id, "--policy", str(policy)])
    decision = capsys.readouterr().out.split()[-1]
    version = gate_setup.registry.get(version_id)
    assert (code, version.state) == ((0, "gated") if decision == "gated" else (3, "blocked"))
    report = json.loads(Path(version.gate_report).read_text())
    # Every suite had its inputs: the candidate carries the snapshot and production's adapter.
    assert report["snapshot"] == gate_setup.snapshot.hash
    assert [s["name"] for s in report["suites"] if s["status"] == "error"] == []


def _arms(setup: GateSetup, version_id: str) -> Evaluator:
    """The gate's evaluator for `version_id`, plus an arm "plain": production's adapter with no prompt."""
    candidate = setup.registry.get(version_id)
    production = setup.registry.production()
    ctx, problem = build_context(setup.tenant, setup.home, setup.policy, candidate, production)
    assert ctx is not None, problem
    ctx.evaluator.add_arm(Arm("plain", setup.base, Path(production.artifact_path)))
    return ctx.evaluator


def test_the_candidate_arm_answers_with_its_prompt_and_its_token_cap(gate_setup: GateSetup) -> None:
    prompts = [[{"role": "user", "content": "Please explain owls to me."}]]
    evaluator = _arms(gate_setup, _compose(gate_setup))
    [prompted], [plain] = evaluator.generate(CANDIDATE, prompts, 16), evaluator.generate("plain", prompts, 16)
    assert prompted != plain  # the same adapter, greedy both: only the prompt differs
    evaluator = _arms(gate_setup, _compose(gate_setup, max_tokens=3))
    [capped] = evaluator.generate(CANDIDATE, prompts, 16)
    # Greedy, same prompt: the version's cap of 3 tokens, not the suite's 16, cut the same answer short.
    assert prompted.startswith(capped) and len(capped) < len(prompted)


def test_a_sampling_candidate_gets_the_same_answers_on_every_gate_run(gate_setup: GateSetup) -> None:
    version_id = _compose(gate_setup, temperature=1.5, top_p=0.95)
    prompts = [[{"role": "user", "content": f"Tell me about item {i}."}] for i in range(4)]
    first, second = (_arms(gate_setup, version_id).generate(CANDIDATE, prompts, 8) for _ in range(2))
    assert first == second
    greedy = _arms(gate_setup, _compose(gate_setup, temperature=0)).generate(CANDIDATE, prompts, 8)
    assert first != greedy  # it did sample


def test_an_examples_candidate_is_gated_with_examples_but_never_its_prompts_own_answer(
    gate_setup: GateSetup,
) -> None:
    """The held-out pairs and the starter golden set are the tenant's own traffic: shown their own answers
    as examples, a candidate would pass on what it copied."""
    from tuneloop.capture.redact import Redactor
    from tuneloop.registry.composition import ExamplePolicy
    from tuneloop.serve.examples import build_pool

    pool = build_pool(gate_setup.tenant, gate_setup.home, Redactor())
    stored = pool.examples[0].prompt
    everything = ExamplePolicy(k=8, min_reward=-1, min_similarity=0)
    candidate = compose(
        gate_setup.registry,
        parent=gate_setup.registry.production(),
        base_model=str(gate_setup.base),
        actor="test",
        reason="examples",
        decoding=Decoding(examples=everything),
        snapshot_hash=gate_setup.snapshot.hash,
    )
    evaluator = _arms(gate_setup, candidate.id)
    for prompt in (stored, "A question nobody asked before?"):
        messages = evaluator.arms[CANDIDATE].messages([{"role": "user", "content": prompt}])
        shown = [m["content"] for m in messages[:-1] if m["role"] == "user"]
        assert 0 < len(shown) <= everything.k
        assert prompt not in shown and messages[-1] == {"role": "user", "content": prompt}
    production = evaluator.arms["production"].messages([{"role": "user", "content": stored}])
    assert production == [{"role": "user", "content": stored}]  # production shows none


def test_with_no_judge_only_a_candidate_on_productions_weights_skips_the_reward_suite(
    gate_setup: GateSetup, adapters: Adapters
) -> None:
    """Implicit feedback can leave every reward model unfit for a long time: a prompt or decoding change
    still reaches its trial on users, a trained adapter stays blocked."""
    registry = gate_setup.registry
    registry.move(gate_setup.reward_model.id, "retired", actor="test", reason="no fit judge")
    light, trained = registry.get(_compose(gate_setup)), gate_setup.candidate(adapters.sensible)
    production, cfg = registry.production(), gate_setup.policy.suites.reward_model
    contexts = [
        build_context(gate_setup.tenant, gate_setup.home, gate_setup.policy, c, production)[0]
        for c in (light, trained)
    ]
    verdict = reward.run(contexts[0], cfg)
    assert verdict.passed and verdict.reason.startswith("skipped") and verdict.metrics == {"skipped": True}
    with pytest.raises(MissingInput, match="no production reward model"):
        reward.run(contexts[1], cfg)


def test_too_few_held_out_pairs_skip_the_preference_suite_only_for_a_candidate_on_productions_weights(
    gate_setup: GateSetup, adapters: Adapters
) -> None:
    """Thumbs and implicit signals rate answers one at a time: a young tenant's snapshot can hold out a
    single pair, which must not keep every prompt change from its trial."""
    registry = gate_setup.registry
    light, trained = registry.get(_compose(gate_setup)), gate_setup.candidate(adapters.sensible)
    production = registry.production()
    cfg = gate_setup.policy.suites.human_preferences.model_copy(update={"min_pairs": 10_000})
    contexts = [
        build_context(gate_setup.tenant, gate_setup.home, gate_setup.policy, c, production)[0]
        for c in (light, trained)
    ]
    verdict = preferences.run(contexts[0], cfg)
    assert (
        verdict.passed and verdict.reason.startswith("skipped") and "the suite needs 10000" in verdict.reason
    )
    with pytest.raises(MissingInput, match="the suite needs at least 10000"):
        preferences.run(contexts[1], cfg)
