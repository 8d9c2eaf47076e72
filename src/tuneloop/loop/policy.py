"""The loop policy: when a tenant's loop starts a turn and how the turn learns."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from tuneloop.config import MAX_HOURS, TenantPolicy
from tuneloop.learn.privacy import DP_EMBEDDING_ONLY, DifferentialPrivacy


class LoopPolicy(TenantPolicy):
    """When a tenant's loop starts a turn and how it learns; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filename: ClassVar[str] = "loop_policy.yaml"

    min_new_events: int = Field(
        200, ge=1, description="Feedback events since the last turn that start a new one."
    )
    schedule_hours: float | None = Field(
        None,
        gt=0,
        le=MAX_HOURS,
        description="Also start a turn this long after the last one ended, if any new feedback came.",
    )
    on_alerts: bool = Field(True, description="Open drift or KPI alerts start a turn early.")
    check_hours: float = Field(
        1.0,
        gt=0,
        le=MAX_HOURS,
        description="How often the loop runs the drift and KPI checks that open and close alerts.",
    )
    alert_cooldown_hours: float = Field(
        24.0,
        ge=0,
        le=MAX_HOURS,
        description="After a turn started by an alert, alerts start no other turn for this long (a drift "
        "that outlasts the turn meant to address it does not retrain every tick).",
    )
    reward_method: Literal["auto", "reward_embedding", "reward"] = Field(
        "auto",
        description="reward_embedding: MiniLM + logistic head (seconds); reward: LoRA + score head on the "
        "base model (minutes); auto: reward_embedding, then reward when that one is unfit to judge and no "
        "judge is in production (a preference about content rather than style needs the larger model).",
    )
    adapter_method: Literal["auto", "dpo", "kto"] = Field(
        "auto",
        description="How the adapter learns; auto: DPO when the snapshot has min_rows preference pairs, "
        "else KTO when it has min_rows labelled answers (feedback that rates answers but never compares two "
        "to one prompt makes no pairs).",
    )
    min_rows: int = Field(16, ge=1, description="Training rows (pairs for DPO, labels for KTO) a turn needs.")
    trainer_args: dict[str, Any] = Field(
        default_factory=dict, description="TRL trainer arguments passed through to DPOConfig/KTOConfig."
    )
    lora: dict[str, Any] = Field(
        default_factory=dict, description="peft.LoraConfig arguments passed through."
    )
    repeat: dict[str, int] = Field(
        default_factory=dict,
        description="Copies of each training row by origin, merged over the trainer's defaults "
        "({edit: 3} for DPO).",
    )
    warm_start: bool = Field(
        True,
        description="Continue from the production adapter (when its LoRA rank matches) instead of the base, "
        "so each turn builds on the last; the gate still measures drift from the base.",
    )
    warm_start_learning_rate: float | None = Field(
        5e-4,
        gt=0,
        description="Learning rate of a turn that continues from the production adapter (None: the "
        "trainer's, as for a fresh adapter); an adapter already near its optimum needs smaller steps.",
    )
    require_approval: bool = Field(
        False,
        description="A gated candidate waits (version state pending_approval) until a named person runs "
        "`tuneloop versions approve` (then it goes on the canary) or `reject` (blocked); no user sees it "
        "before.",
    )
    amplify_k: int = Field(0, ge=0, description="Samples per prompt for amplification; 0 turns it off.")
    reward_dp: DifferentialPrivacy | None = Field(
        None,
        description="Train the reward model by DP-SGD within this (ε, δ) budget (reward_embedding only); "
        "None trains it without differential privacy.",
    )

    @model_validator(mode="after")
    def _private_reward_model_is_the_fast_one(self) -> LoopPolicy:
        # Refused when the policy loads, not turn after turn when the LoRA reward model's job fails on it.
        if self.reward_dp is not None and self.reward_method == "reward":
            raise ValueError(f"reward_method: {DP_EMBEDDING_ONLY}")
        return self
