"""`code-assistant` and `policy-tone`: hidden preferences that rank the users' ideal above what the base
model typically writes, the signals their users send (CI outcomes, supervisor reviews, dwell, sessions,
repeat contacts), and their traffic through tuneloop's real gateway."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tests.sim.standin import Recorded, standin_server
from tuneloop import Settings
from tuneloop.sim import SCENARIOS, code_assistant, policy_tone, run_traffic
from tuneloop.sim.scenarios.code_assistant import ci_passes, typed
from tuneloop.sim.scenarios.policy_tone import promises, section_of
from tuneloop.store.repository import Store

# What SmolLM2-135M-Instruct typically answers: untyped code wrapped in explanation.
BASE_CODE = (
    "Here's a Python function that does what you asked:\n\n```python\ndef total(records):\n"
    "    total = 0\n    for r in records:\n        total += r['price']\n    return total\n```\n\n"
    "This function takes a list of records and loops over each one, adding the value to a running total "
    "which it returns at the end."
)
BASE_POLICY = (
    "Sure! Great question. Northwind offers a generous policy and you can definitely do this. Please "
    "check with your manager and the HR team, who will be happy to help you with every detail!"
)


def _prompts(scenario, forbidden: bool | None = None):
    return [p for p in scenario.pool() if forbidden is None or p.fraud == forbidden]


def test_new_scenarios_are_registered_beside_the_old_ones() -> None:
    assert {"support", "two-tenants", "code-assistant", "policy-tone"} <= set(SCENARIOS)
    for name in ("code-assistant", "policy-tone"):
        scenario = SCENARIOS[name](0)
        assert scenario.name == name and len(scenario.eval_prompts(32)) == 32
        traffic, held = scenario.split()
        assert not {p.text for p in traffic} & {p.text for p in held}
        assert all(scenario.score(p, scenario.edit(p)) == 1.0 for p in scenario.pool())


def test_code_assistant_ranks_the_teams_conventions_above_the_base_models_answer() -> None:
    scenario = code_assistant(0)
    for prompt in _prompts(scenario)[:20]:
        assert scenario.score(prompt, prompt.ideal) - scenario.score(prompt, BASE_CODE) >= 0.5
    assert scenario.score(prompt, BASE_CODE) <= 0.35
    untyped = prompt.ideal.replace(": list[dict]", "").replace(" -> float", "")
    assert (
        scenario.score(prompt, BASE_CODE)
        < scenario.score(prompt, untyped)
        < scenario.score(prompt, prompt.ideal)
    )


def test_code_assistant_ci_passes_only_fully_typed_code() -> None:
    assert typed("def f(a: dict[str, int], b: int = 2) -> int:\n    return 1") == 1.0
    assert typed("def f(a, b) -> int:\n    return 1") == 0.5
    assert typed("no code here") == 0.0
    prompt = _prompts(code_assistant(0))[0]
    assert ci_passes(prompt, prompt.ideal) and not ci_passes(prompt, BASE_CODE)
    assert ci_passes(prompt, prompt.ideal.rsplit("```", 1)[0])  # an answer cut before its closing fence


def test_policy_tone_ranks_a_cited_calm_answer_above_the_base_models_answer() -> None:
    scenario = policy_tone(0)
    for prompt in _prompts(scenario)[:30]:
        assert scenario.score(prompt, prompt.ideal) - scenario.score(prompt, BASE_POLICY) >= 0.5
    normal = _prompts(scenario, forbidden=False)[0]
    wrong_section = normal.ideal.replace(section_of(normal.ideal), "1.1")
    assert scenario.score(normal, BASE_POLICY) < scenario.score(normal, wrong_section) < 1.0


def test_policy_tone_never_promises_what_the_policy_forbids() -> None:
    scenario = policy_tone(0)
    forbidden = _prompts(scenario, forbidden=True)[0]
    section = section_of(forbidden.ideal)
    promise = f"Yes, you can do that this once (Policy §{section})."
    assert promises(promise) and not promises(forbidden.ideal) and not promises("You can't, sorry.")
    assert scenario.score(forbidden, forbidden.ideal) - scenario.score(forbidden, promise) >= 0.25


def test_code_assistant_users_send_ci_outcomes_dwell_and_sessions() -> None:
    scenario = code_assistant(0)
    prompt = _prompts(scenario)[0]
    answers = [prompt.ideal, prompt.ideal.replace(": list[dict]", ""), BASE_CODE]
    recorded = Recorded()
    with standin_server(answers, recorded) as url:
        report = run_traffic(url, "sk-test", scenario, 150, concurrency=8, seed=1)
    assert report.episodes == 150 and not report.errors and report.rejected == 0
    outcomes = [e["value"] for e in recorded.events.values() if e["kind"] == "outcome"]
    assert {o["name"] for o in outcomes} == {"tests_passed"} and {o["value"] for o in outcomes} == {
        True,
        False,
    }
    used = {e["interaction_id"] for e in recorded.events.values() if e["kind"] in ("accepted", "copied")}
    assert {e["interaction_id"] for e in recorded.events.values() if e["kind"] == "outcome"} <= used
    dwell = [e for e in recorded.events.values() if e["kind"] == "dwell_ms"]
    assert dwell and all(e["value"] > 0 for e in dwell)
    sessions = Counter(c["session"] for c in recorded.completions)
    assert None not in sessions and any(n > 1 for n in sessions.values())  # regenerations stay in session
    assert any(s.endswith("-again") for s in sessions)  # users who come back open a new session


def test_policy_tone_supervisors_review_as_labelers_with_their_own_event_ids() -> None:
    recorded = Recorded()
    with standin_server([BASE_POLICY], recorded) as url:
        report = run_traffic(url, "sk-test", policy_tone(0), 120, concurrency=8, seed=2)
    assert report.rejected == 0 and not report.errors
    reviews = [e for e in recorded.events.values() if e["source"] == "labeler"]
    assert reviews and {e["kind"] for e in reviews} == {"rating", "edit"}
    assert {e["rater"] for e in reviews} <= {f"sim-supervisor{i}" for i in range(5)}
    assert all(e["id"].endswith(".labeler") for e in reviews)
    assert all(e["value"] <= 3 for e in reviews if e["kind"] == "rating")  # the base answer falls short
    users = [e for e in recorded.events.values() if e["source"] == "user"]
    assert Counter(e["kind"] for e in users)["escalated"] > 0


@pytest.mark.parametrize("name", ["code-assistant", "policy-tone"])
def test_new_scenarios_traffic_lands_on_the_real_gateway(name: str, tiny_model: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model), max_batch_size=8)
    store = Store(settings.database_url)
    _, key = store.create_tenant("team", redaction="off")
    scenario = SCENARIOS[name](0)
    try:
        with live_server(settings) as url:
            report = run_traffic(url, key, scenario, 16, concurrency=8, seed=0)
            assert report.episodes == 16 and not report.errors and report.rejected == 0
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
            stored = http.get("/v1/feedback", params={"limit": 1000}).json()["data"]
            assert len(stored) == sum(report.events.values()) > 0
            first = http.get(f"/v1/interactions/{stored[0]['interaction_id']}").json()
            assert first["session"].startswith(f"sim-{name}-0-")  # the gateway kept OpenAI metadata's session
    finally:
        store.close()
