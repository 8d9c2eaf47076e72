"""The gate's suites, in the order they run; each is `run(ctx, cfg) -> Verdict`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuneloop.evaluate.suites import (
    drift,
    execution,
    golden,
    grounding,
    pii,
    preferences,
    privacy,
    reward,
    safety,
)
from tuneloop.evaluate.suites.base import GateContext, MissingInput, Verdict

# The PII probe runs last so it can scan every answer the candidate gave in the other suites.
SUITES: dict[str, Callable[[GateContext, Any], Verdict]] = {
    "human_preferences": preferences.run,
    "reward_model": reward.run,
    "judge_privacy": privacy.run,
    "golden": golden.run,
    "safety": safety.run,
    "drift": drift.run,
    "execution": execution.run,
    "grounding": grounding.run,
    "pii_leak": pii.run,
}

__all__ = ["SUITES", "GateContext", "MissingInput", "Verdict"]
