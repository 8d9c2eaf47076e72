"""Which reward model judges a tenant's candidates. A new reward model takes the seat by the rules the gate
checks its judge with (`RewardModelConfig.fit_to_judge` and, when the policy caps ε, `within_privacy_budget`),
whether it was trained by the loop or by `tuneloop train reward`."""

from __future__ import annotations

from typing import Any

from tuneloop.config import Settings, tenant_policy
from tuneloop.errors import NotFound
from tuneloop.evaluate.policy import GatePolicy, RewardModelConfig
from tuneloop.evaluate.stats import paired_change_p
from tuneloop.learn.privacy import spent_budget
from tuneloop.learn.reward_model import load_reward_model, ordered_right
from tuneloop.model_files import resolve_model
from tuneloop.registry.versions import Registry, Version
from tuneloop.signals.records import prompt_text, row_prompt
from tuneloop.signals.snapshots import get_snapshot
from tuneloop.store.repository import TenantStore


def appoint_judge(
    tenant: TenantStore, settings: Settings, reward_model: Version, *, actor: str
) -> dict[str, Any]:
    """Measure a candidate reward model on its snapshot's held-out human pairs; production if it is fit to
    judge, blocked if not. Returns what was measured and who judges now."""
    suites = tenant_policy(settings.home, tenant.tenant.name, GatePolicy).suites
    rule = suites.reward_model
    assert reward_model.snapshot_hash is not None, "a trained reward model records its snapshot"
    pairs = get_snapshot(tenant, reward_model.snapshot_hash).rows("pairs", split="heldout")
    registry = Registry(tenant)
    sitting = registry.production("reward_model")
    base = str(resolve_model(settings.model, settings.home))

    def ordered(version: Version, on: list[dict[str, Any]]) -> list[bool]:
        return ordered_right(load_reward_model(version.artifact_path, base_model=base), on)

    on_pairs = len(pairs) >= rule.min_agreement_pairs
    prompts = [prompt_text(row_prompt(pair)) for pair in pairs]
    if on_pairs:
        right = ordered(reward_model, pairs)
        accuracy = round(sum(right) / len(pairs), 4)
        measured_on = f"{len(pairs)} held-out human pairs"
        fit, why = rule.fit_to_judge(right, measured_on, prompts)
    else:  # too few held-out pairs: its own test split, a few pairs cut from training, a noisier figure
        accuracy = reward_model.metrics.get("test_accuracy", 0.0)
        measured = int(reward_model.metrics.get("test_pairs", 0))
        measured_on = f"its test split of {measured} pairs"
        agreed = round(accuracy * measured)
        fit, why = rule.fit_to_judge([True] * agreed + [False] * (measured - agreed), measured_on)
    cap = suites.judge_privacy.max_epsilon
    if suites.judge_privacy.caps_epsilon and cap is not None:
        private, budget = within_privacy_budget(reward_model, cap)
        fit, why = fit and private, f"{why}; {budget}"
    contested = sitting is not None and sitting.id != reward_model.id and sitting.erased_at is None
    if not fit and on_pairs and contested:
        standing = _step_down_if_drifted(
            registry, rule, sitting, ordered(sitting, pairs), prompts, measured_on, actor
        )
        why = f"{why}; {standing}"
    elif fit and on_pairs and contested:
        # Fit is a floor; a sitting judge that orders surely more of the same pairs right keeps its seat (a
        # fast reward model that passes the floor must not unseat a LoRA one that is better). Otherwise the
        # newer one, trained on more and fresher feedback, takes it: on a dozen pairs one pair apart is
        # noise. A judge trained on erased data keeps no claim: erasure's promise is that the next turn
        # replaces it.
        # Only on pairs whose prompts the sitting judge did not train on: held-out clusters shift as new
        # paraphrases join them, and a judge scored on its own training pairs looked surely better.
        trained = _trained_prompts(tenant, sitting)
        fresh = [i for i, prompt in enumerate(prompts) if prompt not in trained]
        if len(fresh) >= rule.min_agreement_pairs:
            held = ordered(sitting, [pairs[i] for i in fresh])
            mine = [right[i] for i in fresh]
            p = surely_better_p(held, mine)
            counts = (
                f"({sum(held)} against {sum(mine)} of {len(fresh)} it did not train on; one-sided "
                f"McNemar p {p:.2f}, alpha {rule.alpha})"
            )
            fit = p >= rule.alpha
            verdict = "but judge {} orders" if not fit else "and judge {} does not order"
            why = f"{why}, {verdict.format(sitting.id)} surely more of the same pairs right {counts}"
    if reward_model.state == "candidate":
        if fit:
            registry.move(reward_model.id, "gated", actor=actor, reason=why)
            registry.move(reward_model.id, "production", actor=actor, reason="judges the next candidates")
        else:
            registry.move(reward_model.id, "blocked", actor=actor, reason=why)
    judge = registry.production("reward_model")
    return {
        "trained": reward_model.id,
        "accuracy": accuracy,
        "measured_on": measured_on,
        "verdict": why,
        "judge": judge.id if judge else None,
    }


