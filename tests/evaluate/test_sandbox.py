"""Real sandboxed processes: loops and fork bombs die at their limits; no network, no writes outside."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tuneloop.evaluate.sandbox import GUARD, NAMESPACES, Limits, isolation, run_python

MODES = [None, GUARD]  # the strongest this host offers, and the Python-level fallback


def _run(tmp_path: Path, source: str, limits: Limits | None = None, mode: str | None = None):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "main.py").write_text(source)
    return run_python(work / "main.py", work, limits or Limits(), mode=mode)


def _survivors(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                found.append(proc.name)
        except OSError:
            continue
    return found


def test_root_with_unshare_gets_namespaces() -> None:
    expected = NAMESPACES if os.geteuid() == 0 and shutil.which("unshare") else isolation()
    assert isolation() == expected


@pytest.mark.parametrize("mode", MODES)
def test_an_infinite_loop_is_killed_at_the_time_limit(tmp_path: Path, mode: str | None) -> None:
    started = time.monotonic()
    run = _run(tmp_path, "while True:\n    pass\n", Limits(cpu_seconds=1, wall_seconds=2), mode)
    assert run.returncode != 0 and time.monotonic() - started < 6
    assert not _survivors(str(tmp_path))


def test_a_fork_bomb_is_held_to_the_process_limit_and_dies_whole(tmp_path: Path) -> None:
    bomb = (
        "import os, time\nn = 0\nfor _ in range(500):\n    try:\n        pid = os.fork()\n"
        "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(120)\n        os._exit(0)\n"
        "    n += 1\nprint('forked', n, flush=True)\nwhile True:\n    pass\n"
    )
    started = time.monotonic()
    run = _run(tmp_path, bomb, Limits(cpu_seconds=2, wall_seconds=3, processes=16))
    forked = int(run.stdout.split()[-1]) if run.stdout else 0
    assert forked < 16, run  # the guard refuses fork outright; namespaces hold it to RLIMIT_NPROC
    assert run.returncode != 0 and time.monotonic() - started < 8
    time.sleep(0.2)
    assert not _survivors(str(tmp_path)), "sleeping children outlived the sandbox"


@pytest.mark.parametrize("mode", MODES)
def test_sandboxed_code_cannot_open_a_network_connection(tmp_path: Path, mode: str | None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(0.5)
        code = (
            "import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\n"
            "except OSError as exc:\n    print('refused', exc)\n"
        )
        run = _run(tmp_path, code, mode=mode)
        assert run.stdout.startswith("refused"), run
        with pytest.raises(TimeoutError):
            server.accept()


@pytest.mark.parametrize("mode", MODES)
def test_sandboxed_code_writes_only_inside_its_directory_with_a_stripped_environment(
    tmp_path: Path, mode: str | None
) -> None:
    outside = tmp_path / "outside.txt"
    code = (
        "import os\nopen('inside.txt', 'w').write('ok')\n"
        f"for path in ({str(outside)!r}, '/tmp/tuneloop-sandbox-escape'):\n"
        "    try:\n        open(path, 'w').write('escaped')\n        print('wrote', path)\n"
        "    except OSError:\n        pass\n"
        "print(sorted(os.environ))\n"
    )
    os.environ["TUNELOOP_TEST_SECRET"] = "x"
    try:
        run = _run(tmp_path, code, mode=mode)
    finally:
        del os.environ["TUNELOOP_TEST_SECRET"]
    assert run.returncode == 0, run.stderr
    assert "wrote" not in run.stdout and not outside.exists()
    assert not Path("/tmp/tuneloop-sandbox-escape").exists()
    assert (tmp_path / "work" / "inside.txt").read_text() == "ok"
    assert run.stdout.strip().endswith("['HOME', 'LANG', 'PATH', 'PYTHONHASHSEED']")
