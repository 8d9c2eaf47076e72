"""Drift bounds: how far the candidate moved — answer length against production, and KL from the base model.

KL is measured where the candidate actually goes: along its own greedy answers to held-out prompts, as the
mean over answer tokens of KL(candidate's next-token distribution || the base's), in nats.
"""

from __future__ import annotations

from tuneloop.evaluate.policy import DriftConfig
from tuneloop.evaluate.suites.base import (
    CANDIDATE,
    PRODUCTION,
    GateContext,
    MissingInput,
    Verdict,
    prompt_preview,
)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run(ctx: GateContext, cfg: DriftConfig) -> Verdict:
    """Relative change of mean answer length vs production, and mean per-token KL(candidate || base)."""
    prompts = ctx.heldout_prompts(cfg.max_prompts)
    if len(prompts) < cfg.min_prompts:
        raise MissingInput(
            f"{len(prompts)} held-out prompts; the drift suite needs at least {cfg.min_prompts}"
        )
    limit = ctx.policy.generation.max_new_tokens
    cand = ctx.evaluator.generate(CANDIDATE, prompts, limit)
    prod = ctx.evaluator.generate(PRODUCTION, prompts, limit)
    cand_len, prod_len = _mean([len(a) for a in cand]), _mean([len(a) for a in prod])
    length_change = abs(cand_len - prod_len) / max(prod_len, 1.0)
    cand_kl = ctx.evaluator.kl_from_base(CANDIDATE, list(zip(prompts, cand, strict=True)))
    prod_kl = ctx.evaluator.kl_from_base(PRODUCTION, list(zip(prompts, prod, strict=True)))
    metrics = {
        "prompts": len(prompts),
        "candidate_mean_length": round(cand_len, 1),
        "production_mean_length": round(prod_len, 1),
        "length_change": round(length_change, 4),
        "candidate_kl_from_base": round(_mean(cand_kl), 4),
        "production_kl_from_base": round(_mean(prod_kl), 4),
    }
    rows = [
        {
            "prompt": prompt_preview(p),
            "candidate_length": len(a),
            "production_length": len(b),
            "candidate_kl": round(k, 4),
        }
        for p, a, b, k in zip(prompts, cand, prod, cand_kl, strict=True)
    ]
    problems = []
    if length_change > cfg.max_length_change:
        problems.append(f"mean answer length changed {length_change:.0%} (> {cfg.max_length_change:.0%})")
    if metrics["candidate_kl_from_base"] > cfg.max_kl:
        problems.append(f"KL from base {metrics['candidate_kl_from_base']:.3f} nats/token (> {cfg.max_kl})")
    summary = (
        f"length {cand_len:.0f} vs {prod_len:.0f} chars ({length_change:.0%} change), "
        f"KL from base {metrics['candidate_kl_from_base']:.3f} nats/token"
    )
    return Verdict(
        not problems, "; ".join(problems) + f" — {summary}" if problems else summary, metrics, rows
    )
