"""What commands print: --version, exit codes, --json documents without progress, stage progress on stderr,
and `tuneloop serve`'s JSON log lines."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.live import serve_app
from tests.signals.test_snapshots import POLICY, _seed
from tuneloop.cli import main
from tuneloop.cli.output import turn_exit_code
from tuneloop.cli.serve import uvicorn_options
from tuneloop.config import Settings
from tuneloop.serve.app import create_app
from tuneloop.store.repository import Store


@pytest.fixture
def policy(tuneloop_home: Path, tmp_path: Path) -> Path:
    """Tenant acme with feedback, and a reward policy file that needs no embedding model."""
    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    tenant, _ = store.create_tenant("acme", redaction="off")
    _seed(store.for_tenant(tenant))
    path = tmp_path / "reward_policy.yaml"
    path.write_text(yaml.safe_dump(POLICY.model_dump(mode="json")))
    return path


def test_version_usage_and_error_exit_codes(tuneloop_home: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.startswith("tuneloop 0.")
    with pytest.raises(SystemExit) as usage:
        main(["snapshot", "list", "--bogus"])
    assert usage.value.code == 2
    capsys.readouterr()
    assert main(["snapshot", "list", "--tenant", "nobody", "--json"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_json_flag_prints_one_document_and_no_progress(policy: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["snapshot", "create", "--tenant", "acme", "--policy", str(policy), "--json"]) == 0
    created = capsys.readouterr()
    assert created.err == ""
    digest = json.loads(created.out)["hash"]

    assert main(["snapshot", "list", "--tenant", "acme", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["hash"] == digest and listed["counts"]["pairs_train"] > 0
    assert main(["snapshot", "show", digest[:8], "--tenant", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"]["near_duplicate_threshold"] == 1.0
    assert main(["rollout", "status", "--tenant", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) is None


def test_long_work_prints_each_stage_with_its_time_on_stderr(
    policy: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["snapshot", "create", "--tenant", "acme", "--policy", str(policy)]) == 0
    out, err = capsys.readouterr()
    assert len(out.split()) == 1  # stdout holds the result alone, for $(...)
    started, done, *_ = err.splitlines()
    assert started == "… snapshot of acme's signals"
    assert done.startswith("✓ snapshot of acme's signals (") and done.endswith("s)")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the loggers `tuneloop serve`'s JSON configuration takes over, for the tests after this one."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "tuneloop", "tuneloop.access")
    saved = {n: (lg.handlers[:], lg.propagate, lg.level) for n in names if (lg := logging.getLogger(n))}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate, logger.level = handlers, propagate, level


def test_serve_logs_json_lines_with_the_requests_fields(
    tmp_path: Path, capfd: pytest.CaptureFixture, restore_logging: None
) -> None:
    settings = Settings(home=tmp_path, backend="none", log_format="json")
    with serve_app(create_app(settings), **uvicorn_options(settings)) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
    entries = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    [ready] = [e for e in entries if e.get("route") == "/readyz"]
    assert (ready["logger"], ready["method"], ready["status"]) == ("tuneloop.access", "GET", 200)
    assert any(e["logger"] == "uvicorn.error" and "startup complete" in e["message"] for e in entries)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_access_lines_name_the_route_never_the_ids_in_a_path(
    tmp_path: Path, capfd: pytest.CaptureFixture, restore_logging: None, log_format: str
) -> None:
    settings = Settings(home=tmp_path, backend="none", log_format=log_format)
    with serve_app(create_app(settings), **uvicorn_options(settings)) as url:
        httpx.get(f"{url}/v1/interactions/jane-doe-555-0142")
        httpx.get(f"{url}/v1/feedback?interaction_id=jane-doe-555-0142")
        httpx.get(f"{url}/no/such/jane-doe-555-0142")
    logs = "".join(capfd.readouterr())  # uvicorn writes access lines to stdout, JSON lines to stderr
    assert "jane" not in logs
    assert "/v1/interactions/{interaction_id}" in logs and "<unmatched>" in logs


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_access_lines_keep_method_route_and_status_but_never_the_client_address(
    tmp_path: Path, capfd: pytest.CaptureFixture, restore_logging: None, log_format: str
) -> None:
    settings = Settings(home=tmp_path, backend="none", log_format=log_format)
    # A client address of its own, so no other line (uvicorn's "running on 127.0.0.1") can match it.
    client = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with serve_app(create_app(settings), **uvicorn_options(settings)) as url, client:
        assert client.get(f"{url}/readyz").status_code == 200
    out, err = capfd.readouterr()
    assert "127.0.0.2" not in out + err
    if log_format == "text":
        assert '"GET /readyz HTTP/1.1" 200' in out
    else:
        [ready] = [e for e in map(json.loads, err.splitlines()) if e.get("route") == "/readyz"]
        assert "client" not in ready and (ready["method"], ready["status"]) == ("GET", 200)


def test_a_loop_turn_that_ends_blocked_or_rolled_back_exits_3_and_a_failed_one_1() -> None:
    codes = {o: turn_exit_code(o) for o in (None, "promoted", "skipped", "blocked", "rolled_back", "failed")}
    assert codes == {None: 0, "promoted": 0, "skipped": 0, "blocked": 3, "rolled_back": 3, "failed": 1}


def test_loop_once_prints_what_its_look_did_or_why_nothing_ran(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}").create_tenant("acme")

    assert main(["loop", "--tenant", "acme", "--once", "--now"]) == 0
    forced = capsys.readouterr()
    assert main(["loop", "--tenant", "acme", "--once"]) == 0
    idle = capsys.readouterr()

    assert (
        forced.out
        == "turn 1 (manual) started; ended skipped: tenant acme has no feedback yet; nothing to snapshot\n"
    )
    assert idle.out == (
        "no turn ran: 0 new feedback events since turn 1 started, and a turn starts at 200 (min_new_events); "
        "`--now` starts one anyway\n"
    )
    # Each stage run says so on stderr as it starts and ends: a turn trains for minutes.
    assert (
        forced.err.startswith("… turn 1: rerank\n✓ turn 1: rerank (") and "… turn 1: snapshot\n" in forced.err
    )
    assert idle.err == ""


def test_loop_once_names_the_stage_an_open_turn_waits_at(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuneloop.loop.turns import advance_turn, start_turn
    from tuneloop.registry.versions import Registry

    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    (tuneloop_home / "policies" / "acme").mkdir(parents=True)
    (tuneloop_home / "policies" / "acme" / "loop_policy.yaml").write_text("require_approval: true\n")
    candidate = Registry(tenant).register(kind="adapter", base_model="base", actor="test")
    Registry(tenant).move(candidate.id, "gated", actor="test", reason="passed the gate")
    advance_turn(tenant, start_turn(tenant, "manual", "gate"), "gate", {"candidate": candidate.id})

    assert main(["loop", "--tenant", "acme", "--once"]) == 0

    assert capsys.readouterr().out == (
        "turn 1 (manual) continued; waiting at approval for a person's decision "
        "(`tuneloop versions approve|reject`)\n"
    )


def test_tenants_and_versions_list_and_show_as_json(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuneloop.registry.versions import Registry

    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    tenant, _ = store.create_tenant("acme", redaction="off")
    version = Registry(store.for_tenant(tenant)).register(kind="adapter", base_model="m", actor="test")
    assert main(["tenants", "list", "--json"]) == 0
    assert [t["name"] for t in json.loads(capsys.readouterr().out)] == ["acme"]
    assert main(["versions", "list", "--tenant", "acme", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["state"]) == (version.id, "candidate")
    assert main(["versions", "show", version.id, "--tenant", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["base_model"] == "m"


def test_versions_list_says_why_each_version_is_in_its_state(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuneloop.registry.versions import Registry

    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    tenant, _ = store.create_tenant("acme", redaction="off")
    registry = Registry(store.for_tenant(tenant))
    version = registry.register(kind="adapter", base_model="m", actor="test")
    registry.move(version.id, "blocked", actor="test", reason="superseded by v-later")
    assert main(["versions", "list", "--tenant", "acme"]) == 0
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith(
            "\tblocked\tsnapshot=-\tcreated="
            + (f"{version.created_at:%Y-%m-%d %H:%M}\twhy=superseded by v-later")
        )
    )
    assert main(["versions", "list", "--tenant", "acme", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["why"] == "superseded by v-later"


def test_show_without_json_prints_key_value_lines_not_json(
    policy: Path, capsys: pytest.CaptureFixture
) -> None:
    from tuneloop.registry.versions import Registry

    assert main(["snapshot", "create", "--tenant", "acme", "--policy", str(policy), "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)["hash"]
    assert main(["snapshot", "show", digest[:8], "--tenant", "acme"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert f"hash: {digest}" in shown and "counts:" in shown
    assert any(line.startswith("  pairs_train: ") for line in shown)

    store = Store(Settings().database_url)
    version = Registry(store.for_tenant(store.tenant_by_name("acme"))).register(
        kind="adapter", base_model="m", actor="test"
    )
    store.close()
    assert main(["versions", "show", version.id, "--tenant", "acme"]) == 0
    out = capsys.readouterr().out
    assert f"id: {version.id}" in out.splitlines() and not out.lstrip().startswith("{")


def test_a_reader_that_closes_stdout_early_ends_the_command_quietly(tuneloop_home: Path) -> None:
    store = Store(Settings().database_url)
    store.create_tenant("acme")
    store.close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `tuneloop ... | head` once head has its lines
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tuneloop", "tenants", "list", "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1 and result.stderr == ""  # once a BrokenPipeError traceback


def test_ctrl_c_while_a_command_starts_is_an_interrupt_not_a_traceback(tuneloop_home: Path) -> None:
    # The command groups take seconds to import; a Ctrl-C among those imports printed a traceback.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneloop", "tenants", "list"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job starts with SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: give the command the terminal's default, as a user's shell does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130, or death by the SIGINT itself (once in a CI run of dozens, after the message): a shell reports
    # both as $? = 130. What matters is the one line instead of a traceback.
    assert err == "interrupted\n" and proc.returncode in (130, -signal.SIGINT)


def test_an_empty_list_says_so_and_json_stays_an_empty_array(tuneloop_home: Path, capsys) -> None:
    from tuneloop.cli import main

    store = Store(Settings().database_url)
    store.create_tenant("acme")
    store.close()
    for args, says in ((["versions", "list"], "no versions yet"), (["snapshot", "list"], "no snapshots yet")):
        assert main([*args, "--tenant", "acme"]) == 0
        assert says in capsys.readouterr().out
        assert main([*args, "--tenant", "acme", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []


def test_serve_on_a_taken_port_says_so_before_loading_anything_and_exits_1(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "--port" in err


def test_promoting_a_canary_no_look_has_measured_warns_that_it_ends_on_your_word(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.rollout.canary_traffic import gated_version
    from tuneloop.rollout.controller import start_canary
    from tuneloop.rollout.policy import RolloutPolicy
    from tuneloop.signals.policy import RewardPolicy

    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    exp = start_canary(
        tenant, gated_version(tenant), RolloutPolicy(), reward_policy=RewardPolicy(), actor="test"
    )

    assert main(["rollout", "promote", "--tenant", "acme", "--reason", "by hand"]) == 0

    out, err = capsys.readouterr()
    assert f"experiment {exp.id}: promoted" in out
    assert f"warning: no look has measured {exp.id} yet" in err


def test_rollout_status_shows_a_trial_as_its_arms_without_a_canarys_fields(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    """A new team read a trial's first candidate as its treatment, at 100 % on a ramp it never used."""
    from tuneloop.registry.versions import Registry
    from tuneloop.rollout.arms import start_arms
    from tuneloop.rollout.policy import RolloutPolicy
    from tuneloop.signals.policy import RewardPolicy

    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    registry = Registry(tenant)
    candidates = []
    for _ in range(2):
        version = registry.register(kind="adapter", base_model="base", actor="t")
        registry.move(version.id, "gated", actor="t", reason="t")
        candidates.append(version.id)
    start_arms(tenant, candidates, RolloutPolicy(), reward_policy=RewardPolicy(), actor="t")
    assert main(["rollout", "status", "--tenant", "acme", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "multi-arm trial" and [a["version"] for a in shown["arms"][1:]] == candidates
    assert not {"treatment_version", "share", "step"} & set(shown) and "ramp" not in shown["policy"]
    assert main(["rollout", "status", "--tenant", "acme"]) == 0
    assert "kind: multi-arm trial" in capsys.readouterr().out


def test_a_turn_whose_adapter_was_blocked_says_its_light_trial_shipped() -> None:
    from datetime import UTC, datetime

    from tuneloop.cli.loop import tick_summary
    from tuneloop.loop.turns import DONE, Turn

    report = {
        "gate": {"reasons": ["drift: 18 degenerate answers"]},
        "light_trial": {"outcome": "promoted", "winner": "v-1"},
    }
    turn = Turn(1, "feedback:216", DONE, "blocked", report, datetime.now(UTC), datetime.now(UTC))

    assert tick_summary(turn, started=False) == (
        "turn 1 (feedback:216) continued; ended blocked: drift: 18 degenerate answers; "
        "its light trial promoted v-1"
    )


def test_a_look_that_ran_for_minutes_says_how_far_into_its_turn_it_is() -> None:
    """A look that trained and gated for 36 minutes said "turn 1 started; waiting at canary", as if the
    turn had just begun."""
    from datetime import UTC, datetime, timedelta

    from tuneloop.cli.loop import tick_summary
    from tuneloop.loop.turns import Turn

    began = datetime.now(UTC) - timedelta(minutes=36, seconds=10)
    turn = Turn(1, "feedback:200", "canary", None, {}, began, began)
    assert tick_summary(turn, started=True) == (
        "turn 1 (feedback:200) started 36 min ago; waiting at canary for more users' feedback"
    )


def test_a_running_loop_says_a_waiting_turn_once_not_at_every_look(capsys: pytest.CaptureFixture) -> None:
    """Once a look said how many minutes into its turn it was, each look at a waiting canary printed again;
    the look after the one that started the turn said "continued" and the rest of the line again."""
    from datetime import UTC, datetime, timedelta

    from tuneloop.cli.loop import Unrepeated
    from tuneloop.loop.turns import DONE, Turn

    def turn(minutes: int, stage: str = "canary", outcome: str | None = None) -> Turn:
        began = datetime.now(UTC) - timedelta(minutes=minutes, seconds=10)
        return Turn(1, "manual", stage, outcome, {}, began, began)

    say = Unrepeated()
    say(turn(5), started=True)
    for minutes in (5, 6, 7):
        say(turn(minutes), started=False)
    say(turn(8, DONE, "promoted"), started=False)
    assert capsys.readouterr().err.splitlines() == [
        "turn 1 (manual) started 5 min ago; waiting at canary for more users' feedback",
        "turn 1 (manual) continued, 8 min in; ended promoted",
    ]


def test_a_waiting_canary_shows_its_users_estimate_and_expected_decision_as_they_move(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A canary that ran for an hour showed one line, "waiting at canary", until it decided."""
    from datetime import UTC, datetime

    from tuneloop.cli import loop as cli_loop
    from tuneloop.loop.turns import Turn
    from tuneloop.rollout.experiments import Experiment

    now = datetime(2026, 12, 7, 16, 0, tzinfo=UTC)
    turn = Turn(2, "feedback:200", "canary", None, {}, datetime.now(UTC), None)

    def canary(users: int, low: float) -> Experiment:
        test = {
            "effect": 0.21,
            "ci_low": low,
            "ci_high": 0.9,
            "users_control": users,
            "users_treatment": users + 1,
        }
        decision = {"test": test, "design": {"expected_decision_at": "2026-12-07T16:40:00+00:00"}}
        return Experiment("exp-1", "v-a", "v-b", "running", 0.5, 0, now, {}, decision, now, now, None)

    clock = iter([0.0, 60.0, 400.0, 401.0])
    monkeypatch.setattr(cli_loop.time, "monotonic", lambda: next(clock))
    say = cli_loop.Unrepeated()
    say(turn, started=False, live=canary(10, -0.4))
    say(turn, started=False, live=canary(12, -0.3))  # moved, but a minute after the last line
    say(turn, started=False, live=canary(20, -0.1))
    say(turn, started=False, live=canary(20, -0.1))  # unchanged
    assert capsys.readouterr().err.splitlines() == [
        "turn 2 (feedback:200) continued; waiting at canary for more users' feedback (v-b on 11 users "
        "against 10: +0.21 [-0.40, +0.90]; expected to decide by 16:40 UTC)",
        "turn 2 (feedback:200) continued; waiting at canary for more users' feedback (v-b on 21 users "
        "against 20: +0.21 [-0.10, +0.90]; expected to decide by 16:40 UTC)",
    ]
