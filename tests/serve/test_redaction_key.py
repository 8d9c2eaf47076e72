"""The `hash` redaction key the server creates on first start: complete before it exists, one winner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneloop.config import Settings
from tuneloop.errors import ConfigError


def test_first_starts_racing_all_get_the_same_complete_key(tmp_path: Path) -> None:
    code = (
        "import sys; from tuneloop.config import Settings; print(Settings(home=sys.argv[1]).hash_key().hex())"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(6)
    ]
    keys = {p.communicate()[0].strip() for p in procs}
    assert len(keys) == 1 and len(keys.pop()) == 128
    assert [p.name for p in tmp_path.iterdir()] == ["redaction.key"]  # no temp file left behind
    assert (tmp_path / "redaction.key").stat().st_mode & 0o777 == 0o600


def test_an_empty_key_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "redaction.key").write_text("")
    with pytest.raises(ConfigError, match=r"is empty.*restore the key"):
        Settings(home=tmp_path).hash_key()


def test_an_empty_key_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TUNELOOP_REDACTION_KEY is empty"):
        Settings(home=tmp_path, redaction_key="  ").hash_key()
