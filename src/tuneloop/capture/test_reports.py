"""Task outcomes from a team's own tools: a JUnit XML test report or a SARIF findings file becomes
`outcome` events on the interaction whose code was applied.

Reports come from users, so they are untrusted: a size cap, no DTD or entity declarations (no XML bombs,
no external entities), a depth cap, and a clear BadRequest for anything that is not the expected schema.
"""

from __future__ import annotations

import hashlib
import json
import xml.parsers.expat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneloop.errors import BadRequest, PayloadTooLarge
from tuneloop.user_files import read_named

MAX_REPORT_BYTES = 10_000_000  # a large CI run's JUnit file is a few MB
MAX_DEPTH = 64
MAX_RESULTS = 1_000_000  # SARIF results counted before the file is refused
TESTS_PASSED = "tests_passed"
NEW_FINDINGS = "new_findings"
SARIF_LEVELS = ("error", "warning", "note")


@dataclass(frozen=True)
class TestCounts:
    """What a test report says: test cases run, failed (assertion), errored and skipped."""

    __test__ = False  # not a pytest class, despite the name
    tests: int
    failed: int
    errors: int
    skipped: int

    @property
    def passed(self) -> int:
        return self.tests - self.failed - self.errors - self.skipped

    @property
    def all_passed(self) -> bool:
        """At least one test ran and none failed or errored (skips do not count against)."""
        return self.passed > 0 and not (self.failed or self.errors)


@dataclass(frozen=True)
class Findings:
    """What a static-analysis run says: new findings (suppressed and baseline ones left out), by level."""

    new: int
    error: int
    warning: int
    note: int


def read_report(path: Path | str, what: str) -> bytes:
    """The bytes of a report file, refused (one clear line) when missing, not a regular file or too large."""
    # Read non-blocking and checked on the open file: /proc/kmsg is a "regular" file whose plain read waits
    # for ever, as would a FIFO swapped in for the path after a check by name.
    return read_named(Path(path), MAX_REPORT_BYTES, f"{what} {path}")


def _bounded(data: bytes | str, what: str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_REPORT_BYTES:
        raise PayloadTooLarge(f"{what}: larger than {MAX_REPORT_BYTES} bytes")
    return raw


def parse_junit(data: bytes | str) -> TestCounts:
    """Count the <testcase> elements of a JUnit XML report (a <failure>, <error> or <skipped> child marks
    each); the suites' own totals are not trusted. BadRequest for anything that is not such a report."""
    raw = _bounded(data, "junit report")
    counts = {"tests": 0, "failure": 0, "error": 0, "skipped": 0}
    stack: list[str] = []
    marked: list[str | None] = []  # per open testcase: the first outcome child seen

    def start(name: str, _attrs: dict) -> None:
        if not stack and name not in ("testsuites", "testsuite"):
            raise BadRequest(f"junit report: root element is <{name}>, not <testsuites> or <testsuite>")
        if len(stack) >= MAX_DEPTH:
            raise BadRequest(f"junit report: elements nested deeper than {MAX_DEPTH}")
        if name == "testcase":
            counts["tests"] += 1
            marked.append(None)
        elif stack and stack[-1] == "testcase" and name in ("failure", "error", "skipped"):
            marked[-1] = marked[-1] or name
        stack.append(name)

    def end(name: str) -> None:
        stack.pop()
        if name == "testcase" and (outcome := marked.pop()):
            counts[outcome] += 1

    def refuse(*_: Any) -> None:
        # No JUnit writer emits a DTD; refusing it outright rules out entity expansion and external fetches.
        raise BadRequest("junit report: DTDs and entity declarations are not allowed")

    parser = xml.parsers.expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(raw, True)
    except xml.parsers.expat.ExpatError as exc:
        raise BadRequest(f"junit report: not well-formed XML ({exc})") from exc
    except LookupError:  # expat asks Python for an encoding it does not know itself
        raise BadRequest("junit report: its XML declaration names an unknown encoding; send UTF-8") from None
    except ValueError:  # one Python knows but expat cannot use: UTF-7, Shift-JIS, EUC-JP, GB2312, ...
        raise BadRequest(
            "junit report: its XML declaration names a multi-byte encoding; send UTF-8"
        ) from None
    if counts["tests"] == 0:
        raise BadRequest("junit report: holds no <testcase> elements; nothing ran, so nothing to report")
    if counts["skipped"] == counts["tests"]:  # reported, it would read as tests_passed false: a failure
        raise BadRequest("junit report: every test was skipped; nothing ran, so nothing to report")
    return TestCounts(counts["tests"], counts["failure"], counts["error"], counts["skipped"])


def parse_sarif(data: bytes | str) -> Findings:
    """Count the new findings of a SARIF 2.1 log: failed results (`kind` "fail", SARIF's default) that no
    accepted suppression covers and, where a run compared against a baseline, only those whose
    `baselineState` is "new"; level "none" is not a finding. A log of no runs, or whose tool run failed
    with nothing to show, is refused: it says nothing about the code."""
    raw = _bounded(data, "sarif file")
    try:
        log = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"sarif file: not valid JSON ({str(exc)[:200]})") from exc
    runs = log.get("runs") if isinstance(log, dict) else None
    if not isinstance(runs, list):
        raise BadRequest('sarif file: no "runs" list at the top level; is this a SARIF 2.1 log?')
    if not runs:
        raise BadRequest("sarif file: no runs; the analysis ran nothing, so it says nothing of the code")
    levels = dict.fromkeys(SARIF_LEVELS, 0)
    seen = 0
    for i, run in enumerate(runs):
        results = run.get("results", []) if isinstance(run, dict) else None
        if not isinstance(results, list):
            raise BadRequest(f"sarif file: runs[{i}].results must be a list of result objects")
        if not results and _run_failed(run):
            raise BadRequest(f"sarif file: runs[{i}]: the tool's run failed (executionSuccessful false)")
        for j, result in enumerate(results):
            seen += 1
            if seen > MAX_RESULTS:
                raise PayloadTooLarge(f"sarif file: more than {MAX_RESULTS} results")
            if not isinstance(result, dict):
                raise BadRequest(f"sarif file: runs[{i}].results[{j}] is not an object")
            if _new_failure(result, f"runs[{i}].results[{j}]"):
                levels[result.get("level", "warning")] += 1  # SARIF's default level
    return Findings(sum(levels.values()), **levels)


