"""Best-of-N over real HTTP: N answers sampled, the tenant's reward model's top one served and recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.learn.embedding_reward import HEAD_FILE, EmbeddingRewardModel
from tuneloop.registry.composition import BestOfN, Decoding, compose
from tuneloop.registry.versions import Registry
from tuneloop.serve.best_of_n import choose_n
from tuneloop.store.repository import Store

ASK = [{"role": "user", "content": "How do I reset my password?"}]
HEAD = np.random.default_rng(3).normal(size=768).astype(np.float32)


def _tenant(store: Store, name: str, model: Path, judge_dir: Path | None) -> str:
    """A tenant serving best-of-3 at temperature 1; with `judge_dir`, judged by the reward model there."""
    row, key = store.create_tenant(name, redaction="off")
    registry = Registry(store.for_tenant(row))
    version = compose(
        registry,
        parent=None,
        base_model=str(model),
        actor="test",
        reason="setup",
        decoding=Decoding(temperature=1.0, max_tokens=6, best_of_n=BestOfN(n=3)),
    )
    if judge_dir is not None:
        judge = registry.register(
            kind="reward_model", base_model=str(model), actor="test", artifact_path=str(judge_dir)
        )
        version_ids = (judge.id, version.id)
    else:
        version_ids = (version.id,)
    for version_id in version_ids:
        registry.move(version_id, "gated", actor="test", reason="setup")
        registry.move(version_id, "production", actor="test", reason="setup")
    return key


@pytest.fixture(scope="module")
def gateway(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), model=str(tiny_model))
    judge_dir = tmp_path_factory.mktemp("judge")
    np.savez(judge_dir / HEAD_FILE, w=HEAD)
    store = Store(settings.database_url)
    keys = {
        "judged": _tenant(store, "acme", tiny_model, judge_dir),
        "unjudged": _tenant(store, "globex", tiny_model, None),
    }
    with live_server(settings) as url:
        yield {
            name: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
            for name, key in keys.items()
        }
    store.close()


def _ask(http: httpx.Client, seed: int) -> tuple[str, dict]:
    body = {"model": "tuneloop", "messages": ASK, "user": "someone", "seed": seed}
    answer = http.post("/v1/chat/completions", json=body).json()
    stored = http.get(f"/v1/interactions/{answer['id']}").json()
    return answer["choices"][0]["message"]["content"], stored


def test_best_of_n_serves_the_reward_models_top_answer(gateway: dict) -> None:
    for seed in range(3):
        text, stored = _ask(gateway["judged"], seed)
        done = stored["decoding"]["best_of_n"]
        assert done["n"] == 3 and len(done["scores"]) == 3
        assert done["chosen"] == int(np.argmax(done["scores"]))
        # The served answer is the one the reward model scores highest, and the one stored.
        assert EmbeddingRewardModel(HEAD).score(ASK, text) == pytest.approx(max(done["scores"]), abs=1e-4)
        assert stored["response"] == text


def test_without_a_reward_model_one_answer_is_served_and_that_is_recorded(gateway: dict) -> None:
    _, stored = _ask(gateway["unjudged"], 0)
    assert stored["decoding"]["best_of_n"]["n"] == 1


def test_n_follows_the_latency_budget() -> None:
    policy = BestOfN(latency_budget_ms=3000, max_n=6)
    assert choose_n(policy, None) == 2  # nothing measured yet
    assert choose_n(policy, 1000.0) == 3
    assert choose_n(policy, 100.0) == 6  # capped
    assert choose_n(policy, 5000.0) == 2  # best-of-N always samples at least two
    assert choose_n(BestOfN(n=5), 5000.0) == 5  # a fixed N is kept
