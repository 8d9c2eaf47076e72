"""The per-tenant rollout policy: canary share, ramp, the decision test and its guardrails (YAML).

Example with every field: configs/rollout_policy.yaml.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tuneloop.config import MAX_DAYS, MAX_HOURS, TenantPolicy

LATER_STEPS = (0.2, 0.5)  # the default ramp after the canary share


class Guardrails(BaseModel):
    """How much worse than control the treatment may be on each guardrail before the canary is stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    escalation_rate: float = Field(
        0.02, ge=0, le=1, description="Tolerated rise in the share of escalated answers (absolute)."
    )
    safety_flag_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Tolerated rise in the share of answers flagged unsafe (an `outcome` named `unsafe` "
        "with value true); 0 stops on any sure rise.",
    )
    error_rate: float = Field(
        0.01, ge=0, le=1, description="Tolerated rise in the share of failed requests (absolute)."
    )
    p95_latency_ratio: float = Field(
        1.25,
        ge=1,
        description="Treatment's p95 latency may reach this multiple of control's; tested as the share of "
        "treatment answers slower than ratio × control's p95 against 5% (guardrails.latency_guardrail).",
    )


class RolloutPolicy(TenantPolicy):
    """How a gated candidate proves itself on live traffic; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filename: ClassVar[str] = "rollout_policy.yaml"
    primary_kpi: Literal["mean_reward", "positive_rate"] = Field(
        "mean_reward",
        description="The KPI the test decides on. mean_reward: each answer's reward under the tenant's "
        "reward policy; positive_rate: the share of rated answers whose reward is positive.",
    )
    alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="Error rate of the always-valid test, holding however often it is checked: the chance "
        "of promoting a candidate that is no better (and of rolling back one that is no worse).",
    )
    tau2: float = Field(
        0.04,
        gt=0,
        description="Variance τ² of the normal mixture over effects, in squared KPI units: the test is "
        "most sensitive to effects near ±τ (0.04 → ±0.2 on a reward in [-1, 1]).",
    )
    canary_share: float = Field(
        0.05, gt=0, lt=1, description="Treatment share of the first step; equals ramp[0]."
    )
    ramp: list[float] = Field(
        default=[0.05, *LATER_STEPS],
        min_length=1,
        description="Treatment share at each step, rising, starting at canary_share. 100% is reached "
        "only by promotion: a final 1.0 may be written and stands for it.",
    )
    min_samples: int = Field(
        30,
        ge=2,
        description="Users (randomisation units; a request when anonymous) per arm with data before the "
        "test or a guardrail may decide: the variance is estimated across users, not their requests.",
    )
    min_samples_per_step: int = Field(
        100, ge=1, description="Users per arm in a step before the ramp moves to the next one."
    )
    max_samples: int = Field(
        5000,
        ge=2,
        description="Users with a KPI value per arm after which an undecided canary ends as inconclusive "
        "(and is rolled back: a candidate must prove itself better).",
    )
    max_duration_hours: float = Field(
        336.0,
        gt=0,
        le=MAX_HOURS,
        description="Wall-clock limit of an experiment (default 14 days); an undecided canary then ends "
        "as inconclusive and is rolled back.",
    )
    approve_promotion: bool = Field(
        False,
        description="A canary that wins keeps its share until a named person approves the promotion "
        "(`tuneloop versions approve`) or rejects it (rolled back); guardrails keep watching meanwhile. "
        "Two-arm canaries only.",
    )
    harm_margin: float = Field(
        0.0,
        ge=0,
        description="Roll back once the effect is surely below −harm_margin (0: as soon as it is surely "
        "negative).",
    )
    cuped_lookback_days: float = Field(
        28.0,
        ge=0,
        le=MAX_DAYS,
        description="Days before the experiment whose KPI per user is the CUPED covariate that narrows the "
        "test (users without history are not adjusted); 0 turns the adjustment off.",
    )
    srm_p: float = Field(
        0.001, gt=0, lt=1, description="A sample-ratio-mismatch p-value below this halts the experiment."
    )
    guardrails: Guardrails = Field(
        default_factory=Guardrails, description="One-sided early stops on secondary metrics."
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_canary_and_ramp(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        ramp, canary = data.get("ramp"), data.get("canary_share")
        if isinstance(ramp, list) and ramp and ramp[-1] == 1:
            ramp = data["ramp"] = ramp[:-1] or ramp  # 100% means promotion, which only the test grants
        if ramp is None and isinstance(canary, int | float):
            data["ramp"] = [canary, *(s for s in LATER_STEPS if s > canary)]
        elif canary is None and isinstance(ramp, list) and ramp:
            data["canary_share"] = ramp[0]
        return data

    @field_validator("ramp")
    @classmethod
    def _ramp_rises_from_the_canary(cls, ramp: list[float], info: ValidationInfo) -> list[float]:
        if any(not 0 < s < 1 for s in ramp) or any(a >= b for a, b in pairwise(ramp)):
            raise ValueError("shares must rise strictly and lie between 0 and 1 (1.0 only as the last step)")
        canary = info.data.get("canary_share")
        if canary is not None and not math.isclose(ramp[0], canary):
            raise ValueError(f"the first step {ramp[0]} must equal canary_share {canary}")
        return ramp

    def out_of_time(self, started_at: datetime, now: datetime) -> bool:
        """Whether an experiment started at `started_at` has run past max_duration_hours."""
        return now - started_at >= timedelta(hours=self.max_duration_hours)
