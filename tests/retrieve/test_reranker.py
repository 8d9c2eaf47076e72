"""The re-ranker learns the hidden order from position-biased clicks; raw click counts do not."""

from __future__ import annotations

import random
from pathlib import Path

from tuneloop.retrieve.clicks import Impression, click_counts, fit_click_model
from tuneloop.retrieve.reranker import ndcg
from tuneloop.retrieve.training import Logged, train

GAMMA = (0.05, 0.3, 0.6, 0.9)  # P(click | examined) by hidden relevance 0-3


def _world(seed: int) -> tuple[list[list[tuple[str, int, float]]], list[Logged]]:
    """30 queries of 8 chunks with hidden relevance and a noisy first-stage score; 1,200 sessions shown in
    score order (one random adjacent swap each), clicked with examination 1/rank."""
    rng = random.Random(seed)
    groups = []
    for q in range(30):
        items = []
        for j in range(8):
            rel = rng.choice((0, 0, 0, 1, 1, 2, 3))
            items.append((f"q{q}-c{j}", rel, 0.3 + 0.06 * rel + rng.gauss(0, 0.12)))
        groups.append(items)
    logs = []
    for session in range(1200):
        shown = sorted(rng.choice(groups), key=lambda item: -item[2])
        i = rng.randrange(len(shown) - 1)
        shown[i], shown[i + 1] = shown[i + 1], shown[i]
        clicked = {cid for rank, (cid, rel, _) in enumerate(shown, 1) if rng.random() < GAMMA[rel] / rank}
        results = [
            {"rank": rank, "chunk_id": cid, "document_id": cid, "score": score, "lexical": 0.0}
            for rank, (cid, _, score) in enumerate(shown, 1)
        ]
        logs.append(Logged(f"ret-{session}", results, clicked))
    return groups, logs


def _hidden_ndcg(groups: list[list[tuple[str, int, float]]], order: dict[str, float]) -> float:
    """Mean NDCG@5 over queries of ordering each query's chunks by `order` (higher first)."""
    values = []
    for items in groups:
        ranked = sorted(items, key=lambda item: (-order.get(item[0], 0.0), -item[2]))
        values.append(ndcg([2.0**rel - 1 for _, rel, _ in ranked], 5))
    return sum(values) / len(values)


def test_reranker_recovers_the_hidden_order_better_than_raw_click_counts() -> None:
    groups, logs = _world(seed=7)

    reranker, model = train(logs, "rr-test")
    learned = {cid: reranker.value(_row(cid, score)) for items in groups for cid, _, score in items}
    counts = click_counts([imp for log in logs for imp in log.impressions()])
    shown = {cid: score for items in groups for cid, _, score in items}

    by_reranker, by_counts, by_score = (_hidden_ndcg(groups, o) for o in (learned, counts, shown))
    assert by_reranker > by_counts + 0.03, (by_reranker, by_counts)
    assert by_reranker > by_score, (by_reranker, by_score)
    assert 0.4 < model.theta(2) < 0.65 and model.theta(5) < 0.35  # examination ≈ 1/rank, recovered


def test_click_model_separates_position_from_relevance() -> None:
    rng = random.Random(1)
    impressions = []
    for _ in range(3000):  # a good item and a poor one, each shown first half the time
        good_first = rng.random() < 0.5
        for rank, (item, gamma) in enumerate(
            [("good", 0.8), ("poor", 0.2)] if good_first else [("poor", 0.2), ("good", 0.8)], 1
        ):
            impressions.append(Impression(item, rank, rng.random() < gamma * (1.0, 0.3)[rank - 1]))

    model = fit_click_model(impressions)

    assert abs(model.gamma("good") - 0.8) < 0.08 and abs(model.gamma("poor") - 0.2) < 0.08
    assert abs(model.theta(2) - 0.3) < 0.06


def test_a_saved_reranker_loads_and_orders_the_same(tmp_path: Path) -> None:
    groups, logs = _world(seed=3)
    reranker, _ = train(logs[:300], "rr-saved")
    reranker.save(tmp_path / "r.json")
    loaded = type(reranker).load(tmp_path / "r.json")
    rows = [_row(cid, score) for cid, _, score in groups[0]]
    assert [r.chunk_id for r in loaded.rank(rows)] == [r.chunk_id for r in reranker.rank(rows)]


class _Row:
    def __init__(self, chunk_id: str, score: float) -> None:
        self.chunk_id = self.document_id = chunk_id
        self.score, self.lexical = score, 0.0


def _row(chunk_id: str, score: float) -> _Row:
    return _Row(chunk_id, score)
