"""The traffic runner against a stand-in OpenAI-shaped server over real HTTP, with the real `openai`
client: the mix of events it sends, idempotent retries, reproducibility, and the satisfaction probe."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import replace

import pytest

from tests.sim.standin import Recorded, standin_server
from tuneloop.sim import run_traffic, satisfaction, support
from tuneloop.sim.scenarios.support import DISCLAIMER

# A server that answers well about a third of the time.
ANSWERS = [
    f"Open Settings and tap the option you need. {DISCLAIMER}",
    "Thank you for reaching out! There are several things you can try here. First, open the app and go "
    "to the settings page, where you will find many options for your account, cards and security.",
    "Please contact your bank about this, they can explain every detail of what happened with your money "
    "and how long it may take to resolve, depending on your country and your card type.",
]


def test_traffic_sends_sparse_explicit_feedback_and_every_signal_kind() -> None:
    recorded = Recorded()
    scenario = support(0)
    with standin_server(ANSWERS, recorded) as url:
        report = run_traffic(url, "sk-test", scenario, 300, concurrency=8, seed=1)
    assert report.episodes == 300 and not report.errors and report.rejected == 0
    assert report.interactions == len(recorded.completions) > 300  # regenerations add requests
    assert 0.12 <= report.explicit_share <= 0.28
    kinds = Counter(e["kind"] for e in recorded.events.values())
    assert kinds == report.events
    for kind in ("thumbs", "rating", "followup", "escalated", "regenerated", "edit", "preference"):
        assert kinds[kind] > 0, kind
    assert kinds["thumbs"] > kinds["rating"] and kinds["accepted"] > 0
    by_id = {c["id"]: c for c in recorded.completions}
    for e in recorded.events.values():
        if e["kind"] == "regenerated":
            replacement = by_id[e["value"]["replaced_by"]]
            assert replacement["user"] == by_id[e["interaction_id"]]["user"]
        if e["kind"] == "preference":
            assert by_id[e["interaction_id"]]["n"] == 2
        if e["kind"] == "edit":
            assert e["value"].endswith(DISCLAIMER)
    assert len({c["user"] for c in recorded.completions}) > 20
    assert set(report.by_version) == {"v-test"}
    assert 0.0 < report.satisfaction < 1.0 and report.positive_rate is not None


def test_a_retried_feedback_batch_resends_the_same_event_ids() -> None:
    recorded = Recorded(fail_next_feedback=6)
    with standin_server(ANSWERS, recorded) as url:
        report = run_traffic(url, "sk-test", support(0), 60, concurrency=4, seed=2)
    assert not report.errors and report.duplicates > 0
    payloads: dict[str, list[dict]] = defaultdict(list)
    for batch in recorded.posts:
        for item in batch:
            payloads[item["id"]].append(item)
    assert any(len(copies) > 1 for copies in payloads.values())
    assert all(all(c == copies[0] for c in copies) for copies in payloads.values())
    ids_per_signal: dict[tuple[str, str], set[str]] = defaultdict(set)
    for event_id, copies in payloads.items():
        ids_per_signal[(copies[0]["interaction_id"], copies[0]["kind"])].add(event_id)
    assert all(len(ids) == 1 for ids in ids_per_signal.values())
    assert sum(report.events.values()) == len(recorded.events)


def test_same_seed_sends_the_same_traffic() -> None:
    def once() -> tuple:
        recorded = Recorded()
        with standin_server(ANSWERS, recorded) as url:
            report = run_traffic(url, "sk-test", support(0), 80, concurrency=8, seed=5)
        # Interaction ids are the server's own, so a `regenerated` pointer differs run to run.
        events = sorted(
            (e["kind"], "" if e["kind"] == "regenerated" else str(e["value"]))
            for e in recorded.events.values()
        )
        return events, sorted(c["user"] for c in recorded.completions), round(report.satisfaction, 9)

    assert once() == once()


def test_traffic_asks_for_the_scenarios_temperature_and_otherwise_leaves_the_apis_default() -> None:
    recorded = Recorded()
    with standin_server(ANSWERS, recorded) as url:
        run_traffic(url, "sk-test", replace(support(0), temperature=0.3), 20, concurrency=4, seed=3)
        cool = {c["temperature"] for c in recorded.completions}
        recorded.completions.clear()
        run_traffic(url, "sk-test", support(0), 20, concurrency=4, seed=3)
    assert cool == {0.3}
    assert {c["temperature"] for c in recorded.completions} == {None}


def test_satisfaction_scores_the_temperature_zero_answers_on_held_out_prompts() -> None:
    recorded = Recorded()
    scenario = support(0)
    prompts = scenario.eval_prompts(20)
    with standin_server(ANSWERS, recorded) as url:
        value = satisfaction(url, "sk-test", scenario, prompts, concurrency=4)
    expected = sum(scenario.score(p, ANSWERS[0]) for p in prompts) / len(prompts)
    assert value == pytest.approx(expected)
    assert len(recorded.completions) == 20 and {c["temperature"] for c in recorded.completions} == {0}
    assert not recorded.posts  # measuring sends no feedback


def test_the_simulator_imports_httpx2_whole_before_its_users_threads_start() -> None:
    """openai reads httpx2's classes from sys.modules on every request: a thread importing it meanwhile (the
    demo's loop, through huggingface_hub) left it half-initialised and a user's request raised."""
    code = "import sys, tuneloop.sim.runner; print(hasattr(sys.modules['httpx2'], 'Timeout'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
