"""Active learning: which of a tenant's recent interactions a person should judge next, and why.

Each candidate gets the strongest of its reasons, as a priority in [0, 1]:

- `flagged` (1.0): a safety flag, in metadata or an outcome event;
- `escalated` (0.9): the user escalated;
- `disagrees` (0.6 + 0.3 x the users' confidence): the reward model and the users point opposite ways;
- `uncertain` (0.8 x (1 - |2p - 1|)): the reward model cannot tell, a pair's P(a > b) = p near 1/2 or an
  answer scored near the median;
- `low_confidence` (0.5 x (1 - sureness)): the users' feedback is thin or cancels out (sureness: the
  smaller of the reward's confidence and its size over the policy's `label_threshold`);
- `golden_candidate` (0.3): users rated it among the best, a candidate for the golden set.

Items a supervisor adds by hand carry `manual` and priority 1.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from tuneloop.clock import now_utc
from tuneloop.evaluate.stats import sigmoid
from tuneloop.monitor.kpis import group_events, safety_flagged
from tuneloop.review.tasks import Item, Task, add_items, queued_ids
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.records import prompt_text
from tuneloop.signals.rewards import compute_rewards
from tuneloop.store.repository import TenantStore

Candidate = tuple[str, str | None, str, float]  # interaction, other interaction, reason, priority
Row = dict[str, Any]  # an interaction or event as `TenantStore.window` returns it


class Scorer(Protocol):
    """A reward model (`learn.reward_model.RewardModel`): higher is better."""

    temperature: float

    def score_batch(self, items: list[tuple[list[dict], str]]) -> list[float]: ...


def uncertainty(p: float) -> float:
    """1 when P = 1/2, 0 when the model is sure either way."""
    return 1.0 - abs(2.0 * p - 1.0)


def pair_probabilities(scorer: Scorer, pairs: Sequence[tuple[list[dict], str, str]]) -> list[float]:
    """P(first answer > second) for (prompt, first, second) triples, under the scorer's temperature."""
    if not pairs:
        return []
    scores = scorer.score_batch([(p, a) for p, a, _ in pairs] + [(p, b) for p, _, b in pairs])
    half = len(pairs)
    return [sigmoid((scores[i] - scores[half + i]) / scorer.temperature) for i in range(half)]


def pair_priorities(scorer: Scorer, pairs: Sequence[tuple[list[dict], str, str]]) -> list[float]:
    """Each pair's priority: its uncertainty, halved for each more uncertain pair on the same prompt, so a
    batch spreads over prompts instead of asking the same question again."""
    probabilities = pair_probabilities(scorer, pairs)
    order = sorted(range(len(pairs)), key=lambda i: -uncertainty(probabilities[i]))
    seen: dict[str, int] = {}
    out = [0.0] * len(pairs)
    for i in order:
        key = prompt_text(pairs[i][0])
        out[i] = 0.8 * uncertainty(probabilities[i]) * 0.5 ** seen.get(key, 0)
        seen[key] = seen.get(key, 0) + 1
    return out


def rank_pairs(scorer: Scorer, pairs: Sequence[tuple[list[dict], str, str]]) -> list[int]:
    """Indices of the pairs by priority: the order the queue offers pairwise items in."""
    priorities = pair_priorities(scorer, pairs)
    return sorted(range(len(pairs)), key=lambda i: -priorities[i])


def suggest(
    tenant: TenantStore,
    task: Task,
    policy: RewardPolicy,
    *,
    scorer: Scorer | None = None,
    days: int = 14,
    now: datetime | None = None,
) -> list[Candidate]:
    """Candidates from the last `days` not queued in the task yet, highest priority first."""
    now = now or now_utc()
    rows, events = tenant.window(now - timedelta(days=days), now + timedelta(seconds=1))
    queued = queued_ids(tenant, task)
    rows = [r for r in rows if r["id"] not in queued]
    if task.kind == "pairwise":
        found = _pair_candidates(rows, events, scorer)
    else:
        found = _answer_candidates(rows, events, policy, now, scorer)
    return sorted(found, key=lambda c: (-c[3], c[0]))


