"""The execution suite: both versions answer a tenant's code tasks, and their code runs against the tenant's
own tests in the sandbox (evaluate/sandbox.py). The candidate fails when it surely passes fewer tasks than
production: a one-sided exact McNemar test on the tasks whose verdict changed, as the golden suite does.
New static-analysis findings per answer (ruff, when installed) are reported beside the pass rates.

A task is a folder under HOME/policies/TENANT/code_tasks/ (or `suites.execution.path`): `prompt.md` (what
the developer asks), one or more `test_*.py` files that import the answer's code from `solution`, and any
other files (fixtures) the tests read. Tenants without task folders skip the suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import BadRequest
from tuneloop.evaluate.policy import ExecutionConfig
from tuneloop.evaluate.sandbox import Limits, isolation, new_token, run_python
from tuneloop.evaluate.stats import paired_change_p
from tuneloop.evaluate.suites.base import CANDIDATE, MAX_ROWS, PRODUCTION, GateContext, Verdict
from tuneloop.signals.code import code_of
from tuneloop.user_files import read_limited

PROMPT_FILES = ("prompt.md", "prompt.txt")
SOLUTION = "solution.py"
HARNESS = "_tuneloop_harness.py"
MAX_TASK_BYTES = 1_000_000
MAX_TASK_FILES = 200

# Runs inside the sandbox: import each test file, run its test_* functions and unittest cases, report counts
# on one line after a per-run token (a test's own output cannot pass for the report by accident).
HARNESS_SOURCE = r"""
import glob, importlib.util, inspect, json, os, sys, unittest
counts = {"tests": 0, "failed": 0, "errors": 0}
for path in sorted(glob.glob("test_*.py") + glob.glob("*_test.py")):
    name = path[:-3]
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except BaseException:
        counts["tests"] += 1
        counts["errors"] += 1
        continue
    for attr, obj in sorted(vars(module).items()):
        if getattr(obj, "__module__", None) != name:
            continue
        if attr.startswith("test") and inspect.isfunction(obj):
            counts["tests"] += 1
            try:
                obj()
            except AssertionError:
                counts["failed"] += 1
            except BaseException:
                counts["errors"] += 1
        elif inspect.isclass(obj) and issubclass(obj, unittest.TestCase):
            result = unittest.TestResult()
            unittest.defaultTestLoader.loadTestsFromTestCase(obj).run(result)
            counts["tests"] += result.testsRun
            counts["failed"] += len(result.failures)
            counts["errors"] += len(result.errors) + len(result.unexpectedSuccesses)
print("\n" + TOKEN + json.dumps(counts), flush=True)
os._exit(0)
"""


@dataclass(frozen=True)
class CodeTask:
    """A tenant's code task: the prompt, and the files (tests, fixtures) laid beside the answer's code."""

    name: str
    prompt: str
    files: dict[str, bytes]


@dataclass(frozen=True)
class TaskRun:
    """One answer's code against one task's tests."""

    tests: int
    failed: int
    errors: int
    timed_out: bool
    has_code: bool

    @property
    def passed(self) -> bool:
        return self.has_code and not self.timed_out and self.tests > 0 and not (self.failed or self.errors)

    def summary(self) -> str:
        if not self.has_code:
            return "no code block"
        if self.timed_out:
            return "timed out"
        if self.tests == 0:
            return "no report (crashed)"
        return "pass" if self.passed else f"{self.tests - self.failed - self.errors}/{self.tests} tests"


def tasks_dir(ctx: GateContext, cfg: ExecutionConfig) -> Path:
    return cfg.path or ctx.home / "policies" / ctx.tenant.tenant.name / "code_tasks"


def load_tasks(root: Path, limit: int) -> list[CodeTask]:
    """The task folders under `root`, in name order (at most `limit`); BadRequest names a bad one."""
    if not root.is_dir():
        return []
    return [load_task(folder) for folder in sorted(p for p in root.iterdir() if p.is_dir())[:limit]]


def load_task(folder: Path) -> CodeTask:
    """One task folder: refused when it has no prompt or test file, a link, or more than 1 MB in all."""
    files: dict[str, bytes] = {}
    prompt = None
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise BadRequest(f"code task {folder}: {rel} is a link; tasks hold plain files only")
        if not path.is_file() or "__pycache__" in rel:
            continue
        if rel in (SOLUTION, HARNESS):
            raise BadRequest(f"code task {folder}: {rel} is reserved for the answer's code")
        if len(files) >= MAX_TASK_FILES:
            raise BadRequest(f"code task {folder}: more than {MAX_TASK_FILES} files")
        # Read no further than the task's byte budget: a huge file is refused without being loaded.
        left = MAX_TASK_BYTES - sum(map(len, files.values()))
        data = read_limited(path, left, f"code task {folder}: {rel} (a task's files: {MAX_TASK_BYTES} bytes)")
        if rel in PROMPT_FILES and prompt is None:
            prompt = data.decode("utf-8", errors="replace").strip()
        else:
            files[rel] = data
    if not prompt:
        raise BadRequest(f"code task {folder}: no prompt.md (what the developer asks)")
    if not any(Path(rel).name.startswith("test_") and rel.endswith(".py") for rel in files):
        raise BadRequest(f"code task {folder}: no test_*.py file to run the answer against")
    return CodeTask(folder.name, prompt, files)


def run_task(task: CodeTask, answer: str, limits: Limits) -> TaskRun:
    """Lay the task's files and the answer's code in a throwaway folder and run the tests sandboxed."""
    code = code_of(answer)
    if code is None:
        return TaskRun(0, 0, 0, False, False)
    token = new_token()
    with tempfile.TemporaryDirectory(prefix="tuneloop-task-") as tmp:
        work = Path(tmp)
        for rel, data in task.files.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_bytes(data)
        (work / SOLUTION).write_text(code)
        (work / HARNESS).write_text(f"TOKEN = {token!r}\n{HARNESS_SOURCE}")
        run = run_python(work / HARNESS, work, limits)
    report = next((line for line in reversed(run.stdout.splitlines()) if line.startswith(token)), "")
    try:
        counts = json.loads(report[len(token) :])
        return TaskRun(
            int(counts["tests"]), int(counts["failed"]), int(counts["errors"]), run.timed_out, True
        )
    except (ValueError, KeyError, TypeError):  # no report: the run crashed, hung or was cut off
        return TaskRun(0, 0, 0, run.timed_out, True)


def ruff_binary() -> str | None:
    """ruff from this interpreter's environment or PATH; None when it is not installed."""
    beside = Path(sys.executable).parent / "ruff"
    return str(beside) if beside.is_file() else shutil.which("ruff")


