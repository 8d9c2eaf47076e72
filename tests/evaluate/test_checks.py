"""The gate's pure parts: statistics, refusal detector, golden checks, policies, data files, report."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from tuneloop.config import load_policy_file, tenant_policy
from tuneloop.errors import BadRequest
from tuneloop.evaluate.policy import (
    DriftConfig,
    GatePolicy,
    HumanPreferencesConfig,
    RewardModelConfig,
    SafetyConfig,
)
from tuneloop.evaluate.refusal import is_refusal
from tuneloop.evaluate.report import render_html, win_rate_svg
from tuneloop.evaluate.stats import paired_change_p, wilson_interval, win_rate
from tuneloop.evaluate.suites.drift import allowed_length_change, degenerate
from tuneloop.evaluate.suites.golden import GoldenItem, failures, load_golden
from tuneloop.evaluate.suites.preferences import preference_gains
from tuneloop.evaluate.suites.safety import load_safety_set

CONFIGS = Path(__file__).parents[2] / "configs"


def test_wilson_interval_contains_the_rate_and_narrows_with_more_data() -> None:
    low, high = wilson_interval(7, 10)
    assert low < 0.7 < high
    wide, narrow = high - low, (lambda lo_hi: lo_hi[1] - lo_hi[0])(wilson_interval(70, 100))
    assert narrow < wide
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_win_rate_counts_ties_as_half() -> None:
    stats = win_rate([1.0, -1.0, 0.0, 0.0], tie_tolerance=0.1)
    assert (stats["wins"], stats["losses"], stats["ties"], stats["win_rate"]) == (1, 1, 2, 0.5)


def test_a_candidate_less_extreme_on_pairs_both_order_right_ties_production_and_wins_what_it_fixes() -> None:
    """Raw margins made a successor lose every pair its parent held at more nats; what counts is the chance
    each would pick the chosen answer."""
    cfg = HumanPreferencesConfig()
    production = [194.7, 261.1, 66.3, 24.4, -3.0, 4.0]
    sure_and_right = win_rate(
        preference_gains([157.9, 215.9, 34.3, 8.8, 2.0, 4.0], production), cfg.tie_tolerance
    )
    assert (sure_and_right["wins"], sure_and_right["ties"], sure_and_right["losses"]) == (1, 5, 0)
    assert cfg.judge(sure_and_right)[0]
    flipped = win_rate(preference_gains([-5.0] * 4 + [-3.0, 4.0], production), cfg.tie_tolerance)
    assert (flipped["wins"], flipped["ties"], flipped["losses"]) == (0, 2, 4)


@pytest.mark.parametrize(("wins", "n", "passes"), [(6, 13, True), (5, 13, True), (2, 13, False)])
def test_default_win_rate_rule_blocks_only_a_candidate_the_interval_shows_worse(
    wins: int, n: int, passes: bool
) -> None:
    stats = win_rate([1.0] * wins + [-1.0] * (n - wins))
    passed, rule = HumanPreferencesConfig().judge(stats)
    assert passed is passes
    assert "no worse than production" in rule


def test_win_rate_rule_can_demand_a_significant_offline_win() -> None:
    strict = HumanPreferencesConfig(min_ci_low=0.5)
    assert not strict.judge(win_rate([1.0] * 9 + [-1.0] * 4))[0]
    assert strict.judge(win_rate([1.0] * 40 + [-1.0] * 4))[0]


@pytest.mark.parametrize(
    "answer",
    [
        "I can't help with that request.",
        "I’m sorry, but I cannot assist with creating malware.",
        "As an AI, I won't provide instructions for weapons.",
        "I must decline: that would violate the privacy of others.",
        "Sorry, I can't do that.",
    ],
)
def test_refusals_are_detected(answer: str) -> None:
    assert is_refusal(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "Sure! Here is exactly how to do it, step by step.",
        "To kill a hanging process, run `kill -9 PID` in a terminal.",
        "Happy to help! Never mix bleach and ammonia.",
    ],
)
def test_helpful_answers_are_not_refusals(answer: str) -> None:
    assert not is_refusal(answer)


def test_golden_item_reports_every_missed_expectation() -> None:
    item = GoldenItem(
        prompt="hi",
        must_contain=["Password"],
        must_not_contain=["secret"],
        regex=[r"\d+ steps"],
        must_refuse=False,
        max_length=30,
    )
    assert failures(item, "Reset your password in 3 steps.") == ["31 chars > 30"]
    missed = failures(item, "I can't help with that secret.")
    assert missed == ["lacks 'Password'", "contains 'secret'", r"no match for /\d+ steps/", "refused"]


def test_gate_policy_file_documents_exactly_the_defaults() -> None:
    assert load_policy_file(CONFIGS / "gate_policy.yaml", GatePolicy) == GatePolicy()


def test_every_gate_policy_field_has_a_description() -> None:
    from tuneloop.evaluate import policy

    for model in (
        policy.HumanPreferencesConfig,
        policy.RewardModelConfig,
        policy.GoldenConfig,
        policy.SafetyConfig,
        policy.PiiLeakConfig,
        policy.DriftConfig,
        policy.GroundingConfig,
        policy.GenerationConfig,
    ):
        assert all(f.description for f in model.model_fields.values()), model.__name__


def test_invalid_gate_policy_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text("suites:\n  safety:\n    max_harmful_refusal_drop: 2\n")
    with pytest.raises(BadRequest, match=r"suites\.safety\.max_harmful_refusal_drop"):
        load_policy_file(path, GatePolicy)


def test_tenant_gate_policy_falls_back_to_the_defaults(tmp_path: Path) -> None:
    assert tenant_policy(tmp_path, "acme", GatePolicy) == GatePolicy()
    custom = tmp_path / "policies" / "acme" / "gate_policy.yaml"
    custom.parent.mkdir(parents=True)
    custom.write_text("suites: {golden: {required: false}}\n")
    assert tenant_policy(tmp_path, "acme", GatePolicy).suites.golden.required is False


def test_golden_example_loads() -> None:
    golden = load_golden(CONFIGS / "golden_example.yaml")
    assert len(golden.items) >= 3 and any(i.must_refuse for i in golden.items)


def test_shipped_safety_set_covers_every_category_with_benign_look_alikes() -> None:
    safety = load_safety_set()
    categories = {"fraud", "weapons", "self_harm", "malware", "hate", "privacy"}
    assert {i.category for i in safety.harmful} == categories
    assert {i.category for i in safety.benign} == categories
    ids = [i.id for i in safety.harmful + safety.benign]
    assert len(ids) == len(set(ids))


def _report(passed: bool) -> dict:
    suites = [
        {
            "name": "human_preferences",
            "required": True,
            "status": "pass" if passed else "fail",
            "passed": passed,
            "reason": "wins",
            "seconds": 1.0,
            "rows": [{"prompt": "<b>x</b>", "outcome": "win"}],
            "metrics": {"n": 10, "win_rate": 0.7, "ci_low": 0.4, "ci_high": 0.89, "threshold": 0.5},
        },
        {
            "name": "safety",
            "required": True,
            "status": "pass",
            "passed": True,
            "reason": "ok",
            "seconds": 1.0,
            "rows": [],
            "metrics": {"harmful": 2, "by_category": {"fraud": {"candidate_harmful_refusal": 1.0}}},
        },
    ]
    return {
        "tenant": "acme",
        "tenant_id": "t1",
        "version": "v-1",
        "production": None,
        "snapshot": "abc",
        "decision": "gated" if passed else "blocked",
        "reasons": [] if passed else ["human_preferences: wins"],
        "started_at": "now",
        "seconds": 2.0,
        "policy": GatePolicy().model_dump(mode="json"),
        "suites": suites,
    }


def test_report_html_has_the_suite_table_the_plot_and_escapes_text() -> None:
    html = render_html(_report(passed=False))
    assert '<table id="suites"' in html and '<figure id="win-rate-plot"><svg' in html
    assert "blocked" in html and "human_preferences: wins" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "fraud" in html  # per-category breakdown table


def test_plot_draws_one_interval_per_win_rate_suite() -> None:
    suites = _report(passed=True)["suites"]
    svg = win_rate_svg(suites)
    assert svg.count("<circle") == 1 and "70% (95% CI 40%–89%, n=10)" in svg
    # The SVG goes into the page as markup: what it names is escaped in it.
    named = win_rate_svg([{**s, "name": "<script>alert(1)</script>"} for s in suites])
    assert "<script>" not in named and "&lt;script&gt;" in named


def test_gate_cli_registers_run_with_tenant_and_version() -> None:
    from tuneloop.cli import gate

    parser = argparse.ArgumentParser()
    gate.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gate", "run", "--tenant", "acme", "--version", "v-1", "--dry-run"])
    assert (args.tenant, args.version, args.dry_run, args.run) == ("acme", "v-1", True, gate.cmd_run)


def test_gate_cli_on_an_unknown_tenant_says_so(tuneloop_home: Path) -> None:
    from tuneloop.cli import gate, main
    from tuneloop.errors import NotFound

    assert main(["init"]) == 0
    args = argparse.Namespace(tenant="nobody", version="v-1", policy=None, dry_run=False)
    with pytest.raises(NotFound):
        gate.cmd_run(args)


def test_safety_yaml_is_plain_data() -> None:
    from tuneloop.evaluate.suites.safety import default_safety_path

    data = yaml.safe_load(default_safety_path().read_text())
    assert set(data) == {"harmful", "benign"}


@pytest.mark.parametrize(
    ("worse", "better", "p"), [(0, 0, 1.0), (1, 0, 0.5), (2, 0, 0.25), (3, 0, 0.125), (3, 1, 0.3125)]
)
def test_a_paired_change_is_judged_on_the_items_that_flipped(worse: int, better: int, p: float) -> None:
    assert paired_change_p(worse, better) == pytest.approx(p)


def test_one_flipped_safety_prompt_is_noise_but_three_the_same_way_are_not() -> None:
    alpha = SafetyConfig().alpha
    assert paired_change_p(1, 0) >= alpha and paired_change_p(3, 0) < alpha


def test_length_may_move_as_far_as_users_asked_but_not_the_other_way() -> None:
    cfg = DriftConfig()
    assert allowed_length_change(cfg, asked=-0.5, change=-0.6) == pytest.approx(0.9)  # shorter, as asked
    assert allowed_length_change(cfg, asked=-0.23, change=-0.55) == pytest.approx(0.9)  # the demo's ask
    assert allowed_length_change(cfg, asked=-0.05, change=-0.6) == cfg.max_length_change  # no clear ask
    assert allowed_length_change(cfg, asked=-0.5, change=+0.6) == cfg.max_length_change  # not asked
    assert allowed_length_change(cfg, asked=+0.1, change=+0.3) == cfg.max_length_change  # small ask
    assert allowed_length_change(cfg, asked=+1.0, change=+1.5) == pytest.approx(2.0)


def test_many_pairs_each_asking_a_little_shorter_are_a_clear_ask() -> None:
    cfg = DriftConfig()
    # The rag scenario's first snapshot: a median ask of -7 %, but 54 of 85 pairs chose the shorter answer.
    assert allowed_length_change(cfg, asked=-0.07, change=-0.59, votes=(54, 31)) == pytest.approx(0.9)
    assert allowed_length_change(cfg, asked=-0.07, change=-0.59, votes=(44, 41)) == cfg.max_length_change
    # Pairs choosing the shorter answer never widen how much longer a candidate may get.
    assert allowed_length_change(cfg, asked=-0.07, change=+0.6, votes=(54, 31)) == cfg.max_length_change


@pytest.mark.parametrize(
    ("answer", "bad"),
    [
        ("", True),
        ("yes yes yes yes yes", True),
        ("I can help. I can help. I can help.", True),
        ("Open Settings, then Security, then Reset password.", False),
    ],
)
def test_empty_and_looping_answers_are_degenerate(answer: str, bad: bool) -> None:
    assert degenerate(answer) is bad


def test_golden_and_safety_sets_are_read_bounded_like_policy_files(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        'a0: &a0 ["x","x","x","x","x","x","x","x","x"]\n'
        + "\n".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12))
        + "\nitems: *a11\n"
    )
    for load, what in ((load_golden, "golden set"), (load_safety_set, "safety set")):
        with pytest.raises(BadRequest, match=f"{what} .*more than"):
            load(bomb)
    bad_regex = tmp_path / "golden.yaml"
    bad_regex.write_text("items: [{id: a, prompt: hi, regex: ['(']}]\n")
    with pytest.raises(BadRequest, match="regex"):
        load_golden(bad_regex)


def test_a_team_pattern_that_backtracks_fails_its_check_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A golden item's regex runs on model answers: one that backtracks catastrophically ends with the
    reason, where it held the gate (the time limit is shortened here to keep the test quick)."""
    import time

    from tuneloop.evaluate import patterns

    monkeypatch.setattr(patterns, "SEARCH_SECONDS", 0.2)
    item = GoldenItem(id="g", prompt="hi", regex=["(a|aa)+c"])
    started = time.perf_counter()
    with pytest.raises(patterns.PatternTimeout, match=r"took over 0\.2 s"):
        failures(item, "a" * 60)
    assert time.perf_counter() - started < 5
    assert failures(GoldenItem(id="g", prompt="hi", regex=["(?i)settings"]), "Open Settings.") == []


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"canary_pattern": "("}, "canary_pattern"),
        ({"canary_pattern": "x*"}, "matches empty text"),
        ({"canaries": [""]}, "canaries"),
    ],
)
def test_a_canary_setting_that_would_find_a_leak_everywhere_is_refused_as_the_policy_loads(
    tmp_path: Path, settings: dict, says: str
) -> None:
    """A canary pattern that matches empty text (or an empty canary) is in every answer: every candidate
    would "leak" and the gate would block them all; a broken pattern waited for the next gate to say so."""
    path = tmp_path / "gate_policy.yaml"
    path.write_text(yaml.safe_dump({"suites": {"pii_leak": settings}}))
    with pytest.raises(BadRequest, match=says):
        load_policy_file(path, GatePolicy)


def test_the_reward_suite_accepts_as_few_prompts_as_its_rule_can_still_fail_on() -> None:
    """A tenant whose users ask a few questions holds out few distinct prompts; a floor above what the
    rule needs blocked every candidate of such a tenant, one below it would pass a candidate that lost all."""
    cfg = RewardModelConfig()
    assert (
        wilson_interval(0, cfg.min_prompts)[1] < cfg.min_ci_high <= wilson_interval(0, cfg.min_prompts - 1)[1]
    )
