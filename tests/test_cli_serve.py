"""`tuneloop serve --workers N`: server processes sharing one port and one store, replaced when one dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.postgres import free_port
from tuneloop.store.repository import Store


def _workers(parent: int) -> set[int]:
    """The worker processes of the `tuneloop serve` whose pid is `parent` (uvicorn spawns them)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            spawned = b"spawn_main" in (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone
        if ppid == parent and spawned:
            found.add(int(proc.name))
    return found


def _wait(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_workers_share_the_port_and_a_killed_one_is_replaced_without_losing_acknowledged_events(
    tuneloop_home: Path,
) -> None:
    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    _, key = store.create_tenant("acme", redaction="off")
    port = free_port()
    env = {**os.environ, "TUNELOOP_BACKEND": "none"}
    command = [sys.executable, "-m", "tuneloop", "serve", "--port", str(port), "--workers", "2"]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)

        def started() -> int:
            log.seek(0)
            return log.read().count(b"Application startup complete")

        try:
            _wait(lambda: started() >= 2, "two workers")
            first = _workers(server.pid)
            assert len(first) == 2
            url = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {key}"}
            httpx.post(
                f"{url}/v1/interactions",
                headers=headers,
                json={"id": "i1", "messages": [{"role": "user", "content": "q"}], "response": "a"},
            ).raise_for_status()
            acknowledged: list[str] = []

            def send(n: int, tag: str) -> None:
                for i in range(n):
                    event = {"id": f"{tag}-{i}", "interaction_id": "i1", "kind": "thumbs", "value": 1}
                    try:  # a fresh connection each time, so both workers take some
                        answer = httpx.post(f"{url}/v1/feedback", headers=headers, json=event, timeout=30)
                    except httpx.TransportError:
                        continue  # the worker that held it was killed: not acknowledged
                    if answer.status_code in (200, 201):
                        acknowledged.append(event["id"])

            send(40, "before")
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            send(40, "during")
            _wait(lambda: started() >= 3, "a replacement worker")
            replaced = _workers(server.pid)
            assert len(replaced) == 2 and victim not in replaced
            send(40, "after")
            assert sum(e.startswith("after") for e in acknowledged) == 40
            listed = httpx.get(f"{url}/v1/feedback", headers=headers, params={"limit": 1000})
            assert set(acknowledged) <= {e["id"] for e in listed.json()["data"]}

            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=60) == 0
            _wait(lambda: not any(Path(f"/proc/{pid}").exists() for pid in replaced), "workers to stop")
        finally:
            if server.poll() is None:
                server.kill()
    store.close()
    assert {f"before-{i}" for i in range(40)} <= set(acknowledged)


def test_workers_out_of_range_is_a_usage_error(tuneloop_home: Path) -> None:
    for bad, says in (("0", "give 1 or more"), ("65", "at most 64"), ("two", "not a whole number")):
        result = subprocess.run(
            [sys.executable, "-m", "tuneloop", "serve", "--workers", bad],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and says in result.stderr, result.stderr


def test_a_model_it_cannot_serve_is_one_line_before_any_worker_starts(
    tuneloop_home: Path, tmp_path: Path
) -> None:
    """A missing model was a traceback from the model load and exit 3; with workers, a setting only the app
    rejects made uvicorn restart each failing worker forever."""
    no_gguf = tmp_path / "model"
    no_gguf.mkdir()
    (no_gguf / "config.json").write_text("{}")
    for setting, says in (
        ({"TUNELOOP_MODEL": str(tmp_path / "missing")}, "is neither"),
        ({"TUNELOOP_MODEL": str(no_gguf), "TUNELOOP_ENGINE": "llamacpp"}, "holds no .gguf file"),
    ):
        for workers in ("1", "2"):
            result = subprocess.run(
                [sys.executable, "-m", "tuneloop", "serve", "--port", str(free_port()), "--workers", workers],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "TUNELOOP_BACKEND": "embedded", **setting},
            )
            assert result.returncode == 1 and says in result.stderr, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_worker_whose_settings_fail_ends_as_a_failed_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uvicorn.config import STARTUP_FAILURE

    from tuneloop.serve.app import from_environment

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    for name, value in (("HOME", tmp_path / "home"), ("MODEL", tmp_path / "model"), ("ENGINE", "llamacpp")):
        monkeypatch.setenv(f"TUNELOOP_{name}", str(value))
    monkeypatch.setenv("TUNELOOP_BACKEND", "embedded")
    with pytest.raises(SystemExit) as exited:
        from_environment()
    assert exited.value.code == STARTUP_FAILURE
