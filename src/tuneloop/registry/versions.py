"""The registry: every policy and reward-model version of a tenant, its lineage, and its state.

States: candidate → gated → canary → production → retired, or blocked / rolled_back. Every move is one
transaction that also appends to the hash-chained audit log, so state and audit never disagree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from tuneloop.errors import BadRequest, Conflict, NotFound
from tuneloop.store import audit
from tuneloop.store.repository import TenantStore, now_utc
from tuneloop.store.schema import versions

Kind = Literal["policy", "reward_model"]
State = Literal["candidate", "gated", "canary", "production", "retired", "blocked", "rolled_back"]

# Which moves are legal. retired → production is the instant rollback to the previous version.
TRANSITIONS: dict[str, set[str]] = {
    "candidate": {"gated", "blocked"},
    "gated": {"canary", "production", "blocked", "retired"},
    "canary": {"production", "rolled_back"},
    "production": {"retired", "rolled_back"},
    "retired": {"production"},
    "blocked": set(),
    "rolled_back": set(),
}


@dataclass(frozen=True)
class Version:
    id: str
    kind: Kind
    state: State
    base_model: str
    created_at: datetime
    updated_at: datetime
    base_model_hash: str | None = None
    snapshot_hash: str | None = None
    artifact_path: str | None = None
    artifact_checksums: dict[str, str] | None = None
    system_prompt: str | None = None
    decoding: dict[str, Any] | None = None
    job_spec: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    gate_report: str | None = None
    parent_id: str | None = None


class Registry:
    """Versions of one tenant (the handle's), read and moved through their states."""

    def __init__(self, tenant: TenantStore) -> None:
        self.tenant = tenant
        self._scope = versions.c.tenant_id == tenant.tenant_id

    def register(
        self, *, kind: Kind, base_model: str, actor: str, version_id: str | None = None, **lineage: Any
    ) -> Version:
        """Record a new candidate version (artifacts must already be complete and validated)."""
        unknown = set(lineage) - set(Version.__dataclass_fields__)
        if unknown:
            raise BadRequest(f"unknown version fields: {sorted(unknown)}")
        now = now_utc()
        row = {
            "id": version_id or f"v-{uuid.uuid4().hex[:10]}",
            "kind": kind,
            "state": "candidate",
            "base_model": base_model,
            "created_at": now,
            "updated_at": now,
            **lineage,
        }
        row.setdefault("metrics", {})

        def insert(conn: sa.Connection) -> None:
            if conn.execute(sa.select(versions.c.id).where(self._scope, versions.c.id == row["id"])).first():
                raise Conflict(f"version {row['id']!r} already exists")
            conn.execute(versions.insert().values(tenant_id=self.tenant.tenant_id, **row))
            audit.append(
                conn,
                tenant_id=self.tenant.tenant_id,
                actor=actor,
                action="version.register",
                subject=row["id"],
                details={
                    "kind": kind,
                    "snapshot": lineage.get("snapshot_hash"),
                    "artifact_checksums": lineage.get("artifact_checksums"),
                },
            )

        self.tenant.store.retrying(insert)
        return self.get(row["id"])

    def get(self, version_id: str) -> Version:
        with self.tenant.store.read() as conn:
            row = conn.execute(sa.select(versions).where(self._scope, versions.c.id == version_id)).first()
        if row is None:
            raise NotFound(f"version {version_id!r} not found for this tenant", param="version")
        return _version(row)

    def list(self, kind: Kind | None = None, state: State | None = None) -> list[Version]:
        query = sa.select(versions).where(self._scope)
        if kind:
            query = query.where(versions.c.kind == kind)
        if state:
            query = query.where(versions.c.state == state)
        with self.tenant.store.read() as conn:
            return [_version(r) for r in conn.execute(query.order_by(versions.c.created_at, versions.c.id))]

    def production(self, kind: Kind = "policy") -> Version | None:
        """The version now serving (policy) or judging (reward model); None means the base model."""
        found = self.list(kind=kind, state="production")
        return found[-1] if found else None

    def move(
        self,
        version_id: str,
        to: State,
        *,
        actor: str,
        reason: str,
        details: dict[str, Any] | None = None,
        conn: sa.Connection | None = None,
        **updates: Any,
    ) -> Version | None:
        """Move a version to `to` atomically with an audit row; promoting retires the old production.

        With `conn`, the move joins the caller's transaction (and returns None: read it after commit).
        """

        def apply(conn: sa.Connection) -> None:
            row = conn.execute(sa.select(versions).where(self._scope, versions.c.id == version_id)).first()
            if row is None:
                raise NotFound(f"version {version_id!r} not found for this tenant", param="version")
            if to not in TRANSITIONS[row.state]:
                raise Conflict(
                    f"version {version_id} is {row.state}; it cannot move to {to} "
                    f"(allowed: {sorted(TRANSITIONS[row.state]) or 'none'})"
                )
            now = now_utc()
            if to == "production":
                old = (
                    conn.execute(
                        sa.select(versions.c.id).where(
                            self._scope, versions.c.kind == row.kind, versions.c.state == "production"
                        )
                    )
                    .scalars()
                    .all()
                )
                for old_id in old:
                    conn.execute(
                        versions.update()
                        .where(self._scope, versions.c.id == old_id)
                        .values(state="retired", updated_at=now)
                    )
                    audit.append(
                        conn,
                        tenant_id=self.tenant.tenant_id,
                        actor=actor,
                        action="version.retired",
                        subject=old_id,
                        details={"replaced_by": version_id},
                    )
            conn.execute(
                versions.update()
                .where(self._scope, versions.c.id == version_id)
                .values(state=to, updated_at=now, **updates)
            )
            audit.append(
                conn,
                tenant_id=self.tenant.tenant_id,
                actor=actor,
                action=f"version.{to}",
                subject=version_id,
                details={"from": row.state, "reason": reason, **(details or {})},
            )

        if conn is not None:
            apply(conn)
            return None
        self.tenant.store.retrying(apply)
        return self.get(version_id)


def _version(row: sa.Row) -> Version:
    data = dict(row._mapping)
    data.pop("tenant_id")
    data["metrics"] = data.get("metrics") or {}
    return Version(**data)
