"""The active-learning queue on a real store: why each answer is queued, and pairs ranked by the reward
model's uncertainty."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.monitor.seed import give, log
from tuneloop.clock import now_utc
from tuneloop.learn.embedding_reward import EmbeddingRewardModel
from tuneloop.review import tasks
from tuneloop.review.labels import next_view, skip
from tuneloop.review.queue import fill, rank_pairs, suggest
from tuneloop.review.tasks import TaskIn, _item, add_items, create_task, next_item
from tuneloop.signals.embeddings import DIMENSIONS
from tuneloop.signals.policy import RewardPolicy
from tuneloop.store.repository import Store
from tuneloop.store.schema import interactions, review_items


def test_flagged_escalated_conflicting_and_loved_answers_are_queued_for_their_reasons(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    at = now_utc() - timedelta(hours=2)
    ids = {}
    for name in ("flagged", "escalated", "conflicting", "loved", "unrated"):
        metadata = {"safety_flag": True} if name == "flagged" else None
        ids[name] = log(tenant, prompt=f"{name}?", response="Sure.", created_at=at, metadata=metadata)
    give(tenant, ids["escalated"], "escalated", True, at)
    give(tenant, ids["conflicting"], "thumbs", 1, at)
    give(tenant, ids["conflicting"], "thumbs", -1, at + timedelta(minutes=1))
    for minute in range(3):
        give(tenant, ids["loved"], "rating", 5, at + timedelta(minutes=minute))
    task = create_task(tenant, TaskIn(name="audit", kind="rubric"), actor="test")

    found = {iid: (reason, priority) for iid, _, reason, priority in suggest(tenant, task, RewardPolicy())}

    assert found[ids["flagged"]] == ("flagged", 1.0)
    assert found[ids["escalated"]] == ("escalated", 0.9)
    assert found[ids["conflicting"]][0] == "low_confidence"
    assert found[ids["loved"]] == ("golden_candidate", 0.3)
    assert ids["unrated"] not in found  # nothing says a person should look at it

    added = fill(tenant, task, RewardPolicy(), limit=2, actor="test")
    assert [i.reason for i in added] == ["flagged", "escalated"]  # the highest priority first
    assert next_item(tenant, task, "tl-reviewer").interaction_id == ids["flagged"]
    assert {c[0] for c in suggest(tenant, task, RewardPolicy())}.isdisjoint(
        {ids["flagged"], ids["escalated"]}
    )
    store.close()


def test_the_pair_the_reward_model_cannot_tell_apart_ranks_first() -> None:
    rng = np.random.default_rng(0)
    model = EmbeddingRewardModel(rng.normal(size=2 * DIMENSIONS))
    prompt = [{"role": "user", "content": "How do I freeze my card?"}]
    pairs = [
        (prompt, "Freeze it under Cards.", "Call us, maybe, or wait and see what happens over the weekend."),
        (prompt, "Open Cards and tap Freeze.", "Open Cards and tap Freeze."),  # identical: P(a > b) = 1/2
        (prompt, "I can't help with that request.", "Freeze it under Cards. This is not financial advice."),
    ]
    assert rank_pairs(model, pairs)[0] == 1


def test_an_item_whose_interaction_was_erased_is_skipped_not_shown(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    gone, kept = (log(tenant, prompt=p, response="Sure.", created_at=now_utc()) for p in ("a?", "b?"))
    task = create_task(tenant, TaskIn(name="audit", kind="rubric"), actor="test")
    add_items(tenant, task, [(gone, None, "manual", 1.0), (kept, None, "manual", 0.5)], actor="test")
    tenant.purge(lambda tx: tx.delete(interactions, interactions.c.id == gone))  # as erasure does

    assert next_view(tenant, task, "tl-reviewer")["item"].interaction_id == kept
    store.close()


def test_reviewers_racing_for_an_item_hold_it_no_more_times_than_its_overlap(store: Store) -> None:
    tenant = store.for_tenant(store.create_tenant("racers")[0])
    only = log(tenant, prompt="a?", response="Sure.", created_at=now_utc())
    task = create_task(tenant, TaskIn(name="audit", kind="rubric", overlap=1), actor="test")
    add_items(tenant, task, [(only, None, "manual", 1.0)], actor="test")
    reviewers = [f"rev-{i}" for i in range(6)]
    barrier = threading.Barrier(len(reviewers))

    def take(reviewer: str) -> bool:
        barrier.wait()
        return next_item(tenant, task, reviewer) is not None

    with ThreadPoolExecutor(len(reviewers)) as pool:
        assert sum(pool.map(take, reviewers)) == 1


def test_a_skipped_item_goes_back_to_the_pool_for_other_reviewers(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    only = log(tenant, prompt="a?", response="Sure.", created_at=now_utc())
    task = create_task(tenant, TaskIn(name="audit", kind="rubric", overlap=1), actor="test")
    add_items(tenant, task, [(only, None, "manual", 1.0)], actor="test")
    item = next_item(tenant, task, "tl-skipper")
    skip(tenant, task, item, "tl-skipper")

    assert next_item(tenant, task, "tl-skipper") is None  # not offered again to who skipped it
    assert next_item(tenant, task, "tl-other") == item  # but its place is free for someone else
    store.close()


def test_next_item_reads_only_the_item_it_hands_out_however_large_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It runs holding the store's write lock (all tenants' on SQLite): reading a large task row by row
    # there made other tenants' writes wait past their busy timeout.
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tenant = store.for_tenant(store.create_tenant("acme")[0])
    ids = [log(tenant, prompt=f"{i}?", response="Sure.", created_at=now_utc()) for i in range(30)]
    task = create_task(tenant, TaskIn(name="audit", kind="pairwise", overlap=1), actor="test")
    pairs = [(a, b, "manual", 0.5) for a in ids for b in ids if a != b and (a, b) != (ids[1], ids[0])]
    add_items(tenant, task, pairs, actor="test")  # 869 items
    [urgent] = add_items(tenant, task, [(ids[1], ids[0], "manual", 0.5)], actor="test")  # queued last
    tenant.transaction(lambda tx: tx.update(review_items, review_items.c.id == urgent.id, priority=1.0))
    built = []
    monkeypatch.setattr(tasks, "_item", lambda row: built.append(row.id) or _item(row))

    assert next_item(tenant, task, "tl-first").id == urgent.id  # the highest priority, though queued last
    assert next_item(tenant, task, "tl-first").id == urgent.id  # its hold, again
    second = next_item(tenant, task, "tl-second")
    assert second is not None and second.id != urgent.id  # overlap 1: the first one's place is taken
    assert len(built) == 3
    store.close()
