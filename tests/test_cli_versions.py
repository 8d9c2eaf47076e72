from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuneloop.cli import main
from tuneloop.cli.admin import open_store
from tuneloop.errors import BadRequest
from tuneloop.registry.composition import compose
from tuneloop.registry.versions import Registry
from tuneloop.store.schema import audit_log


@pytest.fixture
def registry(tuneloop_home: Path) -> Registry:
    store = open_store(create=True)
    tenant, _ = store.create_tenant("acme")
    return Registry(store.for_tenant(tenant))


def _create(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["versions", "create", "--tenant", "acme", *args])
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def test_create_composes_production_with_a_prompt_and_decoding_and_audits_it(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    production = registry.register(
        kind="adapter",
        base_model="base",
        actor="test",
        snapshot_hash="s1",
        artifact_path="/adapters/v1",
        system_prompt="Be kind.",
        decoding={"top_p": 0.9},
    )
    registry.move(production.id, "gated", actor="test", reason="setup")
    registry.move(production.id, "production", actor="test", reason="setup")

    code, version_id, err = _create(
        capsys, "--system-prompt", "Answer in one sentence.", "--temperature", "0", "--max-tokens", "32"
    )
    assert code == 0 and f"from {production.id}" in err
    version = registry.get(version_id)
    assert (version.state, version.parent_id) == ("candidate", production.id)
    # The adapter and its lineage are the parent's; decoding settings not given are the parent's too.
    assert (version.artifact_path, version.snapshot_hash) == ("/adapters/v1", "s1")
    assert version.system_prompt == "Answer in one sentence."
    assert version.decoding == {"top_p": 0.9, "temperature": 0.0, "max_tokens": 32}
    [audit] = registry.tenant.all(audit_log, audit_log.c.subject == version_id)
    assert audit.action == "version.register"
    assert audit.details["parent"] == production.id and audit.details["reason"] == "composed by hand"
    # Held out on another snapshot than its adapter's training one would hide it from erasure's lineage.
    with pytest.raises(BadRequest, match="trained on snapshot s1"):
        compose(
            registry,
            parent=version,
            base_model="",
            actor="t",
            reason="t",
            system_prompt="Hi.",
            snapshot_hash="s2",
        )
    # A version with no adapter was only held out on its snapshot: one composed on it takes the newer one.
    light = compose(registry, parent=None, base_model="b", actor="t", reason="t", system_prompt="Hi.",
                    snapshot_hash="s1")  # fmt: skip
    newer = compose(registry, parent=light, base_model="", actor="t", reason="t", system_prompt="Hello.",
                    snapshot_hash="s2")  # fmt: skip
    assert (newer.parent_id, newer.snapshot_hash, newer.artifact_path) == (light.id, "s2", None)


def test_create_without_production_composes_the_base_model_from_a_prompt_file(
    registry: Registry, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes("\ufeffTu réponds en français.\n".encode())  # an editor's byte order mark, dropped
    code, version_id, _ = _create(capsys, "--system-prompt-file", str(prompt), "--reason", "french users")
    assert code == 0
    version = registry.get(version_id)
    assert version.parent_id is None and version.artifact_path is None
    assert version.system_prompt == "Tu réponds en français.\n" and version.decoding is None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--temperature", "2.5"), "temperature"),
        (("--top-p", "0"), "top_p"),
        (("--max-tokens", "0"), "max_tokens"),
        (("--repetition-penalty", "nan"), "repetition_penalty"),
        (("--system-prompt", "   "), "empty"),
        (("--system-prompt", "x" * 8_001), "at most 8000"),
        (("--system-prompt-file", "/nonexistent/prompt.txt"), "no such file"),
        ((), "nothing to compose"),
        (("--from", "v-missing", "--temperature", "0"), "not found"),
        (("--snapshot", "nosuchsnapshot", "--temperature", "0"), "snapshot"),
    ],
)
def test_bad_values_are_one_line_errors_and_register_nothing(
    registry: Registry, capsys: pytest.CaptureFixture, args: tuple[str, ...], says: str
) -> None:
    code, out, err = _create(capsys, *args)
    assert code == 1 and not out
    assert err.startswith("error: ") and says in err and len(err.splitlines()) == 1
    assert registry.list() == []


