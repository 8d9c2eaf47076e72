"""Versions trained on erased data: found through their lineage, marked, and taken out of service by the
tenant's privacy policy."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from tuneloop.clock import now_utc, utc
from tuneloop.privacy.policy import PrivacyPolicy
from tuneloop.registry.versions import Registry, Version
from tuneloop.rollout import controller
from tuneloop.rollout.experiments import active_experiment
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import alerts, versions

ALERT_KIND = "erasure"
# A version that was not serving is blocked outright; nothing is lost that a new turn does not rebuild.
BLOCK_FROM = ("candidate", "gated", "pending_approval")
# Where each state not yet in production goes; a canary without an experiment (a re-ranker's) ends here.
WITHDRAWN = {**dict.fromkeys(BLOCK_FROM, "blocked"), "canary": "rolled_back"}


def trained_on(tenant: TenantStore, snapshot_hashes: Iterable[str]) -> list[Version]:
    """Versions trained on any of the snapshots, and those built on such a version: composed from it
    (`parent_id`, or its very adapter), warm-started from its adapter, or trained on pairs it judged."""
    hashes = set(snapshot_hashes)
    every = Registry(tenant).list()
    found = {v.id: v for v in every if v.snapshot_hash in hashes}
    grew = True
    while grew:
        paths = {v.artifact_path for v in found.values() if v.artifact_path}
        more = [
            v
            for v in every
            if v.id not in found
            and (
                v.parent_id in found
                or v.artifact_path in paths
                or (v.job_spec or {}).get("init_adapter") in paths
                or v.metrics.get("reward_model") in found
            )
        ]
        found |= {v.id: v for v in more}
        grew = bool(more)
    return [v for v in every if v.id in found]


def reranked_since(tenant: TenantStore, moment: datetime | None) -> list[Version]:
    """Re-rankers trained at or after `moment`: each learns from every retrieval logged before it, so
    those saw the erased rows (None: nothing to find)."""
    if moment is None:
        return []
    return [v for v in Registry(tenant).list("reranker") if utc(v.created_at) >= moment]


def withdraw(
    tenant: TenantStore, affected: list[Version], policy: PrivacyPolicy, *, request: str, actor: str
) -> dict[str, str]:
    """Mark `affected` (`erased_at`), roll back a canary of one (an adapter's experiment, a re-ranker's
    interleaving), block those not yet serving and, by the policy, retire production ones now or flag them
    for the next turn. Returns each version's state now."""
    if not affected:
        return {}
    ids = {v.id for v in affected}
    retire = policy.erasure == "retire"
    exp = active_experiment(tenant)
    # A canary arm trained on the user ends now; with `retire`, so does one whose control is.
    if exp is not None and (exp.treatment_version in ids or (retire and exp.control_version in ids)):
        controller.finish(tenant, "rolled_back", actor=actor, reason=f"erasure {request}")

    def mark(tx: TenantTx) -> None:
        tx.update(
            versions, versions.c.id.in_(sorted(ids)), versions.c.erased_at.is_(None), erased_at=now_utc()
        )
        tx.audit(
            actor=actor,
            action="version.erased",
            subject=request,
            details={"versions": sorted(ids), "policy": policy.erasure},
        )

    tenant.transaction(mark)
    registry = Registry(tenant)
    states = {}
    serving = []
    for version in (registry.get(i) for i in sorted(ids)):
        to = WITHDRAWN.get(version.state)
        if version.state == "production":
            serving.append(version.id)
            to = "retired" if retire else None
        if to:
            registry.move(version.id, to, actor=actor, reason=f"trained on data erased by {request}")
        states[version.id] = to or version.state
    if serving:
        tenant.transaction(lambda tx: _alert(tx, serving, request, actor))
    return states


def _alert(tx: TenantTx, serving: list[str], request: str, actor: str) -> None:
    """Open an `erasure` alert (unless one is open): the loop starts its next turn early for it, as for
    drift, and that turn trains a replacement for the production version (flagged or retired)."""
    tx.serialize()  # one open erasure alert, also when two erasures finish at once
    if tx.first(alerts, alerts.c.kind == ALERT_KIND, alerts.c.status == "open", columns=(alerts.c.id,)):
        return
    alert_id = f"al-{uuid.uuid4().hex[:12]}"
    message = f"production {', '.join(serving)} was trained on erased data; the next turn retrains without it"
    tx.insert(
        alerts,
        id=alert_id,
        kind=ALERT_KIND,
        status="open",
        statistic=float(len(serving)),
        threshold=0.0,
        p_value=None,
        message=message,
        details={"request": request, "versions": serving},
        created_at=now_utc(),
    )
    tx.audit(
        actor=actor, action="alert.open", subject=alert_id, details={"kind": ALERT_KIND, "message": message}
    )
