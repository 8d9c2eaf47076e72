"""Which files under HOME an erasure may change: its own tenant's, told apart by id and name where each is
used, never through a hard link, and never by crashing on a file it cannot read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuneloop.privacy import residue
from tuneloop.privacy.residue import Needles, Owner, scrub_home

TEXT = "Please close my savings account before the move abroad"
NEEDLES = Needles.of([TEXT], [])
OTHER_ID = "b" * 32
# A tenant may be named like another's id: names match policies/, ids reports/ and jobs/.
OWNER = Owner(id="a" * 32, name=OTHER_ID)


def _write(home: Path, name: str, text: str) -> Path:
    path = home / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_tenant_named_like_another_tenants_id_never_touches_that_tenants_reports(tmp_path: Path) -> None:
    theirs = _write(tmp_path, f"reports/{OTHER_ID}/v-1/report.json", f'{{"prompt": "{TEXT}"}}')
    ours = _write(tmp_path, f"reports/{OWNER.id}/v-1/report.json", f'{{"prompt": "{TEXT}"}}')

    found = scrub_home(tmp_path, NEEDLES, OWNER, [])

    assert theirs.exists() and not ours.exists()
    assert found.removed == [f"reports/{OWNER.id}/v-1/report.json"] and found.left == []


def test_a_hard_link_or_a_file_too_large_to_read_is_listed_not_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = _write(tmp_path, "exports/beta.jsonl", f'{{"text": "{TEXT}"}}\n')
    linked = tmp_path / "reports" / OWNER.id / "linked.jsonl"
    linked.parent.mkdir(parents=True)
    os.link(shared, linked)
    big = _write(tmp_path, f"jobs/{OWNER.id}/rows.jsonl", f'{{"text": "{TEXT}"}}\n' * 20)
    monkeypatch.setattr(residue, "MAX_SCAN_BYTES", big.stat().st_size - 1)

    found = scrub_home(tmp_path, NEEDLES, OWNER, [])

    assert TEXT in shared.read_text() and TEXT in big.read_text()
    assert found.left == [f"jobs/{OWNER.id}/rows.jsonl", f"reports/{OWNER.id}/linked.jsonl"]


def test_a_yaml_file_nested_past_the_parsers_depth_does_not_stop_the_erasure(tmp_path: Path) -> None:
    _write(tmp_path, f"policies/{OWNER.name}/nested.yaml", "items: " + "[" * 5000 + "]" * 5000 + "\n")
    ours = _write(tmp_path, f"reports/{OWNER.id}/report.json", f'{{"prompt": "{TEXT}"}}')

    found = scrub_home(tmp_path, NEEDLES, OWNER, [])

    assert not ours.exists() and found.removed == [f"reports/{OWNER.id}/report.json"]