def test_binary_or_oversized_prompt_files_are_refused(
    registry: Registry, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    binary, big = tmp_path / "weights.bin", tmp_path / "big.txt"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 10)
    big.write_text("x" * 40_000)
    for path, says in (
        (binary, "not UTF-8 text"),
        (big, "over 8000 characters"),
        (tmp_path, "not a regular file"),
    ):
        code, _, err = _create(capsys, "--system-prompt-file", str(path))
        assert code == 1 and says in err
    assert registry.list() == []


# /proc/kmsg is a "regular" file (size 0) whose blocking read waits for the next kernel message; only root
# may open it. The timeout turns a regression into a failure rather than a hung run.
KMSG = Path("/proc/kmsg")
needs_kmsg = pytest.mark.skipif(not os.access(KMSG, os.R_OK), reason="/proc/kmsg is readable by root only")


@needs_kmsg
@pytest.mark.timeout(60)
def test_a_prompt_file_whose_read_would_block_is_refused_not_waited_on(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = _create(capsys, "--system-prompt-file", str(KMSG))
    assert code == 1 and not out and err.startswith("error: ") and len(err.splitlines()) == 1
    assert registry.list() == []


def test_a_candidate_identical_to_its_parent_is_refused(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    parent = registry.register(kind="adapter", base_model="base", actor="test", decoding={"temperature": 0.5})
    code, _, err = _create(capsys, "--from", parent.id, "--temperature", "0.5")
    assert code == 1 and "nothing differs" in err
    reward = registry.register(kind="reward_model", base_model="base", actor="test")
    code, _, err = _create(capsys, "--from", reward.id, "--temperature", "0")
    assert code == 1 and "is a reward_model" in err


def test_a_blocked_or_rolled_back_version_is_gated_again_as_a_copy_of_itself(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    for ended in ("blocked", "rolled_back"):
        parent = registry.register(
            kind="adapter", base_model="base", actor="test", decoding={"temperature": 0.5}
        )
        path = ["blocked"] if ended == "blocked" else ["gated", "canary", "rolled_back"]
        for state in path:
            registry.move(parent.id, state, actor="test", reason="test")
        code, version_id, err = _create(capsys, "--from", parent.id)
        assert code == 0, err
        copy = registry.get(version_id.splitlines()[-1])
        assert copy.state == "candidate" and copy.parent_id == parent.id
        assert copy.decoding == {"temperature": 0.5}


def test_a_system_prompt_may_name_the_company_but_never_hold_a_card_or_account_number(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    own = "You are Finly's assistant. Our support line is 415-555-0142, support@finly.com."
    code, out, _ = _create(capsys, "--system-prompt", own)
    assert code == 0 and registry.get(out.strip()).system_prompt == own
    code, _, err = _create(
        capsys, "--system-prompt", "Refund to card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00"
    )
    assert code == 1 and "holds CREDIT_CARD, IBAN_CODE" in err
    assert [v.system_prompt for v in registry.list()] == [own]


def test_train_adapter_checks_its_system_prompt_by_the_same_rules(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    code = main(["train", "adapter", "--tenant", "acme", "--snapshot", "abcdef", "--system-prompt", " "])
    assert code == 1 and "the system prompt is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "says"), [("[", "not valid YAML"), ("9" * 5_000, "not valid YAML"), ("&a [*a]", "values")]
)
def test_a_set_value_that_is_no_readable_yaml_is_one_line(
    registry: Registry, capsys: pytest.CaptureFixture, value: str, says: str
) -> None:
    """`--set KEY=VALUE` is read as a settings file is: a broken value, a huge integer or a self-referencing
    alias is a one-line error, not a traceback (the alias took 23 s and 1.3 GB first)."""
    code = main(
        ["train", "adapter", "--tenant", "acme", "--snapshot", "abcdef", "--set", f"report_to={value}"]
    )
    err = capsys.readouterr().err
    assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err


def test_a_version_trained_on_an_erased_user_cannot_be_composed_back_into_service(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    from tuneloop.clock import now_utc

    erased = registry.register(kind="adapter", base_model="base", actor="test", erased_at=now_utc())
    code, _, err = _create(capsys, "--from", erased.id, "--system-prompt", "Be kind.")
    assert code == 1 and "erased user" in err
    assert [v.id for v in registry.list()] == [erased.id]
