"""Experiments as stored state: one canary per tenant at a time, read back after any restart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from tuneloop.clock import utc
from tuneloop.errors import NotFound
from tuneloop.store.repository import TenantStore, TenantTx
from tuneloop.store.schema import experiments

ExperimentState = Literal["running", "paused", "promoted", "rolled_back", "halted"]
LIVE_STATES = ("running", "paused")


@dataclass(frozen=True)
class Experiment:
    id: str
    control_version: str | None  # None: the base model
    treatment_version: str
    state: ExperimentState
    share: float  # of traffic on the treatment arm; 0 while paused
    step: int
    step_started_at: datetime
    policy: dict[str, Any]
    decision: dict[str, Any] | None
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    arms: list[dict[str, Any]] | None = None  # multi-arm ({arm, version, weight, state}); None: a canary

    @property
    def candidates(self) -> list[str]:
        """The candidate versions still on trial: the treatment, or every live arm's but production's."""
        if not self.arms:
            return [self.treatment_version]
        return [a["version"] for a in self.arms if a["arm"] != "control" and a["state"] == "live"]

    def version_of(self, arm: str) -> str | None:
        """The version an arm serves (None: the base model)."""
        if self.arms:
            return next(a["version"] for a in self.arms if a["arm"] == arm)
        return self.treatment_version if arm == "treatment" else self.control_version


def active_experiment(tenant: TenantStore | TenantTx) -> Experiment | None:
    """The tenant's running or paused experiment, if any."""
    row = tenant.first(experiments, experiments.c.state.in_(LIVE_STATES))
    return _experiment(row) if row else None


def get_experiment(tenant: TenantStore, experiment_id: str) -> Experiment:
    """One of the tenant's experiments; NotFound for ids it does not own."""
    row = tenant.first(experiments, experiments.c.id == experiment_id)
    if row is None:
        raise NotFound(f"experiment {experiment_id!r} not found for this tenant", param="experiment")
    return _experiment(row)


def list_experiments(tenant: TenantStore) -> list[Experiment]:
    return [_experiment(r) for r in tenant.all(experiments, order_by=(experiments.c.started_at,))]


def _experiment(row: sa.Row) -> Experiment:
    data = dict(row._mapping)
    data.pop("tenant_id")
    for key in ("step_started_at", "started_at", "updated_at", "ended_at"):
        data[key] = utc(data[key]) if data[key] else None
    return Experiment(**data)
