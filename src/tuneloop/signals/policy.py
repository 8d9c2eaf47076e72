"""The per-tenant reward policy: how feedback becomes rewards, pairs and labels. Loaded from a YAML file."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneloop.config import MAX_DAYS, TenantPolicy

Source = Literal["user", "labeler", "judge", "system"]
FLOAT_MAX = sys.float_info.max


def _default_outcomes() -> dict[str, float]:
    return {"tests_passed": 1.0, "resolved": 1.0, "new_findings": -0.3}


def _default_source_weights() -> dict[Source, float]:
    return {"user": 1.0, "labeler": 1.0, "judge": 0.5, "system": 1.0}


class SignalWeights(BaseModel):
    """How much one event of each kind counts. The direction of each kind is fixed; these set its strength."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    thumbs: float = Field(default=1.0, ge=0, description="Thumbs up (+1) or down (-1).")
    rating: float = Field(
        default=1.0, ge=0, description="A 1-5 rating, normalised to [-1, 1] as (rating - 3) / 2."
    )
    preference: float = Field(
        default=1.0,
        ge=0,
        description="A pairwise choice: +1 for the chosen answer, -1 for the rejected one; also the weight "
        "of the preference pair it makes.",
    )
    edit: float = Field(
        default=0.5,
        ge=0,
        description="A correction: -1 for the original response (it needed fixing); also the weight of the "
        "edited-text-over-original pair.",
    )
    accepted: float = Field(default=0.5, ge=0, description="The user accepted the answer: +1.")
    copied: float = Field(
        default=0.5,
        ge=0,
        description="The user copied the answer: +1. As strong as accepting it: either way the user took the "
        "answer, and at 0.5 a lone one clears min_confidence (a lone regeneration or follow-up does not).",
    )
    regenerated: float = Field(
        default=0.3,
        ge=0,
        description="The user asked for another answer: -1 for the replaced one; also the weight of the "
        "kept-over-replaced pair. Weak by default: a regeneration says the first answer missed, not that "
        "the second is better, so alone (confidence 0.26 < min_confidence) it makes no pair.",
    )
    followup: float = Field(
        default=0.2, ge=0, description="A follow-up question (the answer was not enough): -1, mildly."
    )
    escalated: float = Field(default=1.0, ge=0, description="The user escalated to a human: -1.")
    abandoned: float = Field(default=0.5, ge=0, description="The user left without using the answer: -1.")


class SessionWeights(BaseModel):
    """How much the session-level signals (signals/sessions.py) count toward each answer's reward. Only
    repeat contact is on by default: its direction is clear wherever it is detected; speed and further
    questions mean different things in different applications."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    repeat_contact: float = Field(
        default=0.2,
        ge=0,
        description="The same user asked about the same issue again within 7 days: -1 for every answer of "
        "the earlier session. Small, because a similar question is sometimes a new need (a developer "
        "asking for a variant of yesterday's function).",
    )
    resolution_time: float = Field(
        default=0.0,
        ge=0,
        description="Time to resolution, ranked among the resolved sessions: the fastest +1, the slowest -1, "
        "for each answer of the session. Off by default: a hard question takes longer however good the "
        "answer is.",
    )
    first_action_time: float = Field(
        default=0.0,
        ge=0,
        description="Time to the first meaningful action (accepted, copied, edited, a task outcome), ranked "
        "like resolution_time. Off by default: careful reading of a good answer is slow too.",
    )
    followups: float = Field(
        default=0.0,
        ge=0,
        description="A later question in the same session: -1 for the answer before it (a `followup` event "
        "counts under weights.followup on its own). Off by default: in a chat or a coding session the next "
        "question is often a new task, not a sign that the answer fell short.",
    )


class ScoreMapping(BaseModel):
    """How one named score (feedback kind `score`) counts: as which feedback kind, and how strongly."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: Literal["thumbs", "rating", "reward"] = Field(
        default="reward",
        description="`thumbs`: true or a positive number is +1, false or a negative one -1; `rating`: a "
        "1-5 number, read as a rating is, (value - 3) / 2; `reward`: a number scaled linearly from "
        "[min, max] to [-1, 1]. A categorical score takes its value from `values` whatever the kind.",
    )
    weight: float | None = Field(
        default=None,
        ge=0,
        description="Evidence weight of one score; null: the weight of `kind` under `weights` (1 for "
        "reward).",
    )
    min: float = Field(default=0.0, description="The worst numeric value (reward kind): -1.")
    max: float = Field(default=1.0, description="The best numeric value (reward kind): +1.")
    values: dict[str, float] = Field(
        default_factory=dict,
        description="Categorical scores: the reward in [-1, 1] of each category; categories not listed "
        "carry no reward.",
    )

    def reward(self, data_type: str, value: bool | float | str) -> float | None:
        """The score's value in [-1, 1] under this mapping, or None when it carries no reward."""
        if data_type == "categorical":
            return self.values.get(str(value))
        if isinstance(value, bool):
            return 1.0 if value else -1.0
        # Clamped to float range first: an integer past it (stored before ingest refused them) would raise
        # OverflowError in every reward read of the tenant.
        number = float(max(-FLOAT_MAX, min(FLOAT_MAX, value)))
        if self.kind == "thumbs":
            return float((number > 0) - (number < 0))
        if self.kind == "rating":
            raw = (number - 3) / 2
        else:
            raw = -1 + 2 * (number - self.min) / ((self.max - self.min) or 1.0)
        return max(-1.0, min(1.0, raw))


