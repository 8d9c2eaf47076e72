from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import sqlalchemy as sa

from tuneloop.store.repository import Store


def tuneloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneloop", *args], capture_output=True, text=True, timeout=120
    )


def test_tenants_add_prints_the_key_once_on_its_own_line(tuneloop_home: Path) -> None:
    tuneloop("init")
    assert "no tenants yet" in tuneloop("tenants", "list").stdout  # a list that prints nothing looks broken
    result = tuneloop("tenants", "add", "acme")
    assert result.returncode == 0, result.stderr
    [key] = result.stdout.splitlines()
    assert key.startswith("tl-")
    assert Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}").authenticate(key).tenant.name == "acme"
    assert "acme" in tuneloop("tenants", "list").stdout


def test_a_command_on_a_home_without_a_store_says_so_and_creates_nothing(tuneloop_home: Path) -> None:
    for args in (("tenants", "list"), ("versions", "list", "--tenant", "acme"), ("audit", "verify")):
        result = tuneloop(*args)
        assert result.returncode != 0
        assert f"no store at {tuneloop_home / 'tuneloop.db'}" in result.stderr
        assert "TUNELOOP_HOME" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tuneloop_home / "tuneloop.db").exists()
    assert tuneloop("tenants", "key", "--admin").returncode == 0  # an admin key may come before any tenant


def test_bad_input_exits_non_zero_with_one_line(tuneloop_home: Path) -> None:
    tuneloop("tenants", "add", "acme")
    for args in (
        ("tenants", "add", "acme"),
        ("tenants", "add", "bad name!"),
        ("export", "--tenant", "nobody"),
    ):
        result = tuneloop(*args)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    for interval in ("-5", "nan", "1e400"):  # sleep() raised on some, never returned on NaN
        for command in ("loop", "worker"):
            result = tuneloop(
                command, *(("--tenant", "acme") if command == "loop" else ()), "--interval", interval
            )
            assert (
                result.returncode == 2 and f"argument --interval: {interval}: give seconds" in result.stderr
            )


def test_demo_refuses_zero_turns_and_a_busy_port_before_touching_its_home(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    home.mkdir()
    (home / "keep").write_text("x")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args, says in ((("--turns", "0"), "turns must be at least 1"), (("--port", port), "is in use")):
            result = tuneloop("demo", "--home", str(home), "--port", port, *args)
            assert result.returncode == 1 and says in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
    assert (home / "keep").exists()


def test_audit_verify_fails_after_one_row_is_tampered_with(tuneloop_home: Path) -> None:
    tuneloop("tenants", "add", "acme")
    assert tuneloop("audit", "verify").returncode == 0
    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    with store.write() as conn:
        conn.execute(sa.text('update audit_log set details = \'{"redaction": "off"}\' where seq = 1'))
    result = tuneloop("audit", "verify")
    assert result.returncode == 1 and "row 1" in result.stderr


def test_export_writes_interactions_with_their_feedback(tuneloop_home: Path, tmp_path: Path) -> None:
    key = tuneloop("tenants", "add", "acme", "--redaction", "off").stdout.strip()
    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    scoped = store.for_tenant(store.authenticate(key).tenant)
    scoped.log_interaction(
        {"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "a", "choices": ["a"]}, "d"
    )
    scoped.add_feedback(
        [({"id": "e1", "interaction_id": "i1", "kind": "thumbs", "value": 1, "source": "user"}, "h")]
    )
    lines = tuneloop("export", "--tenant", "acme").stdout.splitlines()
    assert [json.loads(line)["feedback"][0]["id"] for line in lines] == ["e1"]
    out = tmp_path / "acme.parquet"
    assert tuneloop("export", "--tenant", "acme", "--format", "parquet", "--out", str(out)).returncode == 0
    assert pq.read_table(out).num_rows == 1


def test_tenants_revoke_and_rotate_end_keys_with_audit_rows(tuneloop_home: Path) -> None:
    first = tuneloop("tenants", "add", "acme").stdout.strip()
    second = tuneloop("tenants", "key", "acme").stdout.strip()
    revoked = tuneloop("tenants", "revoke", first[:10])
    assert revoked.returncode == 0, revoked.stderr
    assert tuneloop("tenants", "revoke", first[:10]).stderr.startswith("error: no active API key")

    rotated = tuneloop("tenants", "rotate", "acme")
    assert rotated.returncode == 0, rotated.stderr
    [new] = rotated.stdout.splitlines()
    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    assert store.authenticate(new).tenant.name == "acme"
    assert not store.key_active(first) and not store.key_active(second)
    with store.read() as conn:
        actions = conn.execute(sa.text("select action from audit_log")).scalars().all()
    assert {"key.revoke", "key.rotate"} <= set(actions)
    assert tuneloop("audit", "verify").returncode == 0


def test_an_argument_that_is_not_utf8_is_one_line_not_a_traceback(capsys) -> None:
    from tuneloop.cli import main

    undecodable = b"x\xed\xa0\x80y".decode("utf-8", "surrogateescape")  # as Python reads such argv bytes
    for args in (
        ["versions", "show", undecodable, "--tenant", "acme"],
        ["versions", "create", "--tenant", "acme", "--system-prompt", undecodable],
        ["rollout", "status", "--tenant", undecodable],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: argument ") and "not UTF-8" in err and len(err.splitlines()) == 1


def test_a_bad_setting_store_url_or_port_is_one_line_naming_it(tuneloop_home: Path) -> None:
    cases = (
        ({"TUNELOOP_BACKEND": "bogus"}, ["tenants", "list"], "TUNELOOP_BACKEND"),
        ({"TUNELOOP_MAX_QUEUE": "-1"}, ["tenants", "list"], "TUNELOOP_MAX_QUEUE"),
        ({"TUNELOOP_DB_URL": "not a url"}, ["tenants", "list"], "TUNELOOP_DB_URL"),
        ({"TUNELOOP_DB_URL": "mysql://db/x"}, ["tenants", "list"], "MySQLdb"),
        ({"TUNELOOP_DB_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"}, ["tenants", "list"], "u:***@"),
        ({"TUNELOOP_DB_URL": "postgresql+psycopg://u:hunter2@db:port/x"}, ["tenants", "list"], "u:***@db"),
    )
    for env, args, says in cases:
        result = subprocess.run(
            [sys.executable, "-m", "tuneloop", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **env},
        )
        assert result.returncode == 1 and says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "hunter2" not in result.stderr
    result = tuneloop("serve", "--port", "99999")
    assert result.returncode == 2 and "give 1 to 65535" in result.stderr


def test_sigterm_stops_a_command_as_ctrl_c_does(tuneloop_home: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "tuneloop", "worker", "--interval", "1"], stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(8)  # imported and looping
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 130 and stderr.strip().endswith("interrupted")
    assert "alembic" not in stderr  # the migration library's plugin lines are not the worker's news
