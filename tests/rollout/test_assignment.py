from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import chisquare

from tuneloop.rollout.assignment import BUCKETS, assign, bucket

USERS = [f"user-{i}" for i in range(100_000)]


def test_assignment_matches_the_published_test_vectors() -> None:
    vectors = json.loads((Path(__file__).parents[2] / "docs" / "assignment_vectors.json").read_text())
    assert len(vectors) >= 10
    for v in vectors:
        assert bucket(v["experiment_key"], v["user_id"]) == v["bucket"]
        assert assign(v["experiment_key"], v["user_id"], 0.2) == v["arm_at_20pct"]


def test_buckets_are_uniform_over_100k_users() -> None:
    counts = np.bincount([bucket("exp-1", u) for u in USERS], minlength=BUCKETS)
    assert chisquare(counts).pvalue > 0.001  # all 10,000 buckets, 10 users expected in each


def test_assignment_is_sticky() -> None:
    first = [assign("exp-1", u, 0.3) for u in USERS[:2000]]
    assert first == [assign("exp-1", u, 0.3) for u in USERS[:2000]]


def test_raising_the_share_only_moves_users_from_control_to_treatment() -> None:
    users = USERS[:20_000]
    previous: set[str] = set()
    for share in (0.0, 0.05, 0.2, 0.5, 1.0):
        treated = {u for u in users if assign("exp-1", u, share) == "treatment"}
        assert previous <= treated
        assert abs(len(treated) / len(users) - share) < 0.01
        previous = treated


def test_a_new_experiment_key_reshuffles_users() -> None:
    a = np.array([bucket("exp-1", u) for u in USERS[:20_000]]) < 5000
    b = np.array([bucket("exp-2", u) for u in USERS[:20_000]]) < 5000
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03