class RewardPolicy(TenantPolicy):
    """How a tenant's feedback becomes training rows; `comment` and `dwell_ms` carry no reward."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filename: ClassVar[str] = "reward_policy.yaml"

    weights: SignalWeights = Field(
        default=SignalWeights(), description="Evidence weight of one event, per feedback kind."
    )
    sessions: SessionWeights = Field(
        default=SessionWeights(), description="Evidence weight of the session-level signals."
    )
    outcomes: dict[str, float] = Field(
        default_factory=_default_outcomes,
        description="Weight per task-outcome name. A true outcome counts +1, false -1, a number is clipped "
        "to [-1, 1]; a negative weight flips the direction (an outcome that is bad news). Names not "
        "listed carry no reward. By default the names whose direction is the same everywhere: "
        "`tests_passed` (a CI run of the answer's code) and `resolved`, and, weakly, `new_findings` (the "
        "count of new static-analysis findings in the applied code, from `tuneloop outcome --from-sarif`: "
        "any finding -1, none 0).",
    )
    scores: dict[str, ScoreMapping] = Field(
        default_factory=dict,
        description="Named scores (Langfuse/LangSmith style, feedback kind `score`) by name: how each "
        "counts. A score whose name is not listed is kept but carries no reward, so a team keeps its own "
        "score names and decides which of them train the model.",
    )
    source_weights: dict[Source, float] = Field(
        default_factory=_default_source_weights,
        description="Multiplier on every event by who sent it; a source not listed counts 1.",
    )
    confidence_scale: float = Field(
        default=1.0,
        gt=0,
        description="k in confidence = 1 - exp(-w / k), where w is the total evidence weight behind a reward "
        "or a pair. Larger k asks for more evidence before a row is trusted.",
    )
    prior_weight: float = Field(
        default=0.0,
        ge=0,
        description="Pseudo-evidence at reward 0 added to the weighted mean; shrinks rewards backed by "
        "little evidence toward 0.",
    )
    min_confidence: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Rows (pairs, labels, SFT examples) below this confidence are left out.",
    )
    half_life_days: float | None = Field(
        default=30.0,
        ge=1 / 24,
        le=MAX_DAYS,
        description="An event's weight halves every this many days before the snapshot time (at least an "
        "hour); null: no decay.",
    )
    near_duplicate_threshold: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Cosine similarity of prompt embeddings (all-MiniLM-L6-v2) at or above which two prompts "
        "count as the same: their answers are compared, and they always land in the same split.",
    )
    pair_margin: float = Field(
        default=0.5,
        ge=0,
        le=2,
        description="Two answers to the same prompt make a preference pair when their rewards differ by more "
        "than this.",
    )
    max_pairs_per_prompt: int = Field(
        default=4,
        ge=0,
        description="At most this many reward-difference pairs per answer, the widest margins first.",
    )
    label_threshold: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="For unpaired (KTO) labels: reward >= this is desirable, <= -this undesirable, between "
        "is left out.",
    )
    sft_min_reward: float = Field(
        default=0.5,
        ge=-1,
        le=1,
        description="Answers with at least this reward become supervised (SFT) examples.",
    )
    rater_cap: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="No rater contributes more than this share of a dataset's rows or its evidence weight. "
        "Anonymous feedback counts in the total but is never capped. With fewer named raters than 1/cap, "
        "the cap becomes 1/(number of raters), so a small team is balanced rather than erased.",
    )
    rater_prior_accuracy: float = Field(
        default=0.9,
        gt=0.5,
        lt=1,
        description="Agreement with consensus assumed for a rater before any overlapping votes are seen; a "
        "rater at this accuracy has weight 1.",
    )
    rater_prior_strength: float = Field(
        default=4.0, ge=0, description="How many overlapping votes the prior accuracy is worth."
    )
    rater_flag_below: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Raters whose weight falls below this (with overlapping votes) are flagged.",
    )
    heldout_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of prompt clusters held out for evaluation."
    )
    min_heldout_pairs: int = Field(
        default=12,
        ge=0,
        description="Hold out more prompt clusters than heldout_fraction when that keeps fewer preference "
        "pairs than this for the gate to judge (never more than half of them): a young tenant's first "
        "snapshot still gets a meaningful held-out set.",
    )
    min_heldout_prompts: int = Field(
        default=4,
        ge=0,
        description="Hold out more prompt clusters than heldout_fraction when that keeps fewer distinct "
        "prompt clusters than this (never more than half of them): the gate's reward-model suite answers "
        "at least 4 held-out prompts, and 37 held-out pairs on 2 questions gave it none to judge.",
    )
    seed: int = Field(
        default=0, description="Seed of the stable hash that assigns prompt clusters to splits."
    )

    def unrewarded(self, kind: str, value: Any, shown: Callable[[str], str] = repr) -> str | None:
        """Why a validated outcome or score event carries no reward under this policy (its name is not
        listed), or None: such an event is kept, and a team wiring up its own names hears it at once. The
        name is given as `shown(name)`."""
        if kind == "outcome" and value["name"] not in self.outcomes:
            return (
                f"outcome {shown(value['name'])} is stored but carries no reward: list it under `outcomes` "
                f"in the tenant's {self.filename} with its weight (negative for bad news)"
            )
        if kind == "score" and value["name"] not in self.scores:
            return (
                f"score {shown(value['name'])} is stored but carries no reward: map it under `scores` in "
                f"the tenant's {self.filename}"
            )
        return None
