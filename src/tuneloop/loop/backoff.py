"""When a turn trains no adapter because the last one could not show a lift: back off until the evidence has
doubled.

An adapter's canary often ends futile or inconclusive where production's light parts (examples, a length
instruction) already took what the feedback asked for; every later turn then trained another, 8 to 15
minutes of CPU beside users' traffic each (an unseen-domain run of 50 users: two in a row, both futile). So
once the newest canary against production ended an adapter for showing no lift, the next adapter trains
only when as many feedback events have come in since that adapter's snapshot as the snapshot held: each try
sees at least twice the evidence of the last, an exponential backoff, while light candidates and re-rankers
go on learning. An adapter rolled back for doing worse is not backed off from: it lost, and the next turn's
data may fix what it learned.
"""

from __future__ import annotations

from tuneloop.errors import NotFound
from tuneloop.registry.versions import Registry, Version
from tuneloop.rollout.experiments import list_experiments
from tuneloop.rollout.sequential import FUTILE
from tuneloop.signals.snapshots import get_snapshot
from tuneloop.store.repository import TenantStore

INCONCLUSIVE = "inconclusive"  # how a canary stopped at its sample or time limit begins its reason
NO_LIFT = (FUTILE, INCONCLUSIVE)


def adapter_held_back(tenant: TenantStore) -> str | None:
    """Why this turn trains no adapter, or None: the newest canary against production ended its candidate,
    an adapter trained by a turn, for showing no lift, and fewer feedback events came since that adapter's
    snapshot than the snapshot held."""
    registry = Registry(tenant)
    production = registry.production("adapter")
    control = production.id if production else None
    # The candidate on a canary often carries a light trial's winning parts on top of its weights: it is
    # composed on the raw adapter, so what it was tried against is the experiment's control.
    ended = [
        e for e in list_experiments(tenant) if not e.arms and e.ended_at and e.control_version == control
    ]
    if not ended:
        return None
    last = max(ended, key=lambda e: e.ended_at or e.started_at)
    tried = registry.get(last.treatment_version)
    if last.state != "rolled_back" or not _trained(tried, production) or tried.snapshot_hash is None:
        return None
    why = registry.reason(tried.id, "rolled_back")
    if not why.startswith(NO_LIFT):
        return None
    try:
        snapshot = get_snapshot(tenant, tried.snapshot_hash)
    except NotFound:  # erased with its tenant's data: nothing to measure against
        return None
    had = snapshot.counts.get("events", 0)
    since = len(tenant.feedback(since=snapshot.created_at))
    if since >= had:
        return None
    return (
        f"adapter {tried.id} trained on {had} feedback events and showed no lift on its canary "
        f"({why.split(':')[0]}); the next adapter trains once {had} more have come in since ({since} so far)"
    )


def _trained(version: Version, production: Version | None) -> bool:
    """Whether `version` carries weights of its own, not production's adapter under other light parts."""
    return version.artifact_path is not None and version.artifact_path != (
        production.artifact_path if production else None
    )