def _step_down_if_drifted(
    registry: Registry,
    rule: RewardModelConfig,
    sitting: Version,
    right: list[bool],
    prompts: list[str],
    measured_on: str,
    actor: str,
) -> str:
    """Retire the sitting judge when it orders surely too few of these held-out pairs right (`right`); what
    it scored, in words. The gate checks the judge on the very pairs of the adapter this turn would train and
    blocks everything a drifted judge judges, so the turn looks for a fit judge now (or trains no adapter)
    rather than after the training: an unseen-domain turn trained DPO for 8 minutes, then was blocked so."""
    fit, words = rule.fit_to_judge(right, measured_on, prompts)
    if fit:
        return f"judge {sitting.id} keeps its seat: it {words}"
    registry.move(sitting.id, "retired", actor=actor, reason=f"drifted: it {words}")
    return f"judge {sitting.id} steps down, as it {words}"


def _trained_prompts(tenant: TenantStore, judge: Version) -> set[str]:
    """The prompts of the pairs `judge` trained on: its snapshot's train split (none known without one)."""
    if judge.snapshot_hash is None:
        return set()
    try:
        rows = get_snapshot(tenant, judge.snapshot_hash).rows("pairs", split="train")
    except NotFound:  # its snapshot was deleted: what it trained on is unknown
        return set()
    return {prompt_text(row_prompt(row)) for row in rows}


def surely_better_p(held: list[bool], right: list[bool]) -> float:
    """One-sided exact McNemar p-value that the judge ordering the pairs `held` right is better than the one
    ordering the pairs `right` right: only the pairs the two order differently count."""
    only_held = sum(h and not r for h, r in zip(held, right, strict=True))
    only_new = sum(r and not h for h, r in zip(held, right, strict=True))
    return paired_change_p(only_held, only_new)


def within_privacy_budget(reward_model: Version, max_epsilon: float) -> tuple[bool, str]:
    """Whether the reward model was trained by DP-SGD spending at most `max_epsilon`, and why."""
    spent = spent_budget(reward_model.metrics)
    if spent is None:
        return False, (
            f"reward model {reward_model.id} has no recorded ε (trained without differential privacy) but "
            f"the gate allows at most ε={max_epsilon:g} — train one with `tuneloop train reward --fast "
            f"--dp-epsilon {max_epsilon:g}` or the loop policy's reward_dp"
        )
    epsilon, delta = spent
    within = epsilon <= max_epsilon
    return within, (
        f"reward model {reward_model.id} spent ε={epsilon:.3g} (δ={delta:.1g}), "
        f"{'within' if within else 'above'} the allowed ε={max_epsilon:g}"
    )
