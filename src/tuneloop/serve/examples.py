"""In-context examples: a version with an example policy is shown the tenant's own best past answers.

For each request the gateway finds the tenant's best-rated or user-edited past answers (signals' SFT rows:
users' edits, and answers whose reward clears the policy's `min_reward`) whose prompts are most similar to
the request's last user message (MiniLM cosine similarity at or above `min_similarity`), and shows up to `k`
of them as earlier user/assistant turns. The pool is per tenant, built only through the tenant's own store
handle, bounded, and rebuilt from the store in the background every `REFRESH_SECONDS` (redacting and
embedding only new examples). Its texts are the stored, redacted ones, and a tenant that stores raw text
(redaction off) has them redacted here, since an example shows one user's words to another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.capture.redact import PLACEHOLDER, Redactor
from tuneloop.clock import now_utc
from tuneloop.config import tenant_policy
from tuneloop.learn.light_changes import word_limit
from tuneloop.registry.composition import Decoding, ExamplePolicy
from tuneloop.signals.pairs import sft_rows
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.rewards import compute_rewards
from tuneloop.store.repository import TenantStore

log = logging.getLogger("tuneloop")
REFRESH_SECONDS = 120.0  # also how long an erased user's answer may still be shown
LOOKBACK_DAYS = 30
MAX_POOL = 1_000  # examples kept per tenant, the most recent
MAX_TENANTS = 64  # tenants whose pools stay in memory, the most recently used
MAX_EXAMPLE_CHARS = 2_000  # a longer answer makes a poor example and eats the context window
EDIT_REWARD = 1.0  # a user's own correction is the best answer there is to its prompt


@dataclass(frozen=True)
class Example:
    """One past exchange fit to show: its prompt (last user message), answer and where it came from."""

    interaction_id: str
    prompt: str
    answer: str
    reward: float
    edited: bool = False  # a user's own rewrite, which outranks any rated answer to the same prompt


Key = tuple[str, str, str]  # (interaction id, stored prompt, stored answer)


@dataclass
class Pool:
    """A tenant's examples with their prompts' embeddings (row i is examples[i]); `known` keeps each one's
    shown form and vector by what the store holds, so a rebuild redacts and embeds only new ones."""

    examples: list[Example]
    vectors: np.ndarray
    known: dict[Key, tuple[Example, np.ndarray]] = field(default_factory=dict)
    # Exchanges whose shown answer holds a redaction placeholder: never shown, and not redacted again.
    withheld: frozenset[Key] = frozenset()
    built_at: float = field(default_factory=time.monotonic)
    # Tie-breaks among equally similar examples, built once per pool rather than on every request.
    _edited: np.ndarray = field(init=False, repr=False)
    _rewards: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._edited = np.array([ex.edited for ex in self.examples], dtype=float)
        self._rewards = np.array([ex.reward for ex in self.examples], dtype=float)

    def nearest(
        self,
        query: np.ndarray,
        policy: ExamplePolicy,
        exclude: Collection[str] = (),
        max_words: int | None = None,
    ) -> list[Example]:
        """Up to k distinct examples at or above the policy's reward and similarity floors, most similar
        first; none from the interactions in `exclude`, none longer than `max_words` (a version that asks
        for answers under N words shows none that break it: a small model copies its examples' length).

        Answers to one prompt are equally similar; among them a user's edit comes first, then the higher
        reward, then the newer, so a prompt asked often shows its best answer rather than its oldest.
        """
        if not self.examples:
            return []
        sims = self.vectors @ query
        order = np.lexsort((-np.arange(len(sims)), -self._rewards, -self._edited, -sims))
        found: list[Example] = []
        for i in order:
            if sims[i] < policy.min_similarity or len(found) == policy.k:
                break
            example = self.examples[i]
            if (
                example.reward >= policy.min_reward
                and example.interaction_id not in exclude
                and (max_words is None or len(example.answer.split()) <= max_words)
                and all(example.answer != other.answer for other in found)
            ):
                found.append(example)
        return found


def last_user_text(messages: list[dict[str, str]]) -> str | None:
    """The last user message's text: what an example's prompt is matched against."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)


def with_examples(messages: list[dict[str, str]], examples: list[Example]) -> list[dict[str, str]]:
    """The conversation with the examples (most similar first) as earlier turns, after a leading system
    message if any.

    They are shown in reverse, the most similar next to the conversation: a small model copies most from
    the turn nearest the question (docs/light-candidates.md, "Which example goes last").
    """
    turns = [
        turn
        for ex in reversed(examples)
        for turn in ({"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.answer})
    ]
    at = 1 if messages and messages[0]["role"] in ("system", "developer") else 0
    return [*messages[:at], *turns, *messages[at:]]


def build_pool(tenant: TenantStore, home: Path, redactor: Redactor, previous: Pool | None = None) -> Pool:
    """The tenant's example pool from its last LOOKBACK_DAYS of interactions and feedback (blocking);
    examples already in `previous` keep their redacted text and vector."""
    from tuneloop.signals.embeddings import DIMENSIONS, embed

    now = now_utc()
    since = now - timedelta(days=LOOKBACK_DAYS)
    rows = tenant.interactions(since=since)
    events = tenant.feedback(since=since)
    policy = tenant_policy(home, tenant.tenant.name, RewardPolicy)
    # Every positive answer enters the pool; each version's own `min_reward` filters at request time.
    pool_policy = policy.model_copy(update={"sft_min_reward": 0.0})
    rewards = compute_rewards(rows, events, policy, now) if events else {}
    created = {r["id"]: r["created_at"] for r in rows}
    found: list[tuple[Any, Example]] = []
    for row in sft_rows(rows, events, rewards, pool_policy, now):
        messages = row["messages"]
        prompt, answer = last_user_text(messages[:-1]), messages[-1]["content"]
        iid = row["interaction_ids"][-1]
        if not prompt or not answer.strip() or len(prompt) + len(answer) > MAX_EXAMPLE_CHARS:
            continue
        edited = row["origin"] == "edit"
        reward = EDIT_REWARD if edited else rewards[iid].reward
        found.append((created[iid], Example(iid, prompt, answer, reward, edited)))
    found.sort(key=lambda item: item[0])
    keyed = [((ex.interaction_id, ex.prompt, ex.answer), ex) for _, ex in found]
    withheld = frozenset(key for key, _ in keyed if previous is not None and key in previous.withheld)
    # An answer that holds PII would show its placeholder, and the model learns to say "<PERSON>" to users:
    # never shown, it takes no place of the pool's MAX_POOL either.
    usable = [(key, ex) for key, ex in keyed if key not in withheld and not PLACEHOLDER.search(ex.answer)]
    stored = dict(usable[-MAX_POOL:])
    known = previous.known if previous is not None else {}
    new_keys = [key for key in stored if key not in known]
    shown = [stored[key] for key in new_keys]
    if tenant.tenant.redaction == "off" and shown:
        texts = [t for ex in shown for t in (ex.prompt, ex.answer)]
        texts = redactor.redact_texts(texts, "redact", tenant.tenant_id)
        shown = [replace(ex, prompt=texts[2 * i], answer=texts[2 * i + 1]) for i, ex in enumerate(shown)]
    fresh = {key: ex for key, ex in zip(new_keys, shown, strict=True) if not PLACEHOLDER.search(ex.answer)}
    withheld |= frozenset(new_keys) - fresh.keys()
    embedded = embed([ex.prompt for ex in fresh.values()])
    made = {key: (ex, vector) for (key, ex), vector in zip(fresh.items(), embedded, strict=True)}
    # A known example keeps its text and vector; its reward is today's.
    entries = {
        key: (replace(ex, reward=stored[key].reward), vector)
        for key in stored
        if key in known or key in made
        for ex, vector in [known[key] if key in known else made[key]]
    }
    examples = [ex for ex, _ in entries.values()]
    vectors = np.array([v for _, v in entries.values()], dtype=np.float32).reshape(-1, DIMENSIONS)
    return Pool(examples, vectors, entries, withheld=withheld)


class OfflineExamples:
    """A tenant's examples as the gate shows them to a version with an example policy: as the gateway
    would, except that a prompt is never shown a past answer to itself. The held-out pairs and the starter
    golden set are the tenant's own traffic, so their answers are in the pool."""

    def __init__(self, tenant: TenantStore, home: Path) -> None:
        self._tenant, self._home = tenant, home
        self._pool: Pool | None = None
        self._by_prompt: dict[str, set[str]] = defaultdict(set)  # stored prompt -> its interactions
        self._vectors: dict[str, np.ndarray] = {}

    def show(
        self, messages: list[dict[str, str]], policy: ExamplePolicy, max_words: int | None = None
    ) -> list[dict[str, str]]:
        """`messages` with the examples the policy shows for their last user message (`Pool.nearest`)."""
        from tuneloop.signals.embeddings import embed

        query = last_user_text(messages)
        if not query:
            return messages
        if self._pool is None:  # built on first use: most gates show no examples
            self._pool = build_pool(self._tenant, self._home, Redactor())
            for interaction_id, prompt, _ in self._pool.known:
                self._by_prompt[prompt].add(interaction_id)
        if query not in self._vectors:
            self._vectors[query] = embed([query])[0]
        excluded = self._by_prompt.get(query, ())
        shown = self._pool.nearest(self._vectors[query], policy, excluded, max_words)
        return with_examples(messages, shown)


class ExampleIndex:
    """Per-tenant example pools for the gateway, rebuilt from the store when older than REFRESH_SECONDS."""

    def __init__(self) -> None:
        self._pools: OrderedDict[str, Pool] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._rebuilding: dict[str, asyncio.Task] = {}  # referenced until done

    async def apply(self, call: Any, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The messages with the call's version's examples shown; the call's decoding records which."""
        version = call.route.version
        policy = Decoding.parse(version.decoding).examples if version else None
        query = last_user_text(messages)
        if policy is None or not query:
            return messages
        from tuneloop.signals.embeddings import embed

        pool = await self.pool(call.st, call.tenant)
        vector = (await asyncio.to_thread(embed, [query]))[0]
        shown = pool.nearest(vector, policy, max_words=word_limit(version.system_prompt))
        call.decoding["examples"] = {**policy.model_dump(), "shown": [ex.interaction_id for ex in shown]}
        return with_examples(messages, shown)

    async def pool(self, st: Any, tenant: TenantStore) -> Pool:
        """The tenant's pool: built on first use; when stale, served as it is while a rebuild runs."""
        key = tenant.tenant_id
        pool = self._pools.get(key)
        if pool is None:
            pool = await self._rebuild(st, tenant)
        elif time.monotonic() - pool.built_at > REFRESH_SECONDS and key not in self._rebuilding:
            task = asyncio.create_task(self._rebuild(st, tenant))
            self._rebuilding[key] = task
            task.add_done_callback(lambda t: self._rebuilt(key, t))
        self._pools.move_to_end(key)
        while len(self._pools) > MAX_TENANTS:
            self._pools.popitem(last=False)
        return pool

    async def _rebuild(self, st: Any, tenant: TenantStore) -> Pool:
        """Build the tenant's pool from the store (once, however many requests wait for it)."""
        key = tenant.tenant_id
        async with self._locks.setdefault(key, asyncio.Lock()):
            previous = self._pools.get(key)
            if previous is not None and time.monotonic() - previous.built_at <= REFRESH_SECONDS:
                return previous
            pool = await st.calls(build_pool, tenant, st.settings.home, st.capture.redactor, previous)
            self._pools[key] = pool
            return pool

    def _rebuilt(self, key: str, task: asyncio.Task) -> None:
        self._rebuilding.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("rebuilding the example pool failed; the last one serves", exc_info=task.exception())
