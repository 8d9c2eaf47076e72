"""`tuneloop review ...` in-process: create and list tasks, queue by hand and by the users' signals,
agreement, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.monitor.seed import give, log
from tuneloop.capture.events import InteractionIn
from tuneloop.cli import main
from tuneloop.cli.admin import open_capture
from tuneloop.clock import now_utc
from tuneloop.config import Settings
from tuneloop.store.repository import Store


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_review_commands_create_queue_and_report(tuneloop_home: Path, capsys: pytest.CaptureFixture) -> None:
    store = Store(Settings().database_url)
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    escalated = log(tenant, prompt="Why?", response="Because.", created_at=now_utc())
    give(tenant, escalated, "escalated", True, now_utc())
    other = log(tenant, prompt="How?", response="Like so.", created_at=now_utc())
    ask = InteractionIn(id="ticket-jane-7", messages=[{"role": "user", "content": "When?"}], response="Now.")
    open_capture().log_interaction(tenant, ask)  # stored keyed; the app still names it by its own id
    store.close()
    guidelines = tuneloop_home / "guide.txt"
    guidelines.write_text("Score 5 only when nothing is missing.")

    assert run(capsys, "review", "tasks", "--tenant", "acme", "--create", "audit", "--kind", "rubric",
               "--guidelines", str(guidelines))[0] == 0  # fmt: skip
    code, out, _ = run(capsys, "review", "queue", "--tenant", "acme", "--task", "audit", "--fill", "5")
    assert code == 0 and '"escalated": 1' in out and "no judge yet" in out
    assert run(capsys, "review", "add", other, "--tenant", "acme", "--task", "audit")[1].startswith(
        "queued ri-"
    )
    assert run(capsys, "review", "add", "ticket-jane-7", "--tenant", "acme", "--task", "audit")[0] == 0
    assert "3 waiting" in run(capsys, "review", "tasks", "--tenant", "acme")[1]
    code, out, _ = run(capsys, "review", "agreement", "--tenant", "acme")
    assert code == 0 and json.loads(out)[0]["alpha"] is None


@pytest.mark.parametrize(
    "args",
    [
        ("review", "tasks", "--tenant", "acme", "--create", "Bad Name"),
        ("review", "tasks", "--tenant", "acme", "--create", "t", "--overlap", "0"),
        ("review", "tasks", "--tenant", "acme", "--create", "t", "--guidelines", "/nonexistent/guide"),
        ("review", "add", "int-missing", "--tenant", "acme", "--task", "none"),
        ("review", "queue", "--tenant", "nobody", "--task", "x"),
        ("review", "queue", "--tenant", "acme", "--task", "x", "--fill", "-1"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tuneloop_home: Path, capsys: pytest.CaptureFixture, args) -> None:
    store = Store(Settings().database_url)
    store.create_tenant("acme")
    store.close()
    code, _, err = run(capsys, *args)
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_guidelines_from_a_device_a_fifo_a_huge_file_or_with_a_nul_are_refused(
    tuneloop_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store = Store(Settings().database_url)
    store.create_tenant("acme")
    store.close()
    os.mkfifo(tmp_path / "pipe.txt")  # no writer: reading it would hang
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(2 * 1024**3)  # read whole before the limit was applied
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"Prefer the shorter answer.\x00")  # SQLite would keep it; PostgreSQL refuses it
    for path, says in (("/dev/zero", "not a regular file"), (tmp_path / "pipe.txt", "not a regular file"),
                       (big, "the limit is 20000"), (nul, "NUL")):  # fmt: skip
        code, _, err = run(capsys, "review", "tasks", "--tenant", "acme", "--create", "t",
                           "--guidelines", str(path))  # fmt: skip
        assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_task_setting_is_named_by_the_flag_that_was_typed(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    store = Store(Settings().database_url)
    store.create_tenant("acme")
    store.close()
    for flag, value in (("--minutes", "0"), ("--create", "t" * 65)):
        args = ["--create", "t", flag, value] if flag != "--create" else [flag, value]
        code, _, err = run(capsys, "review", "tasks", "--tenant", "acme", *args)
        assert code == 1 and err.startswith(f"error: {flag}: "), err


def test_an_unknown_interaction_is_named_as_it_was_typed(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    store = Store(Settings().database_url)
    store.create_tenant("acme")
    store.close()
    assert run(capsys, "review", "tasks", "--tenant", "acme", "--create", "audit", "--kind", "rubric")[0] == 0
    code, _, err = run(capsys, "review", "add", "int-nope", "--tenant", "acme", "--task", "audit")
    assert code == 1 and "'int-nope' not found" in err and "ref-" not in err, err
