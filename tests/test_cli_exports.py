"""Portable outputs: `snapshot export` is a folder `datasets` loads as is; `versions export` is a PEFT adapter
naming its base by its public name (or a merged model) that transformers and PEFT load elsewhere."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from tests.signals.test_snapshots import POLICY, _seed
from tuneloop.cli import main
from tuneloop.clock import now_utc
from tuneloop.registry.artifacts import checksums
from tuneloop.registry.versions import Registry, Version
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import versions


@pytest.fixture
def acme(tuneloop_home: Path) -> TenantStore:
    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    tenant, _ = store.create_tenant("acme", redaction="off")
    return store.for_tenant(tenant)


@pytest.fixture(scope="module")
def lora(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA adapter on the tiny model, saved as the trainer saves one (with its model card)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    path = tmp_path_factory.mktemp("adapter")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config).save_pretrained(path)
    return path


def _adapter_version(tenant: TenantStore, adapter: Path, base_model: str) -> Version:
    return Registry(tenant).register(
        kind="adapter",
        base_model=base_model,
        actor="test",
        artifact_path=str(adapter),
        artifact_checksums=checksums(adapter),
        system_prompt="Be brief.",
    )


def _snapshot_by_cli(acme: TenantStore, tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[str, Path]:
    """Seed acme's feedback and snapshot it by `snapshot create --policy FILE`: the hash and the file."""
    _seed(acme)
    policy = tmp_path / "reward_policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY.model_dump(mode="json")))
    assert main(["snapshot", "create", "--tenant", "acme", "--policy", str(policy), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["hash"], policy


def test_snapshot_export_is_a_folder_datasets_loads_with_train_and_test_splits(
    acme: TenantStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from datasets import load_dataset

    digest, _ = _snapshot_by_cli(acme, tmp_path, capsys)
    out = tmp_path / "export"
    assert main(["snapshot", "export", digest, "--tenant", "acme", "--out", str(out)]) == 0

    preference = load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    sft = load_dataset(str(out), "sft", cache_dir=str(tmp_path / "cache"))

    def rows(name: str) -> int:
        return len((out / f"{name}.jsonl").read_text().splitlines())

    sizes = {"train": rows("preference_train"), "test": rows("preference_heldout")}
    assert {split: len(data) for split, data in preference.items()} == sizes
    assert sizes["train"] > 0 and sizes["test"] > 0
    assert preference["train"].column_names == ["prompt", "chosen", "rejected"]
    assert len(sft["train"]) == rows("sft_train") > 0


def test_versions_export_names_the_public_base_model_and_loads_with_peft(
    acme: TenantStore, lora: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    version = _adapter_version(acme, lora, "smollm2-135m-instruct")
    out = tmp_path / "portable"
    assert main(["versions", "export", version.id, "--tenant", "acme", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    texts = [p.read_text(errors="ignore") for p in out.iterdir() if p.suffix in (".json", ".md")]
    assert not any(str(tmp_path.parent) in text or str(tiny_model) in text for text in texts)
    weights = "adapter_model.safetensors"
    assert (out / weights).read_bytes() == (lora / weights).read_bytes()
    assert json.loads((out / "tuneloop_version.json").read_text())["system_prompt"] == "Be brief."
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(out))


def test_versions_export_merged_answers_as_the_adapter_on_its_base(
    acme: TenantStore, lora: Path, tiny_model: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    version = _adapter_version(acme, lora, str(tiny_model))
    out = tmp_path / "merged"
    assert main(["versions", "export", version.id, "--tenant", "acme", "--out", str(out), "--merged"]) == 0

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(lora)).eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)
    assert not (out / "adapter_config.json").exists()


def test_versions_export_refuses_a_used_folder_and_a_changed_adapter_in_one_line(
    acme: TenantStore, lora: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    copy = tmp_path / "adapter"
    shutil.copytree(lora, copy)
    version = _adapter_version(acme, copy, "smollm2-135m-instruct")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("x")
    assert main(["versions", "export", version.id, "--tenant", "acme", "--out", str(used)]) == 1
    (copy / "adapter_config.json").write_text("{}")
    assert main(["versions", "export", version.id, "--tenant", "acme", "--out", str(tmp_path / "new")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "not empty" in errors[0] and "changed since registration" in errors[1]
    assert (used / "keep.txt").read_text() == "x" and not (tmp_path / "new").exists()


def test_a_version_trained_on_an_erased_user_is_not_exported(
    acme: TenantStore, lora: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    version = _adapter_version(acme, lora, "smollm2-135m-instruct")
    acme.transaction(lambda tx: tx.update(versions, versions.c.id == version.id, erased_at=now_utc()))
    out = tmp_path / "out"
    assert main(["versions", "export", version.id, "--tenant", "acme", "--out", str(out)]) == 1
    assert "erased" in capsys.readouterr().err and not out.exists()


def test_export_to_a_folder_is_refused_and_leaves_the_folders_mode_alone(
    acme: TenantStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp is: an export once took it down to 0700 before failing
    assert main(["export", "--tenant", "acme", "--out", str(shared)]) == 1
    err = capsys.readouterr().err
    assert "is a folder" in err and len(err.strip().splitlines()) == 1
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_export_onto_the_store_or_the_secret_is_refused_and_changes_neither(
    acme: TenantStore, tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    """`--out $TUNELOOP_HOME/tuneloop.db` replaced every tenant's store with one tenant's export."""
    for name in ("tuneloop.db", "tuneloop.db-wal", "redaction.key"):
        target = tuneloop_home / name
        before = target.read_bytes() if target.exists() else None
        assert main(["export", "--tenant", "acme", "--out", str(target)]) == 1
        assert "tuneloop's own store or secret" in capsys.readouterr().err
        assert (target.read_bytes() if target.exists() else None) == before
    assert main(["tenants", "list"]) == 0


def test_export_to_a_fifo_no_one_reads_is_refused_not_waited_on(
    acme: TenantStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "pipe").chmod(0o644)  # past the umask
    assert main(["export", "--tenant", "acme", "--out", str(tmp_path / "pipe")]) == 1
    assert "cannot write it" in capsys.readouterr().err
    assert stat.S_IMODE((tmp_path / "pipe").stat().st_mode) == 0o644  # not a stored file: mode untouched


def test_export_to_a_full_disk_is_one_line_not_a_traceback(
    acme: TenantStore, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(acme)

    class Full(io.StringIO):
        def write(self, _: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sys, "stdout", Full())
    assert main(["export", "--tenant", "acme"]) == 1
    err = capsys.readouterr().err
    assert "stdout: cannot write the export (No space left on device)" in err


def test_snapshot_export_refuses_a_file_or_a_folder_holding_other_files(
    acme: TenantStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    digest, policy = _snapshot_by_cli(acme, tmp_path, capsys)
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("the project's own")
    (project / "setup.py").write_text("")
    for out, says in ((policy, "is not a folder"), (project, "holds other files")):
        assert main(["snapshot", "export", digest, "--tenant", "acme", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert (project / "README.md").read_text() == "the project's own"


def test_versions_export_to_an_existing_file_is_one_line(
    acme: TenantStore, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    version = _adapter_version(acme, adapter, "base")
    taken = tmp_path / "taken"
    taken.write_text("")
    for out in (taken, taken / "sub"):
        assert main(["versions", "export", version.id, "--tenant", "acme", "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "cannot write the export there" in err and err.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("command", [("gate", "run", "--version", "v-x"), ("snapshot", "create")])
def test_a_policy_file_that_does_not_exist_is_an_error_not_the_defaults(
    acme: TenantStore, tmp_path: Path, capsys: pytest.CaptureFixture, command: tuple[str, ...]
) -> None:
    _seed(acme)
    args = [*command, "--tenant", "acme", "--policy", str(tmp_path / "typo.yaml")]
    assert main(args) == 1
    assert "typo.yaml: cannot read it (No such file or directory)" in capsys.readouterr().err