def fill(
    tenant: TenantStore,
    task: Task,
    policy: RewardPolicy,
    *,
    limit: int,
    actor: str,
    scorer: Scorer | None = None,
    days: int = 14,
) -> list[Item]:
    """Queue the `limit` most useful candidates (see the module's table)."""
    return add_items(
        tenant, task, suggest(tenant, task, policy, scorer=scorer, days=days)[:limit], actor=actor
    )


def _pair_candidates(rows: list[Row], events: list[Row], scorer: Scorer | None) -> list[Candidate]:
    """Two choices of one interaction, or a regenerated answer and the one that replaced it."""
    by_id = {r["id"]: r for r in rows}
    pairs: list[tuple[str, str | None]] = [(r["id"], None) for r in rows if len(r["choices"] or ()) >= 2]
    for e in events:
        kept = (e["value"] or {}).get("replaced_by") if e["kind"] == "regenerated" else None
        if kept in by_id and e["interaction_id"] in by_id:
            pairs.append((e["interaction_id"], kept))
    pairs = list(dict.fromkeys(pairs))
    if scorer is None:  # nothing to rank by: oldest first, at a low priority
        return [(a, b, "unjudged", 0.1) for a, b in pairs]
    texts = [
        (by_id[a]["messages"], by_id[a]["choices"][0], by_id[b]["response"] if b else by_id[a]["choices"][1])
        for a, b in pairs
    ]
    priorities = pair_priorities(scorer, texts)
    return [(a, b, "uncertain", round(p, 6)) for (a, b), p in zip(pairs, priorities, strict=True)]


def _answer_candidates(
    rows: list[Row], events: list[Row], policy: RewardPolicy, now: datetime, scorer: Scorer | None
) -> list[Candidate]:
    by_interaction = group_events(events)
    rewards = compute_rewards(rows, events, policy, now)
    model = _standardised(scorer, rows) if scorer is not None else {}
    found: list[Candidate] = []
    for row in rows:
        iid, own = row["id"], by_interaction.get(row["id"], [])
        reasons: list[tuple[float, str]] = []
        if safety_flagged(row, own):
            reasons.append((1.0, "flagged"))
        if any(e["kind"] == "escalated" for e in own):
            reasons.append((0.9, "escalated"))
        users = rewards.get(iid)
        z = model.get(iid)
        if z is not None:
            reasons.append((0.8 * uncertainty(sigmoid(z)), "uncertain"))
        if users is not None:
            if z is not None and abs(z) > 0.5 and users.reward * z < 0 and users.confidence >= 0.3:
                reasons.append((0.6 + 0.3 * users.confidence, "disagrees"))
            # Unsure: little evidence, or evidence that cancels out (a reward too small to label by).
            sureness = min(users.confidence, abs(users.reward) / policy.label_threshold, 1.0)
            if sureness < 0.5:
                reasons.append((0.5 * (1.0 - sureness), "low_confidence"))
            elif users.reward >= policy.sft_min_reward:
                reasons.append((0.3, "golden_candidate"))
        if reasons:
            priority, reason = max(reasons)
            found.append((str(iid), None, reason, round(priority, 6)))
    return found


def _standardised(scorer: Scorer, rows: list[Row]) -> dict[str, float]:
    """Each answer's reward-model score as a z-score around the median (the model's scale is arbitrary)."""
    if not rows:
        return {}
    scores = scorer.score_batch([(r["messages"], r["response"]) for r in rows])
    middle = statistics.median(scores)
    spread = statistics.pstdev(scores) or 1.0
    return {r["id"]: (s - middle) / spread for r, s in zip(rows, scores, strict=True)}


def load_judge(tenant: TenantStore, settings: Any) -> Scorer | None:
    """The tenant's production reward model (the gate's judge), or None if it has none yet."""
    from pathlib import Path

    from tuneloop.learn.embedding_reward import HEAD_FILE
    from tuneloop.learn.reward_model import load_reward_model
    from tuneloop.model_files import resolve_model
    from tuneloop.registry.versions import Registry

    judge = Registry(tenant).production("reward_model")
    if judge is None or not judge.artifact_path:
        return None
    if (Path(judge.artifact_path) / HEAD_FILE).exists():  # the MiniLM head needs no base model
        return load_reward_model(judge.artifact_path)
    return load_reward_model(
        judge.artifact_path, base_model=str(resolve_model(settings.model, settings.home))
    )
