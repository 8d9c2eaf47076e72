"""Amplification: sampled answers are scored and the best is paired against the worst."""

from __future__ import annotations

import numpy as np
import pytest

from tests.learn.data import preference_rows
from tuneloop.learn.amplify import AmplifyResult, amplify, load_generator
from tuneloop.learn.embedding_reward import EmbeddingRewardModel
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.jobs import load_rows

# A real embedding reward model with fixed random weights: any scorer ranks the samples.
SCORER = EmbeddingRewardModel(np.random.default_rng(0).normal(size=768).astype(np.float32))


@pytest.fixture(scope="module")
def amplified(tiny_model) -> AmplifyResult:
    """Two prompts amplified with three samples each, next to five human pairs."""
    prompts = [row["prompt"] for row in preference_rows(2)]
    generator = load_generator(str(tiny_model))
    return amplify(prompts, generator, SCORER, k=3, max_new_tokens=6, human_pairs=preference_rows(5))


def test_amplify_pairs_best_against_worst_and_counts_sources(amplified):
    assert amplified.counts == {"human": 5, "amplified": len(amplified.pairs), "generated": 6}
    assert len(amplified.pairs) == 2  # random weights give distinct scores to distinct random samples
    for pair in amplified.pairs:
        assert pair["origin"] == "amplified" and pair["margin"] > 0
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert SCORER.score(pair["prompt"], chosen) > SCORER.score(pair["prompt"], rejected)
    assert amplified.rows[:5] == preference_rows(5)


def test_repeat_zero_leaves_amplified_rows_out(amplified, tmp_path):
    spec = JobSpec(kind="dpo", base_model="m", repeat={"amplified": 0}, output_dir=tmp_path)
    assert load_rows(amplified.rows, "dpo", spec.repeat) == preference_rows(5)
    assert len(load_rows(amplified.rows, "dpo", {"amplified": 2})) == 5 + 2 * len(amplified.pairs)
