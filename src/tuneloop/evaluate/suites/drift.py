"""Drift bounds: how far the candidate moved — answer length against production, KL from the base model, and
collapse into degenerate answers.

Length may move as far as the feedback asked: the snapshot's preference pairs say which way (their median
chosen/rejected length ratio, and how many chose the shorter answer against the longer; with few pairs, the
answers users labelled desirable against undesirable, as the light candidates read it). Shorter, when
users clearly asked for shorter, is bounded only by MAX_SHRINK (the chosen answers are the best the model
wrote, not what users want, so the asked size understates it: the demo's users asked -23 % and the
candidate they preferred 83 % of the time was -55 %; the rag scenario's asked -7 % in 54 of 85 pairs
against 31); longer, as asked, up to twice the asked change. KL is measured where the candidate actually
goes: along its own greedy answers to held-out prompts, as the mean over answer tokens of KL(candidate's
next-token distribution || the base's), in nats. Collapse is judged on the same prompts for both versions:
an answer that is empty or loops on one phrase is degenerate, and a candidate whose answers mostly are,
significantly more than production's, has collapsed. A few loops are for the canary to judge: users see
them.
"""

from __future__ import annotations

import re
from collections import Counter

from tuneloop.evaluate.policy import DriftConfig
from tuneloop.evaluate.stats import paired_change_p
from tuneloop.evaluate.suites.base import (
    CANDIDATE,
    FEWER_PROMPTS,
    PRODUCTION,
    GateContext,
    MissingInput,
    Verdict,
    prompt_preview,
)
from tuneloop.signals.pairs import MATERIAL_ASK, length_ask, length_votes

MAX_SHRINK = 0.9  # however short users want answers, a candidate that drops 90 % of every answer collapsed
WORD = re.compile(r"\w+")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def allowed_length_change(
    cfg: DriftConfig, asked: float, change: float, votes: tuple[int, int] = (0, 0)
) -> float:
    """How far mean answer length may move: `max_length_change`; longer as users asked, up to twice the
    ask; shorter, when users clearly asked for shorter answers, up to MAX_SHRINK. Clearly: a median ask of
    at least MATERIAL_ASK, or significantly more pairs (`votes`: chose shorter, chose longer) choosing the
    shorter answer, so that many pairs asking a little count as much as a few asking a lot."""
    if change < 0:
        shorter, longer = votes
        clearly = asked <= -MATERIAL_ASK or paired_change_p(shorter, longer) < cfg.alpha
        return MAX_SHRINK if clearly else cfg.max_length_change
    return max(cfg.max_length_change, 2 * asked)


def degenerate(answer: str) -> bool:
    """Empty, or one 3-word phrase said three or more times: the answer of a collapsed model."""
    words = WORD.findall(answer.lower())
    if not words:
        return True
    trigrams = Counter(zip(words, words[1:], words[2:], strict=False))
    return bool(trigrams) and max(trigrams.values()) >= 3


def run(ctx: GateContext, cfg: DriftConfig) -> Verdict:
    """Relative change of mean answer length vs production, and mean per-token KL(candidate || base)."""
    prompts = ctx.heldout_prompts(cfg.max_prompts)
    if len(prompts) < cfg.min_prompts:
        raise MissingInput(
            f"{len(prompts)} held-out prompts; the drift suite needs at least {cfg.min_prompts}"
            + FEWER_PROMPTS
        )
    limit = ctx.policy.generation.max_new_tokens
    cand = ctx.evaluator.generate(CANDIDATE, prompts, limit)
    prod = ctx.evaluator.generate(PRODUCTION, prompts, limit)
    cand_len, prod_len = _mean([len(a) for a in cand]), _mean([len(a) for a in prod])
    length_change = (cand_len - prod_len) / max(prod_len, 1.0)
    pairs = ctx.snapshot.rows("pairs") if ctx.snapshot is not None else []
    labels = ctx.snapshot.rows("kto") if ctx.snapshot is not None else []
    asked, votes = length_ask(pairs, labels).change, length_votes(pairs)
    allowed = allowed_length_change(cfg, asked, length_change, votes)
    cand_bad, prod_bad = [degenerate(a) for a in cand], [degenerate(b) for b in prod]
    collapse_p = paired_change_p(
        sum(c and not p for c, p in zip(cand_bad, prod_bad, strict=True)),
        sum(p and not c for c, p in zip(cand_bad, prod_bad, strict=True)),
    )
    cand_kl = ctx.evaluator.kl_from_base(CANDIDATE, list(zip(prompts, cand, strict=True)))
    prod_kl = ctx.evaluator.kl_from_base(PRODUCTION, list(zip(prompts, prod, strict=True)))
    metrics = {
        "prompts": len(prompts),
        "candidate_mean_length": round(cand_len, 1),
        "production_mean_length": round(prod_len, 1),
        "length_change": round(length_change, 4),
        "asked_length_change": round(asked, 4),
        "pairs_chose_shorter": votes[0],
        "pairs_chose_longer": votes[1],
        "allowed_length_change": round(allowed, 4),
        "candidate_degenerate": sum(cand_bad),
        "production_degenerate": sum(prod_bad),
        "collapse_p": round(collapse_p, 4),
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
    if abs(length_change) > allowed + 1e-9:
        problems.append(
            f"mean answer length changed {length_change:+.0%} (allowed {allowed:.0%}; "
            f"users asked for {asked:+.0%}; {votes[0]} pairs chose the shorter answer, {votes[1]} the longer)"
        )
    collapsed = sum(cand_bad) > cfg.max_degenerate_share * len(cand)
    if collapsed and sum(cand_bad) > sum(prod_bad) and collapse_p < cfg.alpha:
        problems.append(
            f"{sum(cand_bad)} degenerate answers against production's {sum(prod_bad)} (p {collapse_p:.2g})"
        )
    if metrics["candidate_kl_from_base"] > cfg.max_kl:
        problems.append(f"KL from base {metrics['candidate_kl_from_base']:.3f} nats/token (> {cfg.max_kl})")
    summary = (
        f"length {cand_len:.0f} vs {prod_len:.0f} chars ({length_change:+.0%}; users asked {asked:+.0%}), "
        f"KL from base {metrics['candidate_kl_from_base']:.3f} nats/token"
    )
    return Verdict(
        not problems, "; ".join(problems) + f" — {summary}" if problems else summary, metrics, rows
    )
