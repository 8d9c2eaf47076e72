"""Labels on a real store: a label takes one of its item's `overlap` places, as a hold from `next` does."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.monitor.seed import log
from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import Redactor
from tuneloop.clock import now_utc
from tuneloop.errors import BadRequest, Conflict
from tuneloop.review.labels import parse_label, submit
from tuneloop.review.tasks import Task, TaskIn, add_items, create_task, labels, next_item
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store, TenantStore


@pytest.fixture(scope="module")
def capture() -> Capture:
    return Capture(Redactor(), Pseudonyms(b"secret"))


def _task(store: Store, overlap: int) -> tuple[TenantStore, Task]:
    tenant = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    only = log(tenant, prompt="a?", response="Sure.", created_at=now_utc())
    task = create_task(tenant, TaskIn(name="audit", kind="rubric", overlap=overlap), actor="test")
    add_items(tenant, task, [(only, None, "manual", 1.0)], actor="test")
    return tenant, task


def test_a_label_for_an_item_whose_overlap_others_hold_is_a_409(store: Store, capture: Capture) -> None:
    tenant, task = _task(store, overlap=1)
    item = next_item(tenant, task, "tl-holder")

    with pytest.raises(Conflict, match="already has the 1 reviewer"):
        submit(tenant, capture, task, item, "tl-sneaky", {"score": 1})

    assert submit(tenant, capture, task, item, "tl-holder", {"score": 4})["status"] == "accepted"
    with pytest.raises(Conflict, match="already has the 1 reviewer"):
        submit(tenant, capture, task, item, "tl-late", {"score": 2})
    assert [a.reviewer for a in labels(tenant, task)] == ["tl-holder"]


def test_a_label_without_asking_for_the_item_is_taken_while_a_place_is_free(
    store: Store, capture: Capture
) -> None:
    tenant, task = _task(store, overlap=2)
    item = next_item(tenant, task, "tl-first")

    assert submit(tenant, capture, task, item, "tl-second", {"score": 3})["status"] == "accepted"
    assert submit(tenant, capture, task, item, "tl-first", {"score": 4})["status"] == "accepted"
    # Resending one's own label stays a duplicate, though the item's places are all taken now.
    assert submit(tenant, capture, task, item, "tl-second", {"score": 3})["status"] == "duplicate"


def test_a_second_correction_text_names_the_item_not_the_stored_event_id(
    store: Store, capture: Capture
) -> None:
    tenant = store.for_tenant(store.create_tenant("acme", redaction="redact")[0])
    only = log(tenant, prompt="a?", response="Sure.", created_at=now_utc())
    task = create_task(tenant, TaskIn(name="fixes", kind="correction"), actor="test")
    add_items(tenant, task, [(only, None, "manual", 1.0)], actor="test")
    item = next_item(tenant, task, "tl-editor")
    assert (
        submit(tenant, capture, task, item, "tl-editor", {"text": "Sure, in Settings."})["status"]
        == "accepted"
    )

    with pytest.raises(Conflict, match=f"you labelled item {item.id} already") as caught:
        submit(tenant, capture, task, item, "tl-editor", {"text": "Yes: open Settings."})

    assert "ref-" not in str(caught.value)


def test_reviewers_labelling_an_item_at_once_give_it_no_more_labels_than_its_overlap(
    store: Store, capture: Capture
) -> None:
    tenant, task = _task(store, overlap=1)
    item = next_item(tenant, task, "tl-rev-0")
    assert item is not None
    reviewers = [f"tl-rev-{i}" for i in range(1, 5)]
    barrier = threading.Barrier(len(reviewers))

    def label(reviewer: str) -> bool:
        barrier.wait()
        try:
            submit(tenant, capture, task, item, reviewer, {"score": 5})
        except Conflict:
            return False
        return True

    with ThreadPoolExecutor(len(reviewers)) as pool:
        assert sum(pool.map(label, reviewers)) == 0  # tl-rev-0 holds the one place
    assert labels(tenant, task) == []


@pytest.mark.parametrize("text", ["   ", "\u200b\u2060\ufeff"])
def test_a_correction_that_shows_nothing_is_refused(text: str) -> None:
    task = Task(
        "t", "correction", "", overlap=1, assignment_minutes=30, created_by="op", created_at=now_utc()
    )
    with pytest.raises(BadRequest, match="correction task takes"):
        parse_label(task, {"text": text})
