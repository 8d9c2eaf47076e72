"""Reward-model win rate: both versions answer the held-out prompts and the tenant's reward model judges.

The judge is checked first: it must still order held-out human pairs as the humans did. A reward model that
has drifted below `min_agreement` fails the suite whatever the win rate, so it can never approve anything.

A tenant with no judge yet fails the suite (closed), except for a light candidate: one that serves
production's weights and changes only its prompt or decoding (base.trial_judges). Feedback that is mostly
implicit can leave every reward model a turn trains unfit for a long time, and then nothing would ever
reach users; a light change is undone at runtime, the other suites still check it offline (safety, golden,
drift, PII), and its trial on users, with its guardrails, judges what a reward model cannot yet.
"""

from __future__ import annotations

from tuneloop.evaluate.policy import RewardModelConfig
from tuneloop.evaluate.stats import win_rate
from tuneloop.evaluate.suites.base import (
    CANDIDATE,
    FEWER_PROMPTS,
    MAX_ROWS,
    PRODUCTION,
    GateContext,
    MissingInput,
    Verdict,
    prompt_preview,
    trial_judges,
)
from tuneloop.model_files import resolve_model
from tuneloop.registry.versions import Registry, Version
from tuneloop.signals.records import prompt_text, row_prompt


def judge_version(ctx: GateContext, cfg: RewardModelConfig) -> Version:
    """The reward model named in the policy, else the tenant's production reward model."""
    registry = Registry(ctx.tenant)
    version = registry.get(cfg.version) if cfg.version else registry.production("reward_model")
    if version is None:
        raise MissingInput(
            "the tenant has no production reward model to judge with — train one, move it to production, "
            "or name a reward model version in suites.reward_model.version"
        )
    if version.kind != "reward_model" or not version.artifact_path:
        raise MissingInput(f"version {version.id} is not a reward model with an artifact")
    return version


def run(ctx: GateContext, cfg: RewardModelConfig) -> Verdict:
    """The reward model's agreement with held-out human pairs, then its candidate-vs-production win rate."""
    from tuneloop.learn.reward_model import load_reward_model, ordered_right

    if cfg.version is None and ctx.same_weights and Registry(ctx.tenant).production("reward_model") is None:
        return trial_judges("no reward model judges yet")
    judge = judge_version(ctx, cfg)
    pairs = ctx.heldout_pairs()
    if len(pairs) < cfg.min_agreement_pairs:
        raise MissingInput(
            f"{len(pairs)} held-out human pairs; checking the reward model needs {cfg.min_agreement_pairs}"
        )
    prompts = ctx.heldout_prompts(cfg.max_prompts)
    if len(prompts) < cfg.min_prompts:
        raise MissingInput(
            f"{len(prompts)} held-out prompts; the suite needs at least {cfg.min_prompts}{FEWER_PROMPTS}"
        )
    base = resolve_model(judge.base_model, ctx.home)
    model = load_reward_model(judge.artifact_path, base_model=str(base))
    right = ordered_right(model, pairs)
    agreement = sum(right) / len(pairs)

    limit = ctx.policy.generation.max_new_tokens
    cand = ctx.evaluator.generate(CANDIDATE, prompts, limit)
    prod = ctx.evaluator.generate(PRODUCTION, prompts, limit)
    cand_scores = model.score_batch(list(zip(prompts, cand, strict=True)))
    prod_scores = model.score_batch(list(zip(prompts, prod, strict=True)))
    # Identical answers are a tie even if batch padding nudges their scores.
    diffs = [
        0.0 if a == b else c - p for a, b, c, p in zip(cand, prod, cand_scores, prod_scores, strict=True)
    ]
    stats = win_rate(diffs, cfg.tie_tolerance)
    metrics = {
        **stats,
        "reward_model": judge.id,
        "agreement": round(agreement, 4),
        "agreement_pairs": len(pairs),
        "threshold": cfg.min_ci_high,
    }
    rows = [
        {
            "prompt": prompt_preview(p),
            "candidate": a[:100],
            "production": b[:100],
            "candidate_reward": round(c, 3),
            "production_reward": round(s, 3),
        }
        for p, a, b, c, s in zip(prompts[:MAX_ROWS], cand, prod, cand_scores, prod_scores, strict=False)
    ]
    prompts = [prompt_text(row_prompt(pair)) for pair in pairs]
    fit, agreement_words = cfg.fit_to_judge(right, f"{len(pairs)} held-out human pairs", prompts)
    if not fit:
        reason = f"reward model {judge.id} has drifted: it {agreement_words}, so it approves nothing"
        return Verdict(False, reason, metrics, rows)
    passed, judged = cfg.judge(stats)
    reason = (
        f"reward model {judge.id} (agreement {agreement:.0%}) prefers the candidate on "
        f"{stats['win_rate']:.0%} of {stats['n']} held-out prompts {judged}"
    )
    return Verdict(passed, reason, metrics, rows)
