"""The privacy policy: what erasing a user does to models trained on them, and how long raw data stays."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from tuneloop.config import MAX_DAYS, TenantPolicy


class PrivacyPolicy(TenantPolicy):
    """Erasure and retention for one tenant; by default all is kept until a user asks to be forgotten."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filename: ClassVar[str] = "privacy_policy.yaml"

    erasure: Literal["retrain", "retire"] = Field(
        "retrain",
        description="What happens to production versions trained on an erased user's data: `retrain` keeps "
        "them serving until the next turn replaces them (an `erasure` alert starts it early, from the base "
        "rather than warm from them); `retire` retires them at once (the base model serves meanwhile). "
        "Either way such a version never enters gated, canary or production again.",
    )
    retention_days: float | None = Field(
        None,
        ge=1,
        le=MAX_DAYS,
        description="Delete interactions older than this many days, with their feedback, at the loop's "
        "scheduled checks (or `tuneloop retention run`); None keeps them.",
    )
    snapshot_retention: Literal["trim", "keep"] = Field(
        "trim",
        description="`trim`: retention also takes expired rows out of snapshots (rewritten, marked "
        "`erased_at`); `keep`: snapshots stay as frozen, so old versions remain reproducible.",
    )
