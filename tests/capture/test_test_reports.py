"""JUnit reports and SARIF findings become outcome events (CLI and SDK); hostile files are refused."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.live import live_server
from tuneloop import Client, Settings
from tuneloop.capture.test_reports import MAX_REPORT_BYTES, junit_events, parse_junit, parse_sarif
from tuneloop.cli import main
from tuneloop.errors import BadRequest, PayloadTooLarge
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.rewards import compute_rewards
from tuneloop.store.repository import Store

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="99" failures="0">
  <testcase classname="test_app" name="test_a"/>
  <testcase classname="test_app" name="test_b"><failure message="assert 1 == 2">trace</failure></testcase>
  <testcase classname="test_app" name="test_c"><error message="boom"/></testcase>
  <testcase classname="test_app" name="test_d"><skipped/></testcase>
  <testcase classname="test_app" name="test_e"><system-out>ok</system-out></testcase>
</testsuite></testsuites>"""

GREEN = '<testsuite name="unit"><testcase name="a"/><testcase name="b"><skipped/></testcase></testsuite>'


def sarif(*results: dict) -> str:
    """A SARIF 2.1 log as ruff writes it (`ruff check --output-format sarif`)."""
    run = {"tool": {"driver": {"name": "ruff", "rules": []}}, "results": list(results)}
    return json.dumps(
        {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": [run]}
    )


FINDINGS = sarif(
    {"ruleId": "F401", "level": "error", "message": {"text": "`os` imported but unused"}},
    {"ruleId": "E501", "message": {"text": "Line too long"}},  # no level: SARIF's default, warning
    {"ruleId": "F841", "level": "error", "suppressions": [{"kind": "inSource"}], "message": {"text": "x"}},
    {"ruleId": "F811", "level": "warning", "baselineState": "unchanged", "message": {"text": "old"}},
    {"ruleId": "D100", "level": "note", "baselineState": "new", "message": {"text": "docstring"}},
    {"ruleId": "X1", "level": "none", "message": {"text": "informational"}},
)


@pytest.fixture
def tenant_key(tuneloop_home: Path) -> Iterator[str]:
    """A tenant (redaction off: no PII model needed) with one interaction whose code a developer applied."""
    store = Store(Settings().database_url)
    tenant_row, key = store.create_tenant("acme", redaction="off")
    tenant = store.for_tenant(tenant_row)
    answer = "```py\nsum(x)\n```"
    tenant.log_interaction(
        {
            "id": "int-code",
            "messages": [{"role": "user", "content": "sum a list"}],
            "response": answer,
            "choices": [answer],
        },
        "d-code",
    )
    store.close()
    yield key


def _outcomes(home: Path) -> list[dict]:
    store = Store(Settings(home=home).database_url)
    tenant = store.for_tenant(store.tenant_by_name("acme"))
    events = [e for e in tenant.feedback(interaction_id="int-code") if e["kind"] == "outcome"]
    store.close()
    return sorted(events, key=lambda e: e["value"]["name"])


def test_junit_report_becomes_a_failed_tests_outcome_with_its_counts(
    tenant_key: str, tuneloop_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    report = tmp_path / "report.xml"
    report.write_text(JUNIT)
    argv = ["outcome", "--tenant", "acme", "--interaction", "int-code", "--from-junit", str(report)]
    assert main(argv) == 0
    assert "\taccepted\ttests_passed=False" in capsys.readouterr().out
    assert main(argv) == 0  # a CI retry posts the same report: stored once
    assert "\tduplicate\t" in capsys.readouterr().out
    [event] = _outcomes(tuneloop_home)
    assert event["value"] == {"name": "tests_passed", "value": False}
    assert event["source"] == "system"
    # The suite's own totals (tests="99") are not trusted; the test cases are counted.
    assert event["metadata"] == {"tests": 5, "passed": 2, "failed": 1, "errors": 1, "skipped": 1}


def test_sdk_posts_sarif_findings_and_a_green_report_as_outcomes(
    tenant_key: str, tuneloop_home: Path, tmp_path: Path
) -> None:
    findings = tmp_path / "findings.sarif"
    findings.write_text(FINDINGS)
    with live_server(Settings(home=tuneloop_home, backend="none")) as url, Client(url, tenant_key) as tl:
        results = tl.report_outcome("int-code", junit=GREEN, sarif=findings)
        assert [r["status"] for r in results] == ["accepted", "accepted"]
        assert [r["status"] for r in tl.report_outcome("int-code", sarif=FINDINGS.encode())] == ["duplicate"]
    tests, found = _outcomes(tuneloop_home)[::-1]
    assert tests["value"] == {"name": "tests_passed", "value": True}
    # Suppressed, baseline-unchanged and level-none results are not new findings.
    assert found["value"] == {"name": "new_findings", "value": 3}
    assert found["metadata"] == {"error": 1, "warning": 1, "note": 1}


def test_default_reward_policy_weighs_passing_tests_up_and_new_findings_down() -> None:
    now = datetime.now(UTC)
    answers = [{"id": i, "tenant_id": 1, "messages": [], "response": i, "created_at": now} for i in "ab"]
    events = [
        {
            "id": "1",
            "tenant_id": 1,
            "interaction_id": "a",
            "kind": "outcome",
            "created_at": now,
            "value": {"name": "tests_passed", "value": True},
        },
        {
            "id": "2",
            "tenant_id": 1,
            "interaction_id": "b",
            "kind": "outcome",
            "created_at": now,
            "value": {"name": "new_findings", "value": 4},
        },
    ]
    rewards = compute_rewards(answers, events, RewardPolicy(), now)
    assert rewards["a"].reward == 1.0 and rewards["b"].reward == -1.0
    assert rewards["b"].weight < rewards["a"].weight  # findings are weak evidence next to a test run


BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    + ']><testsuite><testcase name="&lol9;"/></testsuite>'
)
HOSTILE_JUNIT = {
    "every test skipped": '<testsuite><testcase name="a"><skipped/></testcase></testsuite>',
    "billion laughs": BOMB,
    "external entity": '<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<testsuite><testcase name="&x;"/></testsuite>',
    "malformed": "<testsuite><testcase name='a'></testsuite>",
    "wrong schema": "<html><body><testcase/></body></html>",
    "empty run": "<testsuites><testsuite name='x'/></testsuites>",
    "too deep": "<testsuite>" + "<x>" * 100 + "</x>" * 100 + "</testsuite>",
    "unknown encoding": '<?xml version="1.0" encoding="x-klingon"?><testsuite><testcase/></testsuite>',
    "multi-byte encoding": '<?xml version="1.0" encoding="UTF-7"?><testsuite><testcase/></testsuite>',
    "shift-jis": '<?xml version="1.0" encoding="shift_jis"?><testsuite><testcase/></testsuite>',
}
HOSTILE_SARIF = {
    "not json": "{runs: []}",
    "NaN": '{"runs": [{"results": [{"level": NaN}]}]}',
    "no runs": '{"version": "2.1.0"}',
    "results not a list": '{"runs": [{"results": {"level": "error"}}]}',
    "unknown level": '{"runs": [{"results": [{"level": "fatal"}]}]}',
    "no run at all": '{"runs": []}',
    "a failed run": '{"runs": [{"invocations": [{"executionSuccessful": false}], "results": []}]}',
    "suppressions not a list": '{"runs": [{"results": [{"suppressions": "yes"}]}]}',
    "baselineState not a string": '{"runs": [{"results": [{"baselineState": 1}]}]}',
    "deep nesting": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("data", HOSTILE_JUNIT.values(), ids=HOSTILE_JUNIT.keys())
def test_hostile_junit_reports_are_refused_quickly(data: str) -> None:
    started = time.perf_counter()
    with pytest.raises(BadRequest, match=r"^junit report: "):
        parse_junit(data)
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("data", HOSTILE_SARIF.values(), ids=HOSTILE_SARIF.keys())
def test_hostile_sarif_files_are_refused(data: str) -> None:
    with pytest.raises(BadRequest, match=r"^sarif file: "):
        parse_sarif(data)


def test_huge_or_missing_report_is_one_line_error_on_the_command_line(
    tenant_key: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    huge = tmp_path / "huge.xml"
    with huge.open("wb") as f:
        f.truncate(MAX_REPORT_BYTES + 1)  # sparse: nothing is written, the size alone is refused
    with pytest.raises(PayloadTooLarge):
        parse_junit(b"<" * (MAX_REPORT_BYTES + 1))
    for args, message in (
        (["--from-junit", str(huge)], "the limit is"),
        (["--from-sarif", str(tmp_path / "nope.sarif")], "no such file"),
        (["--from-junit", str(tmp_path)], "not a regular file"),
    ):
        assert main(["outcome", "--tenant", "acme", "--interaction", "int-code", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    early = tmp_path / "early.xml"
    early.write_text(GREEN)
    # A CI can finish before the app logs the interaction: the outcome waits for it (pending), never lost.
    argv = ["outcome", "--tenant", "acme", "--interaction", "int-later", "--from-junit", str(early)]
    assert main(argv) == 0
    assert "\tpending\ttests_passed=True" in capsys.readouterr().out


@pytest.mark.skipif(not os.access("/proc/kmsg", os.R_OK), reason="/proc/kmsg is readable by root only")
@pytest.mark.timeout(60)
def test_a_report_file_whose_read_would_block_is_refused_not_waited_on(
    tenant_key: str, capsys: pytest.CaptureFixture
) -> None:
    # /proc/kmsg is a "regular" file (size 0) whose blocking read waits for the next kernel message.
    argv = ["outcome", "--tenant", "acme", "--interaction", "int-code", "--from-junit", "/proc/kmsg"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: junit report") and err.count("\n") == 1


def test_the_code_assistant_scenarios_ci_report_becomes_the_outcome_its_users_post() -> None:
    from tuneloop.sim.scenarios.code_assistant import ci_passes, ci_report, code_assistant

    prompt = next(p for p in code_assistant(0).pool() if p.topic == "palindrome")
    untyped = prompt.ideal.replace("(text: str) -> bool", "(text)")
    wrong = prompt.ideal.replace("letters == letters[::-1]", "True")
    for answer, passed, failed in ((prompt.ideal, True, 0), (untyped, False, 1), (wrong, False, 1)):
        [event] = junit_events("int-1", ci_report(prompt, answer))
        assert (
            event["value"]
            == {"name": "tests_passed", "value": passed}
            == {
                "name": "tests_passed",
                "value": ci_passes(prompt, answer),
            }
        )
        assert event["metadata"]["failed"] == failed and event["metadata"]["tests"] == 3


def test_sarif_counts_failed_results_that_no_accepted_suppression_covers() -> None:
    """A result of kind "pass" or "notApplicable" is no finding, and a rejected or still-reviewed suppression
    suppresses nothing (SARIF 2.1: 3.27.9, 3.35.3); ruff's own log counts as before."""
    log = sarif(
        {"ruleId": "A", "kind": "pass", "message": {"text": "ok"}},
        {"ruleId": "B", "kind": "notApplicable", "message": {"text": "n/a"}},
        {"ruleId": "C", "level": "error", "suppressions": [{"status": "rejected"}], "message": {"text": "c"}},
        {"ruleId": "D", "suppressions": [{"status": "underReview"}], "message": {"text": "d"}},
        {"ruleId": "E", "level": "error", "suppressions": [{"status": "accepted"}], "message": {"text": "e"}},
    )
    found = parse_sarif(log)
    assert (found.new, found.error, found.warning) == (2, 1, 1)
    assert parse_sarif(FINDINGS).new == 3