def findings(code: str | None, ruff: str | None) -> int | None:
    """ruff's findings on the code (its default rules, no project config), or None without ruff or code.
    ruff reads the code as text and never runs it, so it needs no sandbox."""
    if ruff is None or code is None:
        return None
    try:
        out = subprocess.run(
            [ruff, "check", "--isolated", "--output-format", "json", "--stdin-filename", SOLUTION, "-"],
            input=code.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        return len(json.loads(out.stdout or b"[]"))
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def compare(
    tasks: list[CodeTask], candidate: list[str], production: list[str], cfg: ExecutionConfig
) -> Verdict:
    """Run both versions' answers on every task and apply the non-inferiority rule to the pass counts."""
    limits = Limits(
        cpu_seconds=cfg.timeout_seconds, wall_seconds=cfg.timeout_seconds * 2, memory_mb=cfg.memory_mb
    )
    jobs = [(t, answer) for t, c, p in zip(tasks, candidate, production, strict=True) for answer in (c, p)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # each run is its own process; two keep a small box busy
        runs = list(pool.map(lambda job: run_task(job[0], job[1], limits), jobs))
    ruff = ruff_binary()
    rows, found = [], {CANDIDATE: [], PRODUCTION: []}
    for i, task in enumerate(tasks):
        cand, prod = runs[2 * i], runs[2 * i + 1]
        counts = [findings(code_of(a), ruff) for a in (candidate[i], production[i])]
        for arm, count in zip((CANDIDATE, PRODUCTION), counts, strict=True):
            if count is not None:
                found[arm].append(count)
        rows.append(
            {
                "task": task.name,
                "candidate": cand.summary(),
                "production": prod.summary(),
                "regression": prod.passed and not cand.passed,
                "fixed": cand.passed and not prod.passed,
                "candidate_findings": counts[0],
                "production_findings": counts[1],
            }
        )
    regressions = sum(r["regression"] for r in rows)
    fixed = sum(r["fixed"] for r in rows)
    p = paired_change_p(regressions, fixed)
    n = len(rows)
    metrics = {
        "tasks": n,
        "candidate_pass_rate": round(sum(r["candidate"] == "pass" for r in rows) / n, 4),
        "production_pass_rate": round(sum(r["production"] == "pass" for r in rows) / n, 4),
        "regressions": regressions,
        "fixed": fixed,
        "regression_p": round(p, 4),
        "isolation": isolation(),
        **{f"{arm}_findings_per_answer": round(sum(v) / len(v), 3) for arm, v in found.items() if v},
    }
    reason = (
        f"candidate passes {metrics['candidate_pass_rate']:.0%} of {n} code tasks, production "
        f"{metrics['production_pass_rate']:.0%}: {regressions} regressed, {fixed} fixed "
        f"(one-sided McNemar p {p:.2f}; fails below alpha {cfg.alpha})"
    )
    return Verdict(p >= cfg.alpha, reason, metrics, rows[:MAX_ROWS])


def run(ctx: GateContext, cfg: ExecutionConfig) -> Verdict:
    """Both versions answer the tenant's code tasks; skipped (passed) for a tenant without any."""
    root = tasks_dir(ctx, cfg)
    tasks = load_tasks(root, cfg.max_tasks)
    if not tasks:
        return Verdict(True, f"skipped: no code tasks in {root}", {"skipped": True, "path": str(root)})
    prompts = [[{"role": "user", "content": task.prompt}] for task in tasks]
    candidate = ctx.evaluator.generate(CANDIDATE, prompts, cfg.max_new_tokens)
    production = ctx.evaluator.generate(PRODUCTION, prompts, cfg.max_new_tokens)
    verdict = compare(tasks, candidate, production, cfg)
    verdict.metrics["path"] = str(root)
    return verdict
