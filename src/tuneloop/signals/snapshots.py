"""Snapshots: a tenant's training data frozen as Parquet, with the policy that made it and a content hash.

The hash covers the canonical rows and the policy, and the snapshot's clock is the newest event it saw
(not the wall clock), so the same events under the same policy always give the same hash.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.clock import now_utc, utc
from tuneloop.errors import BadRequest, NotFound
from tuneloop.signals import canaries
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.records import rows_hash
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import snapshots

DATASETS = ("pairs", "kto", "sft")
# Columns each TRL trainer reads; lineage columns stay in the snapshot's own Parquet files.
TRL_COLUMNS = {
    "pairs": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "sft": ("messages",),
}


@dataclass(frozen=True)
class Snapshot:
    tenant_id: str
    hash: str
    path: Path
    policy: dict[str, Any]
    counts: dict[str, int]
    report: dict[str, Any]
    as_of: datetime
    created_at: datetime
    erased_at: datetime | None = None  # erasure or retention rewrote the files: `hash` no longer matches

    def rows(self, dataset: str, split: str | None = None) -> list[dict[str, Any]]:
        """The rows of one dataset (`pairs`, `kto`, `sft`), optionally only the `train` or `heldout` split."""
        import pyarrow.parquet as pq

        if dataset not in DATASETS:
            raise BadRequest(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        rows = pq.read_table(self.path / f"{dataset}.parquet").to_pylist()
        return [r for r in rows if split is None or r["split"] == split]


def snapshot_dir(home: Path, tenant_id: str, digest: str) -> Path:
    return home / "snapshots" / tenant_id / digest


def create_snapshot(
    tenant: TenantStore, home: Path, policy: RewardPolicy, *, actor: str = "cli", embed: Any = None
) -> Snapshot:
    """Freeze the tenant's current signals; an identical snapshot that exists already is returned as is."""
    from tuneloop.signals.build import build_signals

    interactions = tenant.interactions()
    events = tenant.feedback()
    if not events:
        raise BadRequest(f"tenant {tenant.tenant.name} has no feedback yet; nothing to snapshot")
    # Capped at receipt: a client's created_at (up to a day ahead) must not move the snapshot into the future.
    as_of = max(
        [min(e["created_at"], e["received_at"]) for e in events] + [i["created_at"] for i in interactions]
    )
    signals = build_signals(interactions, events, policy, as_of, embed=embed)
    policy_dump = policy.model_dump(mode="json")
    digest = rows_hash([{"signals": signals.content_hash(), "policy": policy_dump}])
    try:
        return get_snapshot(tenant, digest)
    except NotFound:
        pass
    datasets = {"pairs": signals.pairs, "kto": signals.kto, "sft": signals.sft}
    counts = {
        f"{name}_{split}": sum(r["split"] == split for r in rows)
        for name, rows in datasets.items()
        for split in ("train", "heldout")
    }
    counts |= {"interactions": len(interactions), "events": len(events), "planted_canaries": 1}
    datasets = canaries.plant(datasets, digest)  # after counting: users' rows decide whether a turn trains
    report = {
        "flagged_raters": list(signals.raters.flagged),
        "rater_weights": {r: round(w, 4) for r, w in sorted(signals.raters.weights.items())},
        "rewarded_interactions": len(signals.rewards),
    }
    path = snapshot_dir(home, tenant.tenant_id, digest)
    _publish_parquet(
        path,
        datasets,
        {
            "hash": digest,
            "tenant": tenant.tenant.name,
            "as_of": as_of.isoformat(),
            "policy": policy_dump,
            "counts": counts,
            "report": report,
        },
    )
    row = {
        "hash": digest,
        "path": str(path),
        "policy": policy_dump,
        "counts": counts,
        "report": report,
        "as_of": as_of,
        "created_at": now_utc(),
    }

    def register(tx: TenantTx) -> None:
        if tx.first(snapshots, snapshots.c.hash == digest) is not None:
            return  # a concurrent call froze the same signals first: content-addressed, it is this snapshot
        tx.insert(snapshots, **row)
        # The audit row names no rater, only how many were flagged: who they are stays in the snapshot's
        # row (the subject), which can be erased while the chain still verifies.
        tx.audit(
            actor=actor,
            action="snapshot.create",
            subject=digest,
            details={"counts": counts, "flagged_raters": len(report["flagged_raters"])},
        )

    tenant.transaction(register)
    return get_snapshot(tenant, digest)


def _publish_parquet(path: Path, datasets: dict[str, list[dict]], manifest: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=path.parent))
    for name, rows in datasets.items():
        table = pa.Table.from_pylist(rows) if rows else pa.table({"split": pa.array([], pa.string())})
        pq.write_table(table, tmp / f"{name}.parquet")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    # What is there was left by a crash before the registration, is being rewritten by an erasure, or was
    # just published by a concurrent call on the same feedback: swapped out by renames, so a crash never
    # loses both copies, and a concurrent call's same content-addressed files may win the race.
    stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=path.parent))
    with contextlib.suppress(FileNotFoundError):
        path.rename(stale / path.name)
    try:
        tmp.rename(path)
    except OSError:
        if not path.is_dir():
            raise
        shutil.rmtree(tmp)
    shutil.rmtree(stale)


