"""Sticky assignment of end users to experiment arms.

    bucket = int.from_bytes(SHA-256(f"{experiment_key}:{user_id}".encode("utf-8"))[:8], "big") % 10_000
    arm    = "treatment" if bucket < round(share * 10_000) else "control"

The same user always lands in the same bucket of an experiment, so raising the share only ever moves users
from control to treatment (a monotone ramp), and a new experiment key reshuffles everyone. `round` keeps
float noise (0.07 * 10_000 = 700.0000000000001) from moving a boundary bucket. Any other implementation
(a proxy, a client SDK) must reproduce docs/assignment_vectors.json. The gateway passes the user id as
stored (for tenants that redact, its keyed hash `anon-...`), so the raw id never reaches this module.

Callers without an end-user id pass a request-derived id (the request or interaction id): such traffic is
assigned per request rather than per user, so one person may see both arms — acceptable for anonymous
traffic, but send a stable user id whenever there is one.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

BUCKETS = 10_000
Arm = Literal["control", "treatment"]
# Keys tried for an experiment: among a few dozen users the most even of 64 splits puts every arm within a
# user of its share (tests/rollout/test_assignment.py); past KEY_HASHES the users are many enough that one
# random key fills every arm near its share.
KEY_TRIES = 64
KEY_HASHES = 200_000


def _hash64(experiment_key: str, user_id: str) -> int:
    digest = hashlib.sha256(f"{experiment_key}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def bucket(experiment_key: str, user_id: str) -> int:
    """The user's bucket in [0, 10000) for this experiment."""
    return _hash64(experiment_key, user_id) % BUCKETS


def uniform(experiment_key: str, user_id: str) -> float:
    """The same hash as a number in (0, 1): (first 8 bytes + 0.5) / 2⁶⁴ (multi-arm assignment)."""
    return (_hash64(experiment_key, user_id) + 0.5) / 2**64


def assign(experiment_key: str, user_id: str, share: float) -> Arm:
    """The user's arm when `share` of the traffic goes to the treatment."""
    return "treatment" if bucket(experiment_key, user_id) < round(share * BUCKETS) else "control"


def new_key() -> str:
    """A fresh experiment id: the key every assignment of that experiment hashes with."""
    return f"exp-{uuid.uuid4().hex[:10]}"


def balanced_key(
    units: Sequence[str], arm_of: Callable[[str, str], str], shares: Mapping[str, float]
) -> tuple[str, int]:
    """A fresh key under which the `units` seen lately fill the arms (`shares`: arm -> planned share) most
    nearly as planned, of up to KEY_TRIES keys; and the fewest of them any arm gets under it.

    One hash over a few dozen users can leave an arm short of the users its test needs for good (13 of 40
    in one half as often as 1 in 60). The keys are drawn before any outcome and chosen by arm sizes alone,
    so within those sizes every split is as likely as any other: a completely randomised design, whose
    tests keep their guarantee (rerandomisation; Morgan & Rubin, Annals of Statistics 2012)."""
    if not units:
        return new_key(), 0
    tries = max(1, min(KEY_TRIES, KEY_HASHES // (len(units) * len(shares))))
    best: tuple[float, str, int] | None = None
    for _ in range(tries):
        key = new_key()
        counts = Counter(arm_of(key, unit) for unit in units)
        fill = min(counts[arm] / share for arm, share in shares.items() if share > 0)  # the most short arm
        if best is None or fill > best[0]:
            best = (fill, key, min(counts[arm] for arm in shares))
    assert best is not None
    return best[1], best[2]
