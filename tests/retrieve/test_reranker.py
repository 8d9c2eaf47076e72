"""The re-ranker learns the hidden order from position-biased clicks; raw click counts do not."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from tests.retrieve.world import Items, Row, world
from tuneloop.retrieve.clicks import Impression, fit_click_model
from tuneloop.retrieve.reranker import ndcg
from tuneloop.retrieve.training import train


def _hidden_ndcg(groups: Items, order: dict[str, float]) -> float:
    """Mean NDCG@5 over queries of ordering each query's chunks by `order` (higher first)."""
    values = []
    for items in groups:
        ranked = sorted(items, key=lambda item: (-order.get(item[0], 0.0), -item[2]))
        values.append(ndcg([2.0**rel - 1 for _, rel, _ in ranked], 5))
    return sum(values) / len(values)


def test_reranker_recovers_the_hidden_order_better_than_raw_click_counts() -> None:
    groups, logs = world(seed=7)

    reranker, model = train(logs, "rr-test")
    learned = {cid: reranker.value(Row(cid, score)) for items in groups for cid, _, score in items}
    counts = Counter(chunk for log in logs for chunk in log.clicked)  # the naive estimate
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
    groups, logs = world(seed=3)
    reranker, _ = train(logs[:300], "rr-saved")
    reranker.save(tmp_path / "r.json")
    loaded = type(reranker).load(tmp_path / "r.json")
    rows = [Row(cid, score) for cid, _, score in groups[0]]
    assert [r.chunk_id for r in loaded.rank(rows)] == [r.chunk_id for r in reranker.rank(rows)]


def test_chunks_users_surely_mark_wrong_are_never_shown_again() -> None:
    _, logs = world(seed=7, sessions=300)
    shown = [r["chunk_id"] for r in logs[0].results]
    wrong, doubtful = shown[0], shown[1]
    for log in logs[:5]:  # five wrong marks, no helpful one
        log.results = logs[0].results
        log.wrong = {wrong}
    for log in logs[5:8]:  # three wrong marks against one helpful: not sure yet
        log.results = logs[0].results
        log.wrong, log.helpful = {doubtful}, set()
    logs[8].results, logs[8].helpful = logs[0].results, {doubtful}

    reranker, _ = train(logs, "rr-test")

    ranked = [row.chunk_id for row in reranker.rank([Row(c, 0.5) for c in shown])]
    assert reranker.distrusted == [wrong]
    assert wrong not in ranked and doubtful in ranked and len(ranked) == len(shown) - 1
