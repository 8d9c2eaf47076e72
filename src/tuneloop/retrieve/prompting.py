"""Retrieval in the gateway: a chat request of a tenant that turned retrieval on gets its top sources,
numbered, in the system prompt, and the retrieval is logged under the interaction's id."""

from __future__ import annotations

import logging
import re
from typing import Any

from tuneloop.errors import BadRequest
from tuneloop.retrieve.policy import RetrievalPolicy, retrieval_policy
from tuneloop.retrieve.search import Hit
from tuneloop.retrieve.serving import serve
from tuneloop.store.repository import TenantStore

INSTRUCTION = (
    "Answer from the sources below when they help, cite each source you use as [n], and say so when they "
    "do not answer the question."
)
_CITATION = re.compile(r"\[(\d{1,2})\]")
log = logging.getLogger("tuneloop")


async def add_sources(
    st: Any, tenant: TenantStore, messages: list[dict[str, Any]], interaction_id: str, most: int | None = None
) -> list[dict[str, Any]]:
    """`messages` with the tenant's top sources (its policy's k, or `most` when fewer: the version's own
    setting) for the last user message, when its policy turns retrieval on and anything relevant is found;
    otherwise `messages` unchanged."""
    try:
        policy = retrieval_policy(st.settings.home, tenant.tenant.name)
    except BadRequest as exc:
        # The operator's file is wrong, not the client's request: answer it, and say so in the server log.
        log.error("tenant %s: %s; answering without sources", tenant.tenant.name, exc)
        return messages
    query = question_of(messages)
    if not policy.enabled or query is None:
        return messages
    k = min(policy.k, most or policy.k)
    try:
        hits = await st.retrievals(tenant.tenant_id, _retrieve, tenant, query, policy, k, interaction_id)
    except Exception:
        # The answer still comes, without sources: a broken index must not take the gateway down with it.
        log.exception("retrieval for %s failed; answering without sources", interaction_id)
        return messages
    return with_sources(messages, hits) if hits else messages


def question_of(messages: list[dict[str, Any]]) -> str | None:
    """What retrieval searches for: the last user message, when it is text with something in it."""
    query = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
    return query if isinstance(query, str) and query.strip() else None


def _retrieve(
    tenant: TenantStore, query: str, policy: RetrievalPolicy, k: int, interaction_id: str
) -> list[Hit]:
    score, rerank = policy.min_score, policy.rerank
    return serve(tenant, query, k, min_score=score, rerank=rerank, interaction_id=interaction_id).hits


def with_sources(messages: list[dict[str, Any]], hits: list[Hit]) -> list[dict[str, Any]]:
    """The sources, numbered from 1 in the order shown, appended to the leading system message."""
    listed = "\n\n".join(f"[{i}] {h.title}\n{h.text}" for i, h in enumerate(hits, 1))
    block = f"{INSTRUCTION}\n\n{listed}"
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{block}"}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def cited(answer: str, shown: int) -> list[int]:
    """The source numbers (1..shown) an answer cites as [n], in order of first citation."""
    numbers = (int(n) for n in _CITATION.findall(answer))
    return list(dict.fromkeys(n for n in numbers if 1 <= n <= shown))
