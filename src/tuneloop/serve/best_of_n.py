"""Best-of-N: a version with a `best_of_n` part samples N answers and serves the one the tenant's reward
model (its production judge) scores highest.

N is the policy's `n`, else the most answers that fit its `latency_budget_ms`: the gateway keeps, per tenant
and version, a running estimate of the milliseconds one answer costs within a batch of N (batches are
cheaper per answer than single answers, so the estimate settles on the largest N whose batch fits), starting
from 2. N, every score and the chosen index are recorded with the interaction (its `decoding.best_of_n`).
Without a reward model there is nothing to choose by: one answer is served, and that is recorded too.
Streams and requests asking for several choices themselves are served as sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from typing import Any

from tuneloop.registry.composition import BestOfN, Decoding
from tuneloop.registry.versions import Registry, Version
from tuneloop.serve.backends.base import Choice, Completion, GenerationRequest
from tuneloop.store.repository import TenantStore

JUDGE_TTL_SECONDS = 30.0  # how soon a newly appointed reward model starts judging
MAX_JUDGES = 8  # reward models kept loaded, the most recently used
START_N = 2
SMOOTHING = 0.3  # weight of the newest latency in the running estimate


def choose_n(policy: BestOfN, ms_per_answer: float | None) -> int:
    """The policy's N, else the most answers (2..max_n) whose batch fits the latency budget."""
    if policy.n is not None:
        return policy.n
    if ms_per_answer is None or ms_per_answer <= 0:
        return START_N
    return max(2, min(policy.max_n, int(policy.latency_budget_ms // ms_per_answer)))


def best_choice(completion: Completion, best: int) -> Completion:
    """The completion reduced to its choice `best`, as choice 0."""
    chosen = completion.choices[best]
    return Completion(
        choices=[Choice(text=chosen.text, finish_reason=chosen.finish_reason)],
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )


class BestOfNSampler:
    """Generates through the backend, best-of-N for versions that ask for it."""

    def __init__(self) -> None:
        self._ms_per_answer: dict[tuple[str, str], float] = {}
        self._judges: OrderedDict[str, tuple[float, str | None, Any]] = OrderedDict()

    async def generate(self, call: Any, gen: GenerationRequest, captured: list[dict[str, str]]) -> Completion:
        """The completion to serve; the call's decoding records what best-of-N did. The judge reads the
        conversation as captured (`captured`), as reward models are trained on it."""
        st, version = call.st, call.route.version
        policy = Decoding.parse(version.decoding).best_of_n if version else None
        if policy is None or gen.n != 1:
            return await st.backend.generate(gen)
        judge = await self._judge(st, call.tenant)
        if judge is None:
            call.decoding["best_of_n"] = {"n": 1, "reason": "no reward model to choose by yet"}
            return await st.backend.generate(gen)
        key = (call.tenant.tenant_id, version.id)
        n = choose_n(policy, self._ms_per_answer.get(key))
        started = time.perf_counter()
        completion = await st.backend.generate(dataclasses.replace(gen, n=n))
        per_answer = (time.perf_counter() - started) * 1000 / n
        previous = self._ms_per_answer.get(key, per_answer)
        self._ms_per_answer[key] = (1 - SMOOTHING) * previous + SMOOTHING * per_answer
        items = [(captured, c.text) for c in completion.choices]
        scores = [float(s) for s in await asyncio.to_thread(judge.score_batch, items)]
        best = max(range(len(scores)), key=scores.__getitem__)  # the first of equals
        call.decoding["best_of_n"] = {"n": n, "scores": scores, "chosen": best}
        return best_choice(completion, best)

    async def _judge(self, st: Any, tenant: TenantStore) -> Any:
        """The tenant's production reward model, loaded once and re-checked every JUDGE_TTL_SECONDS."""
        cached = self._judges.get(tenant.tenant_id)
        if cached is not None and time.monotonic() - cached[0] < JUDGE_TTL_SECONDS:
            self._judges.move_to_end(tenant.tenant_id)
            return cached[2]
        current = await st.calls(Registry(tenant).production, "reward_model")
        current_id = current.id if current else None
        model = cached[2] if cached is not None and cached[1] == current_id else None
        if current is not None and model is None:
            model = await asyncio.to_thread(_load_judge, st.settings, current)
        self._judges[tenant.tenant_id] = (time.monotonic(), current_id, model)
        self._judges.move_to_end(tenant.tenant_id)
        while len(self._judges) > MAX_JUDGES:
            self._judges.popitem(last=False)
        return model


def _load_judge(settings: Any, version: Version) -> Any:
    from tuneloop.learn.reward_model import load_reward_model
    from tuneloop.model_files import resolve_model

    assert version.artifact_path is not None  # a reward model in production has its artifact
    base = resolve_model(settings.model, settings.home)
    return load_reward_model(version.artifact_path, base_model=str(base))
