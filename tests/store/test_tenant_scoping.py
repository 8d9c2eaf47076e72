"""Tenant scoping belongs to the store: outside `store/`, no module filters or stamps `tenant_id` by hand."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from tuneloop.store.repository import Store
from tuneloop.store.schema import alerts

SRC = Path(__file__).parents[2] / "src" / "tuneloop"
# A hand-written filter or stamp (`x.c.tenant_id`, `tenant_id == ...`, `.values(tenant_id=...)`), or a
# statement run on a connection that skipped the tenant's scoped helpers.
RAW = re.compile(
    r"\.c\.tenant_id\b|tenant_id\s*==|\.values\(\s*tenant_id\s*=|\.store\.(read|write|retrying)\("
)


def test_no_module_outside_the_store_writes_a_raw_tenant_filter() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if "store" not in path.relative_to(SRC).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if RAW.search(line)
    ]
    assert not offenders, "use TenantStore's scoped helpers instead:\n" + "\n".join(offenders)


def test_the_guard_catches_a_raw_filter() -> None:
    assert RAW.search("sa.select(alerts).where(alerts.c.tenant_id == tenant.tenant_id)")
    assert RAW.search("with tenant.store.read() as conn:")
    assert not RAW.search("tenant.all(alerts, alerts.c.status == 'open')")


def test_scoped_reads_and_updates_never_touch_another_tenants_rows(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    acme, beta = (store.for_tenant(store.create_tenant(name)[0]) for name in ("acme", "beta"))
    row = dict(kind="drift", status="open", statistic=1.0, threshold=0.5, message="m", details={})
    for tenant in (acme, beta):
        tenant.transaction(lambda tx: tx.insert(alerts, id="al-1", created_at=sa.func.now(), **row))

    changed = acme.transaction(lambda tx: tx.update(alerts, alerts.c.id == "al-1", status="resolved"))

    assert changed == 1
    assert [r.status for r in acme.all(alerts)] == ["resolved"]
    assert [r.status for r in beta.all(alerts)] == ["open"]
