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
from typing import Literal

BUCKETS = 10_000
Arm = Literal["control", "treatment"]


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
