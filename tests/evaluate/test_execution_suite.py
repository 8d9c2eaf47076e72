"""The execution suite runs both versions' code against a tenant's own tests, in the real sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.errors import BadRequest, PayloadTooLarge
from tuneloop.evaluate.generation import Arm, Evaluator
from tuneloop.evaluate.policy import ExecutionConfig, GatePolicy
from tuneloop.evaluate.suites import SUITES, execution
from tuneloop.evaluate.suites.base import CANDIDATE, PRODUCTION, GateContext
from tuneloop.store.repository import Store

TASKS = {
    "add": (
        "Write add(a, b) returning their sum.",
        "from solution import add\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    ),
    "middle": (
        "Write middle(xs) returning the middle item of a list.",
        "import unittest\nfrom solution import middle\n\nclass T(unittest.TestCase):\n"
        "    def test_odd(self):\n        self.assertEqual(middle([1, 2, 3]), 2)\n",
    ),
    "words": (
        "Write count_words(path) counting the words of a text file.",
        "from solution import count_words\n\n\ndef test_fixture():\n"
        "    assert count_words('data/words.txt') == 4\n",
    ),
}
RIGHT = {
    "add": "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```",
    "middle": "```python\ndef middle(xs: list) -> object:\n    return xs[len(xs) // 2]\n```",
    "words": "```python\ndef count_words(path: str) -> int:\n"
    "    with open(path) as f:\n        return len(f.read().split())\n```",
}
WRONG = {
    "add": "```python\ndef add(a, b):\n    return a - b\n```",
    "middle": "Take the element at index len(xs) // 2.",  # prose only: nothing to run
    "words": "```python\ndef count_words(path):\n    while True:\n        pass\n```",  # never returns
}


def write_tasks(root: Path) -> Path:
    for name, (prompt, test) in TASKS.items():
        (root / name).mkdir(parents=True)
        (root / name / "prompt.md").write_text(prompt)
        (root / name / f"test_{name}.py").write_text(test)
    (root / "words" / "data").mkdir()
    (root / "words" / "data" / "words.txt").write_text("one two\nthree four\n")
    return root


CFG = ExecutionConfig(timeout_seconds=1)


def test_candidate_whose_code_passes_fewer_tasks_than_production_is_blocked(tmp_path: Path) -> None:
    tasks = execution.load_tasks(write_tasks(tmp_path / "tasks"), 10)
    verdict = execution.compare(tasks, [WRONG[t.name] for t in tasks], [RIGHT[t.name] for t in tasks], CFG)
    assert not verdict.passed, verdict.reason
    assert verdict.metrics["candidate_pass_rate"] == 0 and verdict.metrics["production_pass_rate"] == 1
    assert (verdict.metrics["regressions"], verdict.metrics["regression_p"]) == (3, 0.125)
    by_task = {r["task"]: r["candidate"] for r in verdict.rows}
    assert by_task == {"add": "0/1 tests", "middle": "no code block", "words": "timed out"}


def test_candidate_no_worse_than_production_passes_and_findings_are_counted(tmp_path: Path) -> None:
    tasks = execution.load_tasks(write_tasks(tmp_path / "tasks"), 10)
    messy = {**RIGHT, "add": "```python\nimport os\ndef add(a, b):\n    return a + b\n```"}  # F401
    swapped = {**RIGHT, "add": WRONG["add"]}  # one regression and one fix: no evidence of worse
    verdict = execution.compare(tasks, [messy[t.name] for t in tasks], [RIGHT[t.name] for t in tasks], CFG)
    assert verdict.passed and verdict.metrics["candidate_pass_rate"] == 1, verdict.reason
    if execution.ruff_binary():
        assert (
            verdict.metrics["candidate_findings_per_answer"]
            > verdict.metrics["production_findings_per_answer"]
        )
    prod = [swapped[t.name] for t in tasks]
    cand = [{**RIGHT, "words": WRONG["words"]}[t.name] for t in tasks]
    assert execution.compare(tasks, cand, prod, CFG).passed


def _context(tmp_path: Path, evaluator: Evaluator) -> tuple[GateContext, Store]:
    store = Store(f"sqlite:///{tmp_path / 'gate.db'}")
    tenant_row, _ = store.create_tenant("acme")
    policy = GatePolicy()
    return GateContext(store.for_tenant(tenant_row), tmp_path, policy, None, None, None, evaluator), store  # type: ignore[arg-type]


def test_the_suite_is_registered_and_skipped_for_a_tenant_without_code_tasks(tmp_path: Path) -> None:
    assert "execution" in SUITES and GatePolicy().suites.execution.required
    ctx, store = _context(tmp_path, Evaluator())
    verdict = execution.run(ctx, ExecutionConfig())
    store.close()
    assert verdict.passed and verdict.metrics["skipped"]
    assert (
        verdict.reason.startswith("skipped: no code tasks in")
        and "policies/acme/code_tasks" in verdict.reason
    )


def test_both_versions_answer_the_tenants_tasks_through_the_evaluator(
    tmp_path: Path, tiny_model: Path
) -> None:
    evaluator = Evaluator()
    evaluator.add_arm(Arm(CANDIDATE, tiny_model))
    evaluator.add_arm(Arm(PRODUCTION, tiny_model, system_prompt="Answer with a Python code block."))
    ctx, store = _context(tmp_path, evaluator)
    write_tasks(tmp_path / "policies" / "acme" / "code_tasks")
    verdict = execution.run(ctx, ExecutionConfig(max_new_tokens=8, timeout_seconds=1))
    store.close()
    # A random-weight model writes no code: both versions fail every task, which is no regression.
    assert verdict.passed and verdict.metrics["tasks"] == 3 and verdict.metrics["regressions"] == 0
    assert {r["candidate"] for r in verdict.rows} == {"no code block"}
    assert len(evaluator.outputs(CANDIDATE)) == 3  # the PII probe scans these answers too


@pytest.mark.parametrize("problem", ["link", "no prompt", "no tests", "too large", "reserved name"])
def test_a_bad_task_folder_is_refused_with_its_name(tmp_path: Path, problem: str) -> None:
    root = write_tasks(tmp_path / "tasks")
    folder = root / "add"
    if problem == "link":
        (folder / "secret.txt").symlink_to("/etc/hostname")
    elif problem == "no prompt":
        (folder / "prompt.md").unlink()
    elif problem == "no tests":
        (folder / "test_add.py").rename(folder / "checks.py")
    elif problem == "too large":
        with (folder / "big.bin").open("wb") as f:
            f.truncate(2 * 1024**3)  # refused by its size, never read into memory
    else:
        (folder / "solution.py").write_text("")
    with pytest.raises(PayloadTooLarge if problem == "too large" else BadRequest, match=r"code task .*add"):
        execution.load_tasks(root, 10)
