"""`tuneloop chat` in a subprocess, fed through stdin, against a live tiny-model server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.store.repository import Store


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), model=str(tiny_model), max_batch_size=2)
    store = Store(settings.database_url)
    _, key = store.create_tenant("acme", redaction="off")
    store.close()
    with live_server(settings) as url:
        yield {"url": url, "key": key}


def chat(*args: str, stdin: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("TUNELOOP_URL", "TUNELOOP_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "tuneloop", "chat", "--max-tokens", "6", *args],
        input=stdin,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_chat_keeps_the_conversation_and_thumbs_land_on_the_last_answer(server: dict) -> None:
    result = chat(
        "--key", server["key"], stdin="Hello there\nAnd once more\n/thumbs up\n", TUNELOOP_URL=server["url"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [interaction_id] = re.findall(r"feedback accepted on (\S+)", result.stdout)
    http = httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {server['key']}"})
    stored = http.get(f"/v1/interactions/{interaction_id}").json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user"]
    assert stored["messages"][2]["content"] == "And once more"
    # Read as text, the subprocess's stdout has its \r\n (a random tiny model emits them) turned into \n.
    assert stored["response"].replace("\r\n", "\n").replace("\r", "\n") in result.stdout
    assert [(e["kind"], e["value"]) for e in stored["feedback"]] == [("thumbs", 1)]


def test_chat_errors_print_one_line_each_the_session_goes_on_and_the_exit_code_says_so(server: dict) -> None:
    result = chat(
        "--url",
        server["url"],
        "--model",
        "no-such-model",
        stdin="Hi\n/thumbs sideways\n/thumbs up\n",
        TUNELOOP_API_KEY=server["key"],
    )
    assert result.returncode == 1  # piped input: the script learns that lines failed
    errors = result.stderr.splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "no-such-model" in errors[0] and "/thumbs up|down" in errors[1] and "no answer yet" in errors[2]


def test_chat_without_a_key_exits_1_with_one_line(server: dict) -> None:
    result = chat("--url", server["url"], stdin="Hi\n")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no API key") and len(result.stderr.splitlines()) == 1


def test_chat_takes_the_url_an_openai_client_uses_and_refuses_one_without_a_scheme(server: dict) -> None:
    result = chat("--url", f"{server['url']}/v1", "--key", server["key"], stdin="Hi\n/thumbs up\n")
    assert result.returncode == 0 and "feedback accepted" in result.stdout, result.stderr
    result = chat("--url", server["url"].removeprefix("http://"), "--key", server["key"], stdin="Hi\n")
    assert result.returncode == 1
    assert result.stderr.startswith("error: server URL ") and len(result.stderr.splitlines()) == 1


def test_simulate_sends_a_scenarios_users_and_their_feedback_to_the_server(server: dict) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("TUNELOOP_URL", "TUNELOOP_API_KEY")}
    command = ["simulate", "--url", server["url"], "--turns", "4", "--users", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "tuneloop", *command],
        env={**environ, "TUNELOOP_API_KEY": server["key"]},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    http = httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {server['key']}"})
    assert http.get("/v1/feedback").json()["data"], result.stdout
    assert "interactions" in result.stdout.splitlines()[-1]


def test_escape_sequences_in_an_answer_are_not_sent_to_the_terminal(tmp_path: Path) -> None:
    from tests.serve.openai_standin import gateway_over_standin

    # OSC 52 writes the terminal's clipboard, CSI recolours or hides text, C1 CSI (U+009B) is ESC [.
    answer = r"Fine.\x1b]52;c;Y3VybCBldmlsLnNofHNo\x07 \x1b[8mhidden\x1b[0m \x9b2J\tdone\nnext"
    with gateway_over_standin(tmp_path) as gw:
        result = chat("--url", gw["url"], "--key", gw["key"], stdin=f"say: {answer}\n")
    assert result.returncode == 0, result.stderr
    assert "Fine.]52;c;Y3VybCBldmlsLnNofHNo [8mhidden[0m 2J\tdone\nnext\n" in result.stdout
    assert not {"\x1b", "\x07", "\x9b"} & set(result.stdout)
