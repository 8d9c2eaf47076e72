import numpy as np
import pytest

from tests.signals.streams import NOW, event, interaction
from tuneloop.signals import build_signals
from tuneloop.signals.embeddings import embed, embed_unique
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.records import prompt_text, row_prompt
from tuneloop.signals.split import MAX_HELDOUT_FRACTION, heldout_fraction, prompt_clusters, split_of

TOPICS = [
    "How do I reset my password?",
    "What is your refund policy?",
    "How do I change my shipping address?",
    "Can I pay with PayPal?",
    "How do I delete my account?",
    "Where can I download my invoice?",
    "How do I contact customer support?",
    "Do you ship to Canada?",
    "How do I enable two-factor authentication?",
    "Why was my card declined?",
    "How do I cancel my subscription?",
    "Can I change my username?",
]
VARIANTS = [str, "{} Please help.".format, "hi, {}".format, str.lower]


def test_chained_near_duplicates_share_one_cluster() -> None:
    a, b, c = np.array([1.0, 0.0]), np.array([0.8, 0.6]), np.array([0.28, 0.96])  # a~b, b~c, a and c apart
    clusters = prompt_clusters(["a", "b", "c", "d"], {"a": a, "b": b, "c": c, "d": -a}, 0.75)
    assert clusters["a"] == clusters["b"] == clusters["c"] != clusters["d"]
    assert prompt_clusters(["a", "a", "b"], None, 0.9) == {
        "a": prompt_clusters(["a"], None, 0.9)["a"],
        "b": prompt_clusters(["b"], None, 0.9)["b"],
    }


def test_split_is_a_stable_seeded_fraction() -> None:
    keys = [f"cluster{n}" for n in range(2000)]
    held = [split_of(k, 0.2, seed=7) for k in keys]
    assert held == [split_of(k, 0.2, seed=7) for k in keys]
    assert 0.17 < held.count("heldout") / len(keys) < 0.23
    assert held != [split_of(k, 0.2, seed=8) for k in keys]


@pytest.mark.slow
def test_embeddings_are_normalised_and_put_paraphrases_close() -> None:
    vectors = embed(["How do I reset my password?", "how can i reset my password", "Do you ship to Canada?"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.9 > vectors[0] @ vectors[2]
    assert embed([]).shape == (0, 384)


@pytest.mark.slow
def test_no_near_duplicate_of_a_training_prompt_is_held_out() -> None:
    policy = RewardPolicy(half_life_days=None, heldout_fraction=0.5, seed=3)
    chats, events = [], []
    for t, topic in enumerate(TOPICS):
        for v, variant in enumerate(VARIANTS):
            iid = f"t{t}v{v}"
            chats.append(interaction(iid, variant(topic), f"answer {iid}"))
            events.append(event(iid, "thumbs", 1 if v % 2 else -1, rater=f"r{(t + v) % 6}"))
    signals = build_signals(chats, events, policy, NOW)
    rows = signals.kto + signals.pairs + signals.sft
    prompts = {prompt_text(row_prompt(r)): r["split"] for r in rows}
    assert set(prompts.values()) == {"train", "heldout"}
    vectors = embed_unique(list(prompts))
    train = [vectors[p] for p, s in prompts.items() if s == "train"]
    held = [vectors[p] for p, s in prompts.items() if s == "heldout"]
    assert float(np.max(np.stack(train) @ np.stack(held).T)) < policy.near_duplicate_threshold
    # The guarantee had work to do: paraphrases merged into far fewer clusters than prompts.
    clusters = prompt_clusters(prompts, vectors, policy.near_duplicate_threshold)
    assert len(set(clusters.values())) <= len(TOPICS) + 4 < len(prompts)
    # Same-topic answers were compared across paraphrases.
    assert any(row["origin"] == "reward" for row in signals.pairs)


def test_a_small_snapshot_holds_out_enough_pairs_for_the_gate_and_a_large_one_keeps_its_share() -> None:
    small = [f"cluster-{i}" for i in range(40)]
    fraction = heldout_fraction(small, 0.1, seed=0, min_pairs=12)
    assert sum(split_of(c, fraction, 0) == "heldout" for c in small) == 12
    large = [f"cluster-{i}" for i in range(2000)]
    assert heldout_fraction(large, 0.1, seed=0, min_pairs=12) == 0.1
    tiny = [f"cluster-{i}" for i in range(6)]
    assert heldout_fraction(tiny, 0.1, seed=0, min_pairs=12) <= MAX_HELDOUT_FRACTION


def test_pairs_on_a_few_questions_still_hold_out_enough_distinct_questions_for_the_gate() -> None:
    # 37 pairs on 15 questions: the pairs' own minimum is met by 2 questions, which left the gate's
    # reward-model suite (4 prompts) and drift suite (3) without input.
    questions = [f"question-{i}" for i in range(15)]
    pair_clusters = [questions[i % 15] for i in range(150)]
    fraction = heldout_fraction(pair_clusters, 0.1, 0, 12, questions, 4)
    assert sum(split_of(q, fraction, 0) == "heldout" for q in questions) >= 4
    assert fraction <= MAX_HELDOUT_FRACTION
    many = [f"question-{i}" for i in range(500)]
    assert heldout_fraction(many, 0.1, 0, 12, many, 4) == 0.1  # a large snapshot keeps its share
