"""The per-tenant retrieval policy (HOME/policies/TENANT/retrieval_policy.yaml): off unless turned on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

from pydantic import ConfigDict, Field

from tuneloop.config import TenantPolicy, tenant_policy, tenant_policy_file

CACHE_SECONDS = 5.0  # the gateway looks at the file at most this often per tenant


class RetrievalPolicy(TenantPolicy):
    """Whether and how the gateway grounds a tenant's chat requests in its documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filename: ClassVar[str] = "retrieval_policy.yaml"
    enabled: bool = Field(
        False,
        description="Retrieve for every chat request through the gateway and add the sources, numbered, to "
        "the system prompt with an instruction to cite them as [n].",
    )
    k: int = Field(
        4, ge=1, le=20, description="Sources added to a prompt (and results of /v1/retrieve by default)."
    )
    min_score: float = Field(
        0.25,
        ge=-1,
        le=1,
        description="Chunks whose cosine similarity to the question is below this are never shown: an "
        "unrelated question gets no sources rather than wrong ones.",
    )
    rerank: bool = Field(
        True,
        description="Order candidates with the tenant's production re-ranker (`tuneloop docs rerank`) when "
        "there is one; false keeps the plain embedding order.",
    )


_cache: dict[Path, tuple[float, RetrievalPolicy]] = {}


def retrieval_policy(home: Path, tenant_name: str) -> RetrievalPolicy:
    """The tenant's retrieval policy in force, re-read at most every CACHE_SECONDS."""
    path = tenant_policy_file(home, tenant_name, RetrievalPolicy.filename)
    hit = _cache.get(path)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    policy = tenant_policy(home, tenant_name, RetrievalPolicy)
    _cache[path] = (time.monotonic(), policy)
    return policy
