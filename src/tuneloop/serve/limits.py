"""Per-tenant admission: a cap on requests in progress and a token-bucket rate, both answered with 429."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tuneloop.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    at: float = field(default_factory=time.monotonic)
    active: int = 0


class TenantLimits:
    """What one tenant may ask of the server at once and per second. Used on the event loop only."""

    def __init__(self, concurrency: int, rate: float, burst: int) -> None:
        self.concurrency = concurrency
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    @asynccontextmanager
    async def admit(self, tenant_id: str) -> AsyncIterator[None]:
        """Hold one of the tenant's slots for the block; RateLimited (429) when none or no token is left."""
        bucket = self._buckets.setdefault(tenant_id, _Bucket(float(self.burst)))
        now = time.monotonic()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1:
            wait = math.ceil((1 - bucket.tokens) / self.rate)
            raise RateLimited(
                f"this tenant sends more than {self.rate:g} requests per second "
                "(TUNELOOP_TENANT_RATE_LIMIT); slow down",
                retry_after=wait,
                code="rate_limit_exceeded",
            )
        if bucket.active >= self.concurrency:
            raise RateLimited(
                f"this tenant already has {bucket.active} requests in progress, the most allowed "
                "(TUNELOOP_TENANT_MAX_CONCURRENCY); wait for one to finish",
                retry_after=1,
                code="too_many_concurrent_requests",
            )
        bucket.tokens -= 1
        bucket.active += 1
        try:
            yield
        finally:
            bucket.active -= 1
