"""Review tasks created over HTTP with wrongly typed fields: a 400 naming the field, never a coerced task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.live import live_server
from tuneloop.config import Settings
from tuneloop.review.tasks import DEFAULT_GUIDELINES
from tuneloop.store.repository import Store


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), backend="none")
    store = Store(settings.database_url)
    _, key = store.create_tenant("acme")
    store.close()
    headers = {"Authorization": f"Bearer {key}"}
    with live_server(settings) as url, httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        yield http


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("overlap", True),
        ("overlap", "2"),
        ("overlap", 2.0),
        ("assignment_minutes", "30"),
        ("assignment_minutes", False),
        ("guidelines", 5),
        ("name", 7),
    ],
)
def test_a_wrongly_typed_task_field_is_a_400_that_names_it(
    operator: httpx.Client, field: str, value: Any
) -> None:
    body = {"name": f"typed-{field}-{type(value).__name__}", "kind": "rubric", field: value}

    answer = operator.post("/v1/review/tasks", json=body)
    tasks = operator.get("/v1/review/tasks").json()["data"]

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == field
    assert body["name"] not in [t["id"] for t in tasks]


def test_a_well_typed_task_is_still_created(operator: httpx.Client) -> None:
    body = {"name": "fine", "kind": "pairwise", "overlap": 3, "assignment_minutes": 5, "guidelines": "Pick."}

    answer = operator.post("/v1/review/tasks", json=body)

    assert answer.status_code == 201, answer.text
    assert (answer.json()["overlap"], answer.json()["assignment_minutes"]) == (3, 5)


def test_guidelines_of_only_invisible_characters_are_none_and_reviewers_see_the_defaults(
    operator: httpx.Client,
) -> None:
    answer = operator.post(
        "/v1/review/tasks", json={"name": "blank", "kind": "rubric", "guidelines": "\u200b \u2060"}
    )

    assert answer.status_code == 201, answer.text
    assert answer.json()["guidelines"] == DEFAULT_GUIDELINES["rubric"]
