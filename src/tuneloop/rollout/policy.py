"""The per-tenant rollout policy: canary share, ramp, the decision test and its guardrails (YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneloop.config import load_yaml_model, tenant_policy_file


class Guardrails(BaseModel):
    """How much worse than control the treatment may be on each guardrail before the canary is stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    escalation_rate: float = Field(
        0.02, ge=0, description="Tolerated rise in the share of escalated answers."
    )
    safety_flag_rate: float = Field(
        0.0,
        ge=0,
        description="Tolerated rise in the share of answers flagged unsafe (an `outcome` named "
        "`unsafe` with value true).",
    )
    error_rate: float = Field(0.01, ge=0, description="Tolerated rise in the share of failed requests.")
    slow_rate: float = Field(
        0.05,
        ge=0,
        description="Tolerated rise in the share of answers slower than the control arm's p95 "
        "latency (5% in control by construction).",
    )


class RolloutPolicy(BaseModel):
    """How a gated candidate proves itself on live traffic; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    primary_kpi: Literal["mean_reward", "positive_rate"] = Field(
        "mean_reward",
        description="mean_reward: each answer's reward under the tenant's reward policy; positive_rate: the "
        "share of rated answers whose reward is positive.",
    )
    alpha: float = Field(
        0.05, gt=0, lt=0.5, description="Error rate of the always-valid test, at every look."
    )
    tau: float = Field(
        0.2,
        gt=0,
        description="Standard deviation of the normal mixture over effects (KPI units): the effect "
        "size the test is most sensitive to.",
    )
    ramp: list[float] = Field(
        default=[0.05, 0.2, 0.5],
        min_length=1,
        description="Treatment share at each step; the first is the canary share; promotion means 100%.",
    )
    min_samples: int = Field(30, ge=2, description="KPI observations per arm before any decision.")
    min_samples_per_step: int = Field(
        100, ge=1, description="KPI observations per arm in a step before the ramp moves to the next one."
    )
    max_samples: int = Field(
        5000,
        ge=2,
        description="KPI observations per arm after which an undecided canary ends as inconclusive "
        "(and is rolled back: a candidate must prove itself better).",
    )
    harm_margin: float = Field(
        0.0, ge=0, description="Roll back once the effect is surely below −harm_margin."
    )
    srm_p: float = Field(0.001, gt=0, lt=1, description="A sample-ratio-mismatch p-value below this halts.")
    guardrails: Guardrails = Field(default_factory=Guardrails, description="One-sided early stops.")

    @model_validator(mode="after")
    def _ramp_rises_below_one(self) -> RolloutPolicy:
        if any(not 0 < s < 1 for s in self.ramp) or list(self.ramp) != sorted(self.ramp):
            raise ValueError("ramp: shares must rise and lie strictly between 0 and 1 (promotion means 100%)")
        return self


def load_rollout_policy(path: str | Path) -> RolloutPolicy:
    """The rollout policy in a YAML file; BadRequest names the file and the field when it is invalid."""
    return load_yaml_model(path, RolloutPolicy, "rollout policy")


def tenant_rollout_policy(home: Path, tenant_name: str) -> RolloutPolicy:
    """The tenant's rollout policy file if there is one, else the defaults."""
    path = tenant_policy_file(home, tenant_name, "rollout_policy.yaml")
    return load_rollout_policy(path) if path.exists() else RolloutPolicy()
