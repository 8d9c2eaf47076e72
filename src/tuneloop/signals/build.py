"""Everything signals makes for one tenant, as a pure function of (interactions, events, policy, now)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from tuneloop.signals import pairs
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.raters import RaterReport, cap_rows, estimate_raters
from tuneloop.signals.records import Record, as_of, canonical, one_tenant, prompt_text, rows_hash
from tuneloop.signals.rewards import Reward, compute_rewards
from tuneloop.signals.split import split_rows

Embedder = Callable[[Sequence[str]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Signals:
    """The datasets (rows with lineage and a `split` column), the rewards behind them and the rater report."""

    tenant_id: str | None
    pairs: list[dict[str, Any]]
    kto: list[dict[str, Any]]
    sft: list[dict[str, Any]]
    rewards: dict[str, Reward]
    raters: RaterReport

    def content_hash(self) -> str:
        """One hash over every dataset's rows; equal inputs give equal hashes."""
        return rows_hash(
            [{"pairs": rows_hash(self.pairs), "kto": rows_hash(self.kto), "sft": rows_hash(self.sft)}]
        )


def build_signals(
    interactions: Iterable[Record],
    events: Iterable[Record],
    policy: RewardPolicy,
    now: datetime,
    embed: Embedder | None = None,
) -> Signals:
    """Rater weights → rewards → pairs, labels and SFT rows → per-rater cap → split by prompt cluster.

    `embed` maps prompt texts to normalised vectors (default: all-MiniLM-L6-v2). With
    `near_duplicate_threshold: 1.0` only identical prompts count as duplicates and nothing is embedded.
    """
    interactions, events = list(interactions), list(events)
    tenant = one_tenant(interactions, events)
    report = estimate_raters(interactions, events, policy, now)
    weights = report.weights
    rewards = compute_rewards(interactions, events, policy, now, weights)
    by_id, _ = as_of(interactions, events, now)
    vectors = None
    if policy.near_duplicate_threshold < 1.0:
        if embed is None:
            from tuneloop.signals.embeddings import embed_unique

            embed = embed_unique
        vectors = embed([prompt_text(r["messages"]) for r in by_id.values()])
    live = list(by_id.values())
    pair_rows = [
        *pairs.preference_pairs(live, events, policy, now, weights),
        *pairs.edit_pairs(live, events, policy, now, weights),
        *pairs.regenerated_pairs(live, events, policy, now, weights),
        *pairs.reward_pairs(live, rewards, policy, vectors),
    ]
    built = {
        "pairs": pair_rows,
        "kto": pairs.kto_rows(live, events, rewards, policy, now, weights),
        "sft": pairs.sft_rows(live, events, rewards, policy, now, weights),
    }
    datasets = {
        name: cap_rows([r for r in rows if not pairs.teaches_placeholders(r)], policy.rater_cap)
        for name, rows in built.items()
    }
    split = split_rows(
        datasets,
        vectors,
        policy.near_duplicate_threshold,
        policy.heldout_fraction,
        policy.seed,
        policy.min_heldout_pairs,
        policy.min_heldout_prompts,
    )
    return Signals(
        tenant_id=tenant,
        pairs=canonical(split["pairs"]),
        kto=canonical(split["kto"]),
        sft=canonical(split["sft"]),
        rewards=rewards,
        raters=report,
    )