def _run_failed(run: dict[str, Any]) -> bool:
    invocations = run.get("invocations")
    return isinstance(invocations, list) and any(
        isinstance(i, dict) and i.get("executionSuccessful") is False for i in invocations
    )


def _new_failure(result: dict[str, Any], where: str) -> bool:
    """Whether a result is a finding the change brought: failed, not suppressed, not in the baseline."""
    kind, level = result.get("kind", "fail"), result.get("level", "warning")
    suppressions, state = result.get("suppressions", []), result.get("baselineState", "new")
    if level not in (*SARIF_LEVELS, "none"):
        raise BadRequest(f"sarif file: {where}.level {str(level)[:20]!r} is unknown")
    if not isinstance(kind, str) or not isinstance(state, str):
        raise BadRequest(f"sarif file: {where}: kind and baselineState are strings")
    if not isinstance(suppressions, list) or not all(isinstance(x, dict) for x in suppressions):
        raise BadRequest(f"sarif file: {where}.suppressions must be a list of suppression objects")
    # A suppression is in force unless it is still under review or was rejected (SARIF 3.35.3).
    suppressed = any(x.get("status", "accepted") == "accepted" for x in suppressions)
    return kind == "fail" and level != "none" and state == "new" and not suppressed


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _event_id(prefix: str, interaction_id: str, raw: bytes) -> str:
    """The same report for the same interaction gets the same id, so a re-post is a duplicate."""
    digest = hashlib.sha256(interaction_id.encode() + b"\0" + raw).hexdigest()[:32]
    return f"{prefix}-{digest}"


def junit_events(interaction_id: str, data: bytes | str) -> list[dict[str, Any]]:
    """The `tests_passed` outcome event (with the counts as metadata) for a JUnit report."""
    counts = parse_junit(data)
    return [
        {
            "id": _event_id("junit", interaction_id, _bounded(data, "junit report")),
            "interaction_id": interaction_id,
            "kind": "outcome",
            "value": {"name": TESTS_PASSED, "value": counts.all_passed},
            "source": "system",
            "metadata": {**asdict(counts), "passed": counts.passed},
        }
    ]


def sarif_events(interaction_id: str, data: bytes | str) -> list[dict[str, Any]]:
    """The `new_findings` outcome event (the count, with counts per level as metadata) for a SARIF log."""
    findings = parse_sarif(data)
    return [
        {
            "id": _event_id("sarif", interaction_id, _bounded(data, "sarif file")),
            "interaction_id": interaction_id,
            "kind": "outcome",
            "value": {"name": NEW_FINDINGS, "value": findings.new},
            "source": "system",
            "metadata": {"error": findings.error, "warning": findings.warning, "note": findings.note},
        }
    ]
