"""Held-out human preferences: does the candidate lean further than production toward what humans chose?

For each held-out pair, a version's margin is log p(chosen) - log p(rejected), summed over the answer's
tokens (the quantity DPO optimises), and its preference is sigmoid(margin): the chance it would pick the
chosen answer of the two. The candidate wins a pair when its preference beats production's; ties count
half. Comparing raw margins instead rewarded confidence past certainty: an adapter trained longer holds
margins of 150 nats where its successor holds 100 on pairs both order right, and lost every such pair.

Too few held-out pairs fail the suite (closed), except for a light candidate (base.trial_judges): a tenant
whose users rate answers one at a time (thumbs, implicit signals) makes few pairs for a long while.
"""

from __future__ import annotations

from tuneloop.evaluate.policy import HumanPreferencesConfig
from tuneloop.evaluate.stats import sigmoid, win_rate
from tuneloop.evaluate.suites.base import (
    CANDIDATE,
    MAX_ROWS,
    PRODUCTION,
    GateContext,
    MissingInput,
    Verdict,
    prompt_preview,
    trial_judges,
)
from tuneloop.signals.records import completion_text


def margins(ctx: GateContext, arm: str, pairs: list[dict]) -> list[float]:
    """log p(chosen) - log p(rejected) under one arm, per pair."""
    return ctx.evaluator.margins(
        arm, [(r["prompt"], completion_text(r["chosen"]), completion_text(r["rejected"])) for r in pairs]
    )


def preference_gains(candidate: list[float], production: list[float]) -> list[float]:
    """Per pair, how much likelier the candidate is than production to pick the chosen answer of the two."""
    return [sigmoid(c) - sigmoid(p) for c, p in zip(candidate, production, strict=True)]


def run(ctx: GateContext, cfg: HumanPreferencesConfig) -> Verdict:
    """Win rate of the candidate's preference over production's on held-out pairs, judged by its CI."""
    pairs = ctx.heldout_pairs()[: cfg.max_pairs]
    if len(pairs) < cfg.min_pairs:
        have = f"{len(pairs)} held-out preference pairs in the candidate's snapshot"
        if ctx.same_weights:  # feedback that rates answers one at a time makes few pairs for a long while
            return trial_judges(f"{have} (the suite needs {cfg.min_pairs})")
        raise MissingInput(
            f"{have}; the suite needs at least {cfg.min_pairs}"
            " (collect more feedback or raise heldout_fraction)"
        )
    cand, prod = margins(ctx, CANDIDATE, pairs), margins(ctx, PRODUCTION, pairs)
    gains = preference_gains(cand, prod)
    stats = win_rate(gains, cfg.tie_tolerance)
    diffs = [c - p for c, p in zip(cand, prod, strict=True)]
    metrics = {
        **stats,
        "candidate_accuracy": round(sum(m > 0 for m in cand) / len(cand), 4),
        "production_accuracy": round(sum(m > 0 for m in prod) / len(prod), 4),
        "mean_margin_gain": round(sum(diffs) / len(diffs), 4),
        "threshold": cfg.min_ci_high,
    }
    rows = [
        {
            "prompt": prompt_preview(r["prompt"]),
            "chosen": completion_text(r["chosen"])[:80],
            "candidate_margin": round(c, 3),
            "production_margin": round(p, 3),
            "outcome": "win" if g > cfg.tie_tolerance else "loss" if g < -cfg.tie_tolerance else "tie",
        }
        for r, c, p, g in zip(pairs[:MAX_ROWS], cand, prod, gains, strict=False)
    ]
    passed, judged = cfg.judge(stats)
    reason = f"candidate wins {stats['win_rate']:.0%} of {stats['n']} held-out pairs {judged}"
    return Verdict(passed, reason, metrics, rows)
