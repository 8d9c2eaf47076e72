"""Policy and settings YAML files are untrusted: anything but a small, plain mapping is one clear error
naming the file, never a traceback, a hang or a walk over billions of aliased values."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tuneloop.config import Settings, load_policy_file, tenant_policy, tenant_policy_file
from tuneloop.errors import BadRequest, PayloadTooLarge
from tuneloop.loop.policy import LoopPolicy
from tuneloop.retrieve.policy import RetrievalPolicy


def _alias_bomb(indent: str = "") -> str:
    lines = [f'{indent}a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"{indent}a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    return "\n".join(lines) + "\n"


def _one_line(exc: pytest.ExceptionInfo[BadRequest], path: Path) -> str:
    message = exc.value.message
    assert str(path) in message and "\n" not in message, message
    return message


def test_a_yaml_alias_bomb_in_a_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "loop_policy.yaml"
    path.write_text("trainer_args:\n" + _alias_bomb("  "))  # a free-form field: validation would walk it
    started = time.monotonic()
    with pytest.raises(BadRequest) as exc:
        load_policy_file(path, LoopPolicy)
    assert "aliases counted as written out" in _one_line(exc, path)
    assert time.monotonic() - started < 5


def test_a_self_referencing_alias_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "loop_policy.yaml"
    path.write_text("lora: &a {x: *a}\n")
    with pytest.raises(BadRequest, match="aliases counted as written out"):
        load_policy_file(path, LoopPolicy)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"enabled: \xff\xfe\n", "not valid YAML"),  # not UTF-8
        (b"k: " + b"9" * 5000 + b"\n", "not valid YAML"),  # past Python's integer digit limit
        (b"[" * 100_000, "not valid YAML"),  # nested past the parser's recursion
        (b"a: " + b"{b: " * 5000 + b"1" + b"}" * 5000, "not valid YAML"),
        (b"!!python/object/apply:os.system ['true']\n", "not valid YAML"),
        (b"- 1\n- 2\n", "expected a mapping"),
        (b"k: 4\n" + b"x: [" * 70 + b"]" * 70, "nested deeper than"),
    ],
    ids=["invalid-utf8", "huge-int", "deep-flow", "deep-mapping", "python-tag", "list", "too-deep"],
)
def test_a_malformed_policy_file_is_one_line_naming_the_file(tmp_path: Path, data: bytes, says: str) -> None:
    path = tmp_path / "retrieval_policy.yaml"
    path.write_bytes(data)
    with pytest.raises(BadRequest) as exc:
        load_policy_file(path, RetrievalPolicy)
    assert says in _one_line(exc, path)


def test_a_utf16_policy_file_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "retrieval_policy.yaml"
    path.write_bytes("enabled: true\n".encode("utf-16"))
    assert load_policy_file(path, RetrievalPolicy).enabled is True


def test_a_policy_file_that_is_a_fifo_a_device_or_huge_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tenant_policy_file(tmp_path, "acme", RetrievalPolicy.filename)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)  # would block a reader forever
    with pytest.raises(BadRequest, match="not a regular file"):
        tenant_policy(tmp_path, "acme", RetrievalPolicy)
    fifo.unlink()
    fifo.symlink_to("/dev/zero")
    with pytest.raises(BadRequest, match="not a regular file"):
        tenant_policy(tmp_path, "acme", RetrievalPolicy)
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(2 * 1024**3)
    with pytest.raises(PayloadTooLarge, match="the limit is"):
        load_policy_file(big, RetrievalPolicy)


def test_a_broken_tenant_policy_is_named_from_the_home_not_by_the_servers_path(tmp_path: Path) -> None:
    # The error can reach the tenant's API client (a chat reads the retrieval policy).
    path = tenant_policy_file(tmp_path, "acme", RetrievalPolicy.filename)
    path.parent.mkdir(parents=True)
    path.write_text("enabled: [")
    with pytest.raises(BadRequest) as exc:
        tenant_policy(tmp_path, "acme", RetrievalPolicy)
    assert "TUNELOOP_HOME/policies/acme/retrieval_policy.yaml" in exc.value.message
    assert str(tmp_path) not in exc.value.message


def test_a_tenant_policy_that_links_to_nowhere_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    """A symlink whose target is gone (a config mount not there) was read as "no file": the defaults, maybe
    a looser gate, with no word; it is a file someone meant, and reading it fails by name."""
    path = tenant_policy_file(tmp_path, "acme", RetrievalPolicy.filename)
    path.parent.mkdir(parents=True)
    path.symlink_to(tmp_path / "mnt" / "config" / "retrieval_policy.yaml")
    with pytest.raises(BadRequest) as exc:
        tenant_policy(tmp_path, "acme", RetrievalPolicy)
    assert "TUNELOOP_HOME/policies/acme/retrieval_policy.yaml" in exc.value.message


def test_a_policy_file_of_thousands_of_unknown_keys_is_a_short_error(tmp_path: Path) -> None:
    path = tmp_path / "retrieval_policy.yaml"
    path.write_text("".join(f"key{i}: 1\n" for i in range(30_000)))
    with pytest.raises(BadRequest) as exc:
        load_policy_file(path, RetrievalPolicy)
    assert len(exc.value.message) < 1_000 and "and 29995 more" in exc.value.message


def test_a_home_with_a_tilde_or_a_relative_path_names_one_absolute_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An env file (compose, systemd) passes `~` unexpanded; a relative HOME would follow each process's cwd.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")
    monkeypatch.setenv("TUNELOOP_HOME", "~/tl")
    assert Settings().home == tmp_path / "tl"
    monkeypatch.setenv("TUNELOOP_HOME", "rel")
    settings = Settings()
    assert settings.home == tmp_path.parent / "rel"
    assert settings.database_url == f"sqlite:///{tmp_path.parent / 'rel' / 'tuneloop.db'}"


@pytest.mark.parametrize(
    ("name", "value"), [("tenant_rate_limit", 1e-320), ("db_busy_timeout", 1e308), ("session_hours", 1e300)]
)
def test_a_setting_past_what_its_arithmetic_can_hold_is_refused(name: str, value: float) -> None:
    """A Retry-After, a lock timeout in milliseconds and a session's end overflowed into a 500 or a crash."""
    from tuneloop.errors import ConfigError

    with pytest.raises(ConfigError, match=f"TUNELOOP_{name.upper()}"):
        Settings(**{name: value})


def test_a_setting_given_twice_in_a_policy_file_is_refused_naming_it(tmp_path: Path) -> None:
    policy = tmp_path / "loop_policy.yaml"
    policy.write_text("warm_start: false\nwarm_start: true\n")
    with pytest.raises(BadRequest, match="found the key 'warm_start' twice"):
        load_policy_file(policy, LoopPolicy)
    policy.write_text("base: &b {warm_start: false}\nwarm_start: true\n")  # an anchor's keys are its own
    with pytest.raises(BadRequest, match="base"):  # an unknown field, not a duplicate
        load_policy_file(policy, LoopPolicy)
