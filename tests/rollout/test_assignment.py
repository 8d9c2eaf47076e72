from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import chisquare

from tuneloop.rollout.assignment import BUCKETS, assign, balanced_key, bucket
from tuneloop.rollout.multi_arm import assign_arm, reweigh

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


def _arms(count: int) -> list[dict]:
    live = [
        {"arm": "control", "state": "live"},
        *({"arm": f"arm-{i}", "state": "live"} for i in range(1, count)),
    ]
    return reweigh(live, {})


def test_a_new_experiments_key_splits_a_few_dozen_recent_users_as_planned() -> None:
    for n in (20, 21, 31, 40, 64):
        users = [f"anon-{n}-{i}" for i in range(n)]
        key, smallest = balanced_key(
            users, lambda k, u: assign(k, u, 0.5), {"treatment": 0.5, "control": 0.5}
        )
        counts = Counter(assign(key, u, 0.5) for u in users)
        assert re.fullmatch(r"exp-[0-9a-f]{10}", key) and smallest == min(counts.values()) == n // 2
        # A 20 % canary of 40 users: its treatment arm holds 8, as planned, not the 4 one hash may give it.
        key, smallest = balanced_key(
            users, lambda k, u: assign(k, u, 0.2), {"treatment": 0.2, "control": 0.8}
        )
        treated = sum(assign(key, u, 0.2) == "treatment" for u in users)
        assert smallest == min(treated, n - treated) and treated in (int(n * 0.2), int(n * 0.2) + 1)
    for count in (3, 4):
        arms = _arms(count)
        for n in (24, 31, 44):
            users = [f"user-{count}-{n}-{i}" for i in range(n)]
            shares = {a["arm"]: a["weight"] for a in arms}
            key, smallest = balanced_key(users, lambda k, u, arms=arms: assign_arm(k, u, arms), shares)
            assert (
                smallest == min(Counter(assign_arm(key, u, arms) for u in users).values()) >= n // count - 1
            )


def test_a_tenant_with_no_recent_users_gets_a_fresh_key() -> None:
    split = {"treatment": 0.5, "control": 0.5}
    first, second = (balanced_key([], lambda k, u: assign(k, u, 0.5), split) for _ in range(2))
    assert first[1] == second[1] == 0 and first[0] != second[0]
