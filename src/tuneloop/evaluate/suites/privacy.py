"""Judge privacy: the reward model that judges must have been trained by DP-SGD within the policy's ε.

Separate from the reward-model suite so a tenant can require it, report it or leave it off on its own.
"""

from __future__ import annotations

from tuneloop.evaluate.judge import within_privacy_budget
from tuneloop.evaluate.policy import JudgePrivacyConfig
from tuneloop.evaluate.suites.base import GateContext, Verdict
from tuneloop.evaluate.suites.reward import judge_version
from tuneloop.learn.privacy import spent_budget


def run(ctx: GateContext, cfg: JudgePrivacyConfig) -> Verdict:
    """Pass without a limit; with one, the judge's recorded ε must be at most `max_epsilon`."""
    if cfg.max_epsilon is None:
        return Verdict(True, "no ε limit is set (suites.judge_privacy.max_epsilon)")
    judge = judge_version(ctx, ctx.policy.suites.reward_model)
    within, reason = within_privacy_budget(judge, cfg.max_epsilon)
    epsilon, delta = spent_budget(judge.metrics) or (None, None)
    metrics = {"reward_model": judge.id, "epsilon": epsilon, "delta": delta, "max_epsilon": cfg.max_epsilon}
    return Verdict(within, reason, metrics)
