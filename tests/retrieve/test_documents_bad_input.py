"""Documents under careless clients: racing writes to one id keep POST's promise (other text is a 409)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.store.repository import Store

RACERS = 6


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, backend="none")
    store = Store(settings.database_url)
    _, key = store.create_tenant("a")
    store.close()
    with live_server(settings) as url:
        yield {"url": url, "key": key}


def _post(api: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api['key']}"}
    with httpx.Client(base_url=api["url"], headers=headers, timeout=120) as http:
        return http.post("/v1/documents", json=body)


def test_racing_posts_of_one_new_id_with_different_texts_create_it_once_and_409_the_rest(
    api: dict[str, Any],
) -> None:
    bodies = [{"id": "raced", "text": f"Refunds take {i + 2} business days."} for i in range(RACERS)]
    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(lambda body: _post(api, body), bodies))
    headers = {"Authorization": f"Bearer {api['key']}"}
    listed = httpx.get(f"{api['url']}/v1/documents", headers=headers, timeout=60).json()["data"]

    assert sorted(a.status_code for a in answers) == [201] + [409] * (RACERS - 1), [a.text for a in answers]
    assert [(d["id"], d["version"]) for d in listed] == [("raced", 1)]


@pytest.mark.parametrize("blank", ["\u200b\u200b\u200b", "\ufeff", " \u200d\n\u2060 "])
def test_text_of_only_invisible_characters_is_a_400_for_documents_and_queries(
    api: dict[str, Any], blank: str
) -> None:
    headers = {"Authorization": f"Bearer {api['key']}"}
    with httpx.Client(base_url=api["url"], headers=headers, timeout=120) as http:
        document = http.post("/v1/documents", json={"id": "blank", "text": blank})
        query = http.post("/v1/retrieve", json={"query": blank})
        listed = http.get("/v1/documents").json()["data"]

    assert document.status_code == 400 and "invisible" in document.json()["error"]["message"]
    assert query.status_code == 400 and query.json()["error"]["param"] == "query"
    assert "blank" not in {d["id"] for d in listed}