@dataclass(frozen=True)
class Trim:
    """Rows to take out of snapshots: those drawing on any of these interactions, events or raters."""

    interactions: frozenset[str]
    events: frozenset[str]
    raters: frozenset[str] = frozenset()

    def drops(self, row: dict[str, Any]) -> bool:
        return (
            not self.interactions.isdisjoint(row.get("interaction_ids") or ())
            or not self.events.isdisjoint(row.get("event_ids") or ())
            or row.get("rater") in self.raters
        )

    def touches(self, snapshot: Snapshot) -> bool:
        """Whether `snapshot` holds a row, or a rater entry in its report, that this trim removes."""
        named = {*snapshot.report.get("flagged_raters", ()), *snapshot.report.get("rater_weights", {})}
        return not self.raters.isdisjoint(named) or any(
            self.drops(row) for rows in _datasets(snapshot).values() for row in rows
        )


def _datasets(snapshot: Snapshot) -> dict[str, list[dict[str, Any]]]:
    """The snapshot's rows by dataset; none when an operator deleted its files."""
    exists = snapshot.path.exists()
    return {name: snapshot.rows(name) if exists else [] for name in DATASETS}


def trim_snapshot(tenant: TenantStore, snapshot: Snapshot, trim: Trim) -> int:
    """Rewrite the snapshot's files without the rows `trim` removes and mark its row `erased_at` (its hash
    now names, no longer matches, the content); returns how many rows went."""
    datasets = _datasets(snapshot)
    kept = {name: [r for r in rows if not trim.drops(r)] for name, rows in datasets.items()}
    dropped = sum(len(datasets[name]) - len(kept[name]) for name in DATASETS)
    counts = {
        **snapshot.counts,
        **{
            f"{name}_{split}": sum(r["split"] == split and r.get("origin") != canaries.ORIGIN for r in rows)
            for name, rows in kept.items()
            for split in ("train", "heldout")
        },
        "erased_rows": snapshot.counts.get("erased_rows", 0) + dropped,
    }
    report = {
        **snapshot.report,
        "flagged_raters": [r for r in snapshot.report.get("flagged_raters", []) if r not in trim.raters],
        "rater_weights": {
            r: w for r, w in snapshot.report.get("rater_weights", {}).items() if r not in trim.raters
        },
    }
    erased_at = now_utc()
    if snapshot.path.exists():
        manifest = json.loads((snapshot.path / "manifest.json").read_text())
        manifest |= {"counts": counts, "report": report, "erased_at": erased_at.isoformat()}
        _publish_parquet(snapshot.path, kept, manifest)
    tenant.transaction(
        lambda tx: tx.update(
            snapshots, snapshots.c.hash == snapshot.hash, counts=counts, report=report, erased_at=erased_at
        )
    )
    return dropped


def get_snapshot(tenant: TenantStore, digest: str) -> Snapshot:
    """A snapshot of this tenant by full hash or a unique prefix (at least 6 characters)."""
    if len(digest) < 6:
        raise BadRequest("give at least 6 characters of the snapshot hash", param="snapshot")
    # autoescape: `_` and `%` in what the user typed are characters, not LIKE wildcards
    rows = tenant.all(snapshots, snapshots.c.hash.startswith(digest, autoescape=True))
    if not rows:
        raise NotFound(
            f"snapshot {digest} not found for tenant {tenant.tenant.name} — "
            f"see `tuneloop snapshot list --tenant {tenant.tenant.name}`",
            param="snapshot",
        )
    if len(rows) > 1:
        raise BadRequest(f"snapshot prefix {digest} is ambiguous; give more characters", param="snapshot")
    return _snapshot(rows[0])


def list_snapshots(tenant: TenantStore) -> list[Snapshot]:
    return [_snapshot(r) for r in tenant.all(snapshots, order_by=(snapshots.c.created_at,))]


def export_trl(snapshot: Snapshot, out: Path) -> list[Path]:
    """Write each dataset's train and held-out rows as JSONL in TRL's conversational formats."""
    out.mkdir(parents=True, exist_ok=True)
    names = {"pairs": "preference", "kto": "unpaired", "sft": "sft"}
    written = []
    for dataset, columns in TRL_COLUMNS.items():
        for split in ("train", "heldout"):
            target = out / f"{names[dataset]}_{split}.jsonl"
            with target.open("w") as f:
                for row in snapshot.rows(dataset, split):
                    f.write(json.dumps({c: row[c] for c in columns}, ensure_ascii=False) + "\n")
            written.append(target)
    return written


def _snapshot(row: sa.Row) -> Snapshot:
    data = dict(row._mapping)
    data["path"] = Path(data["path"])
    data["as_of"], data["created_at"] = utc(data["as_of"]), utc(data["created_at"])
    data["erased_at"] = utc(data["erased_at"]) if data["erased_at"] else None
    return Snapshot(**data)
