"""The gates page's report link: a report an erasure deleted says so, not "no such page"."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.dashboard.views import gate_report_html
from tuneloop.errors import NotFound
from tuneloop.registry.versions import Registry
from tuneloop.store.repository import Store


def test_a_deleted_gate_report_says_it_is_gone_and_where_its_verdict_stays(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    tenant, _ = store.create_tenant("acme")
    scoped = store.for_tenant(tenant)
    registry = Registry(scoped)
    version = registry.register(kind="adapter", base_model="base", actor="test")
    gone = tmp_path / "reports" / tenant.id / version.id / "report.json"  # as erasure leaves it: deleted
    registry.move(version.id, "gated", actor="gate", reason="passed", gate_report=str(gone))

    with pytest.raises(NotFound, match=r"no longer on disk.*audit log"):
        gate_report_html(scoped, tmp_path, version.id)
    store.close()
