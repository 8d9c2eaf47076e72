"""Which version serves a request: a pinned version, the experiment arm, or the tenant's production.

Adapter names in the backend are namespaced by tenant (`<tenant id>/<version id>`), so a request can only
ever reach the adapters of the tenant its key names.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tuneloop.capture.events import not_found
from tuneloop.errors import NotFound
from tuneloop.registry.versions import Registry, Version
from tuneloop.rollout.experiments import Experiment, active_experiment
from tuneloop.serve.backends.base import Backend
from tuneloop.serve.best_of_n import BestOfNSampler
from tuneloop.serve.examples import ExampleIndex
from tuneloop.store.repository import TenantStore

STATE_TTL_SECONDS = 1.0
PRODUCTION = "production"  # the model name of the tenant's production, never an experiment's arm


@dataclass(frozen=True)
class Route:
    """What serves one request, and what the interaction records about it."""

    version: Version | None  # None: the base model
    arm: str | None = None
    experiment_id: str | None = None

    @property
    def version_id(self) -> str | None:
        return self.version.id if self.version else None


@dataclass
class _TenantState:
    production: Version | None
    experiment: Experiment | None
    read_at: float


class Router:
    """Routes requests per tenant; re-reads the registry and live allocation at most once a second."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._state: dict[str, _TenantState] = {}
        # The light parts of a version that need state of their own: example pools, best-of-N's judges.
        self.examples = ExampleIndex()
        self.best_of_n = BestOfNSampler()

    async def route(self, tenant: TenantStore, user: str | None, model: str | None, request_id: str) -> Route:
        """The route for one request; `model` may pin one of the tenant's own versions, or `production`."""
        if model == PRODUCTION:  # what every user gets once no experiment runs: an evaluation's baseline
            return Route((await self._tenant_state(tenant)).production)
        if model and model not in self.aliases():
            return Route(await pinned_version(tenant, model))
        state = await self._tenant_state(tenant)
        exp = state.experiment
        if exp is None:
            return Route(state.production)
        from tuneloop.rollout.assignment import assign
        from tuneloop.rollout.multi_arm import assign_arm

        # Without an end-user id the request id stands in: such traffic is assigned per request, not per user.
        unit = user or request_id
        if exp.arms:  # a paused one (share 0) sends everyone to production
            arm = assign_arm(exp.id, unit, exp.arms) if exp.share > 0 else "control"
        else:
            arm = assign(exp.id, unit, exp.share)
        version_id = exp.version_of(arm)
        version = await asyncio.to_thread(Registry(tenant).get, version_id) if version_id else None
        if version is not None and version.erased_at is not None and arm != "control":
            # Trained on an erased user: production serves until the controller's next look ends the arm.
            return Route(state.production, arm="control", experiment_id=exp.id)
        return Route(version, arm=arm, experiment_id=exp.id)

    def aliases(self) -> set[str]:
        """Model names that mean "whatever this tenant serves now"."""
        return {"tuneloop", "default", self.backend.model_id}

    def adapter_name(self, tenant: TenantStore, version: Version | None) -> str | None:
        return f"{tenant.tenant_id}/{version.id}" if version and version.artifact_path else None

    async def ensure_loaded(self, tenant: TenantStore, version: Version | None) -> str | None:
        """The backend adapter name for `version`, loading it the first time it is needed."""
        name = self.adapter_name(tenant, version)
        if name and name not in self.backend.adapters:
            await self.backend.load_adapter(name, version.artifact_path)
        return name

    async def _tenant_state(self, tenant: TenantStore) -> _TenantState:
        state = self._state.get(tenant.tenant_id)
        if state is None or time.monotonic() - state.read_at > STATE_TTL_SECONDS:
            production, experiment = await asyncio.to_thread(
                lambda: (Registry(tenant).production(), active_experiment(tenant))
            )
            state = _TenantState(production, experiment, time.monotonic())
            self._state[tenant.tenant_id] = state
        return state


async def pinned_version(tenant: TenantStore, model: str) -> Version:
    """The tenant's own version a request names as its model, if it may serve (404 otherwise)."""
    try:
        version = await asyncio.to_thread(Registry(tenant).get, model)
    except NotFound:
        raise NotFound(
            f"{not_found('model', model)} — use 'tuneloop' or one of your versions (GET /v1/models)",
            param="model",
            code="model_not_found",
        ) from None
    # A version waiting for its approver reaches no one, pinned or not, until a person approves it.
    if version.kind != "adapter" or version.state in ("blocked", "rolled_back", "pending_approval"):
        why = (
            f"a {version.kind.replace('_', ' ')}, not a version of the model"
            if version.kind != "adapter"
            else f"{version.state.replace('_', ' ')}: blocked, rolled-back, unapproved ones are never served"
        )
        raise NotFound(
            f"model {model!r} is not servable ({why})",
            param="model",
            code="model_not_found",
        )
    return version
