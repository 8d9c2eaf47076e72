"""The registry: every policy and reward-model version of a tenant, its lineage, and its state.

States: candidate → gated → canary → production → retired, or blocked / rolled_back; a tenant that requires
approval holds a gated version in pending_approval until a named person approves (back to gated) or rejects
(blocked) it. Every move is one transaction that also appends to the hash-chained audit log, so state and
audit never disagree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from tuneloop.clock import now_utc, utc
from tuneloop.errors import BadRequest, Conflict, NotFound
from tuneloop.rollout.experiments import LIVE_STATES
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import audit_log, experiments, versions

Kind = Literal["adapter", "reward_model", "reranker"]
ServedKind = Literal["adapter", "reranker"]  # the kinds that change what users get, so can be rolled back
# What serves a tenant when no version of a kind is in production.
FALLBACK = {"adapter": "the base model", "reranker": "the embedding order"}
State = Literal[
    "candidate", "gated", "pending_approval", "canary", "production", "retired", "blocked", "rolled_back"
]

# Which moves are legal. retired → production is the instant rollback to the previous version.
TRANSITIONS: dict[str, set[str]] = {
    "candidate": {"gated", "blocked"},
    "gated": {"canary", "production", "blocked", "retired", "pending_approval"},
    "pending_approval": {"gated", "blocked"},
    "canary": {"production", "rolled_back"},
    "production": {"retired", "rolled_back"},
    "retired": {"production"},
    "blocked": set(),
    "rolled_back": set(),
}
# States a version never leaves: a copy of it is how its parts are gated again (registry.composition).
ENDED: frozenset[str] = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
MAX_ACTOR_CHARS = 256  # audit_log.actor's width: an approver's name is the audit row's actor
# States that serve users or lead there: a version trained on erased data never enters them again.
SERVING: set[str] = {"gated", "pending_approval", "canary", "production"}


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
    erased_at: datetime | None = None  # a user it was trained on was erased since (privacy/erasure.py)


def check_approver(by: str) -> None:
    """An approval names who decides, in 1 to MAX_ACTOR_CHARS printable characters: the name goes into the
    audit chain for good, where an escape sequence or a right-to-left override would garble every reader."""
    if not by.strip() or len(by) > MAX_ACTOR_CHARS or not by.isprintable():
        raise BadRequest(
            f"name who decides in 1-{MAX_ACTOR_CHARS} printable characters (--by NAME, or `by` in the body)",
            param="by",
        )


class Registry:
    """Versions of one tenant (the handle's), read and moved through their states."""

    def __init__(self, tenant: TenantStore) -> None:
        self.tenant = tenant

    def register(
        self,
        *,
        kind: Kind,
        base_model: str,
        actor: str,
        version_id: str | None = None,
        details: dict[str, Any] | None = None,
        **lineage: Any,
    ) -> Version:
        """Record a new candidate version (artifacts must already be complete and validated).

        `details` join the audit row (e.g. why a version was composed by hand, and from what).
        """
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

        def insert(tx: TenantTx) -> None:
            if tx.first(versions, versions.c.id == row["id"], columns=(versions.c.id,)):
                raise Conflict(f"version {row['id']!r} already exists")
            tx.insert(versions, **row)
            tx.audit(
                actor=actor,
                action="version.register",
                subject=row["id"],
                details={
                    "kind": kind,
                    "snapshot": lineage.get("snapshot_hash"),
                    "artifact_checksums": lineage.get("artifact_checksums"),
                    **(details or {}),
                },
            )

        self.tenant.transaction(insert)
        return self.get(row["id"])

    def get(self, version_id: str) -> Version:
        row = self.tenant.first(versions, versions.c.id == version_id)
        if row is None:
            raise NotFound(f"version {version_id!r} not found for this tenant", param="version")
        return _version(row)

    def list(self, kind: Kind | None = None, state: State | None = None) -> list[Version]:
        where = [versions.c.kind == kind] if kind else []
        if state:
            where.append(versions.c.state == state)
        order = (versions.c.created_at, versions.c.id)
        return [_version(r) for r in self.tenant.all(versions, *where, order_by=order)]

    def history(self) -> dict[str, list[dict[str, Any]]]:
        """Each version's states from the audit log, oldest first: the state, when and why."""
        columns = (audit_log.c.subject, audit_log.c.action, audit_log.c.created_at, audit_log.c.details)
        rows = self.tenant.all(
            audit_log, audit_log.c.action.startswith("version."), columns=columns, order_by=(audit_log.c.seq,)
        )
        history: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            state = row.action.removeprefix("version.").replace("register", "candidate")
            history.setdefault(row.subject, []).append(
                {"state": state, "at": utc(row.created_at), "reason": (row.details or {}).get("reason")}
            )
        return history

    def reason(
        self, version_id: str, state: str, history: dict[str, list[dict[str, Any]]] | None = None
    ) -> str:
        """Why `version_id` last moved to `state` ("" if it never did); pass `history()` to ask of many."""
        rows = (self.history() if history is None else history).get(version_id, [])
        return next((h["reason"] or "" for h in reversed(rows) if h["state"] == state), "")

    def production(self, kind: Kind = "adapter") -> Version | None:
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
        tx: TenantTx | None = None,
        **updates: Any,
    ) -> Version | None:
        """Move a version to `to` atomically with an audit row; promoting retires the old production.

        With `tx`, the move joins the caller's transaction (and returns None: read it after commit).
        """

        def apply(tx: TenantTx) -> None:
            tx.serialize()  # one production per kind: a concurrent promotion waits, then sees this one
            row = tx.first(versions, versions.c.id == version_id)
            if row is None:
                raise NotFound(f"version {version_id!r} not found for this tenant", param="version")
            if to not in TRANSITIONS[row.state]:
                raise Conflict(
                    f"version {version_id} is {row.state}; it cannot move to {to} "
                    f"(allowed: {sorted(TRANSITIONS[row.state]) or 'none'})"
                )
            if row.erased_at is not None and to in SERVING:
                raise Conflict(
                    f"version {version_id} was trained on data of an erased user; it cannot move to {to} — "
                    "train a new version on a fresh snapshot"
                )
            now = now_utc()
            if to == "production":
                old = tx.all(
                    versions,
                    versions.c.kind == row.kind,
                    versions.c.state == "production",
                    columns=(versions.c.id,),
                )
                for (old_id,) in old:
                    tx.update(versions, versions.c.id == old_id, state="retired", updated_at=now)
                    tx.audit(
                        actor=actor,
                        action="version.retired",
                        subject=old_id,
                        details={"replaced_by": version_id},
                    )
            tx.update(versions, versions.c.id == version_id, state=to, updated_at=now, **updates)
            tx.audit(
                actor=actor,
                action=f"version.{to}",
                subject=version_id,
                details={"from": row.state, "reason": reason, **(details or {})},
            )

        if tx is not None:
            apply(tx)
            return None
        self.tenant.transaction(apply)
        return self.get(version_id)

    # governance: what an operator does by hand, each one transaction with its audit rows ---------------

    def approve(self, version_id: str, *, by: str, reason: str, via: str) -> Version:
        """A named approver lets a version pending approval go on (back to gated: the loop canaries it)."""
        return self._decide(version_id, "gated", "version.approve", by=by, reason=reason, via=via)

    def reject(self, version_id: str, *, by: str, reason: str, via: str) -> Version:
        """A named approver turns down a version pending approval: it is blocked and never serves."""
        return self._decide(version_id, "blocked", "version.reject", by=by, reason=reason, via=via)

    def _decide(self, version_id: str, to: State, action: str, *, by: str, reason: str, via: str) -> Version:
        check_approver(by)

        def apply(tx: TenantTx) -> None:
            tx.serialize()  # of two racing decisions, the second sees the first's
            row = tx.first(versions, versions.c.id == version_id, columns=(versions.c.state,))
            if row is None:
                raise NotFound(f"version {version_id!r} not found for this tenant", param="version")
            if row.state != "pending_approval":
                raise Conflict(
                    f"version {version_id} is {row.state}; only a version pending approval, or a canary that "
                    "won and waits for approval, can be approved or rejected (loop_policy.yaml "
                    "require_approval, rollout_policy.yaml approve_promotion)"
                )
            details = {"approver": by, "via": via}
            self.move(version_id, to, actor=by, reason=reason, details=details, tx=tx)
            tx.audit(actor=by, action=action, subject=version_id, details={"reason": reason, "via": via})

        self.tenant.transaction(apply)
        return self.get(version_id)

    def set_reward_model(
        self, version_id: str, to: Literal["production", "retired"], **audit: Any
    ) -> Version:
        """Promote a reward model to judge (the old judge retires) or retire it; adapters go through the
        canary and `rollback` instead."""
        kind = self.get(version_id).kind
        if kind != "reward_model":
            raise Conflict(
                f"version {version_id} ({kind}) is not a reward model: it reaches production through its "
                "gate (adapters also through the canary) and leaves it by `tuneloop versions rollback "
                f"--kind {kind}`"
            )
        version = self.move(version_id, to, **audit)
        assert version is not None
        return version

    def rollback(
        self, *, to: str | None, actor: str, reason: str, kind: ServedKind = "adapter"
    ) -> tuple[str, str | None]:
        """Take the production `kind` out of service and restore the one it replaced (or `to`, a retired
        version of that kind; FALLBACK when there is none), in one transaction. A re-ranker on canary
        (interleaved with production) goes first, production staying. Returns (rolled back, restored)."""

        def apply(tx: TenantTx) -> tuple[str, str | None]:
            tx.serialize()
            live = tx.first(experiments, experiments.c.state.in_(LIVE_STATES), columns=(experiments.c.id,))
            if kind == "adapter" and live:
                raise Conflict(
                    "this tenant has a live canary; end it first (`tuneloop rollout rollback`), "
                    "then roll back"
                )
            serving = tx.all(
                versions,
                versions.c.kind == kind,
                versions.c.state.in_(("canary", "production")),
                columns=(versions.c.id, versions.c.state),
            )
            current = None if to else next((v for v in serving if v.state == "canary"), None)
            if current is not None:
                production = next((v.id for v in serving if v.state == "production"), None)
                self.move(current.id, "rolled_back", actor=actor, reason=reason, tx=tx)
                details = {"reason": reason}
                tx.audit(actor=actor, action="version.rollback", subject=current.id, details=details)
                return current.id, production
            current = next((v for v in serving if v.state == "production"), None)
            if current is None:
                raise Conflict(f"nothing to roll back: {FALLBACK[kind]} serves this tenant")
            target = to or _replaced_by(tx, current.id)
            if target is not None:
                row = tx.first(versions, versions.c.id == target, columns=(versions.c.kind, versions.c.state))
                if row is None or row.kind != kind or row.state != "retired":
                    state = "not found" if row is None else f"a {row.state} {row.kind}"
                    raise Conflict(f"--to {target}: {state}; roll back only to a retired {kind}", param="to")
            details = {"restored": target or "base"}
            self.move(current.id, "rolled_back", actor=actor, reason=reason, details=details, tx=tx)
            if target is not None:
                self.move(
                    target, "production", actor=actor, reason=reason, details={"rollback": current.id}, tx=tx
                )
            tx.audit(
                actor=actor,
                action="version.rollback",
                subject=current.id,
                details={**details, "reason": reason},
            )
            return current.id, target

        return self.tenant.transaction(apply)


def _replaced_by(tx: TenantTx, version_id: str) -> str | None:
    """The version `version_id` retired when it became production; None when it replaced the base model."""
    rows = tx.all(
        audit_log,
        audit_log.c.action == "version.retired",
        columns=(audit_log.c.subject, audit_log.c.details),
        order_by=(audit_log.c.seq,),
    )
    replaced = [r.subject for r in rows if (r.details or {}).get("replaced_by") == version_id]
    return replaced[-1] if replaced else None


def _version(row: sa.Row) -> Version:
    data = dict(row._mapping)
    data.pop("tenant_id")
    data["metrics"] = data.get("metrics") or {}
    return Version(**data)
