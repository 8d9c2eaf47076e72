"""Amplification: sampled answers are scored and the best is paired against the worst."""

from __future__ import annotations

import numpy as np

from tests.learn.data import preference_rows
from tuneloop.learn.amplify import amplify, load_policy
from tuneloop.learn.embedding_reward import EmbeddingRewardModel


def test_amplify_pairs_best_against_worst_and_counts_sources(tiny_model):
    policy = load_policy(str(tiny_model))
    # A real embedding reward model with fixed random weights: any scorer ranks the samples.
    scorer = EmbeddingRewardModel(np.random.default_rng(0).normal(size=768).astype(np.float32))
    prompts = [row["prompt"] for row in preference_rows(2)]
    result = amplify(prompts, policy, scorer, k=3, max_new_tokens=6, human_pairs=preference_rows(5))

    assert result.counts == {"human": 5, "amplified": len(result.pairs), "generated": 6}
    assert len(result.pairs) == 2  # random weights give distinct scores to distinct random samples
    for pair in result.pairs:
        assert pair["source"] == "amplified" and pair["margin"] > 0
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert scorer.score(pair["prompt"], chosen) > scorer.score(pair["prompt"], rejected)
    assert result.rows[:5] == preference_rows(5)
