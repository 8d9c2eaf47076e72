"""When a turn trains no adapter because the last one could not show a lift: back off until the feedback has
doubled.

A small tenant's adapter often ends its canary futile or inconclusive: the trial could not show the lift it
was sized for, typically because the turn's light candidate already took what the feedback asked for. Every
later turn (each `min_new_events`) then trained another on barely more data: on an unseen domain of 50 users,
15 minutes of DPO beside their traffic, ended futile again. So a turn trains the next adapter against the
same production only once as many feedback events have come in since that adapter's snapshot as the
snapshot held: each try sees twice the evidence of the last, and light candidates and re-rankers go on
learning meanwhile. An adapter rolled back for doing worse is not backed off from: it lost, and the next
turn's data may fix what it learned.
"""

from __future__ import annotations

from tuneloop.errors import NotFound
from tuneloop.registry.versions import Registry, Version
from tuneloop.rollout.sequential import FUTILE
from tuneloop.signals.snapshots import get_snapshot
from tuneloop.store.repository import TenantStore

INCONCLUSIVE = "inconclusive"  # how a canary stopped at its sample or time limit begins its reason
NO_LIFT = (FUTILE, INCONCLUSIVE)


def adapter_held_back(tenant: TenantStore) -> str | None:
    """Why this turn trains no adapter, or None: the newest adapter trained against production's was rolled
    back for showing no lift, and fewer feedback events came since its snapshot than that snapshot held."""
    registry = Registry(tenant)
    production = registry.production("adapter")
    parent = production.id if production else None
    tried = [
        v
        for v in registry.list("adapter", "rolled_back")
        if v.parent_id == parent and _trained(v, production)
    ]
    if not tried:
        return None
    last = max(tried, key=lambda v: v.updated_at)
    why = next(
        (
            h["reason"] or ""
            for h in reversed(registry.history().get(last.id, []))
            if h["state"] == "rolled_back"
        ),
        "",
    )
    if not why.startswith(NO_LIFT) or last.snapshot_hash is None:
        return None
    try:
        snapshot = get_snapshot(tenant, last.snapshot_hash)
    except NotFound:  # erased with its tenant's data: nothing to measure against
        return None
    had = snapshot.counts.get("events", 0)
    since = len(tenant.feedback(since=snapshot.created_at))
    if since >= had:
        return None
    return (
        f"adapter {last.id} trained on {had} feedback events and showed no lift on its canary "
        f"({why.split(':')[0]}); the next adapter trains once {had} more have come in since ({since} so far)"
    )


def _trained(version: Version, production: Version | None) -> bool:
    """Whether `version` carries weights of its own, not production's adapter under other light parts."""
    return version.artifact_path is not None and version.artifact_path != (
        production.artifact_path if production else None
    )
