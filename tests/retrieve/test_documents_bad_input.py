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


def _http(api: dict[str, Any]) -> httpx.Client:
    return httpx.Client(base_url=api["url"], headers={"Authorization": f"Bearer {api['key']}"}, timeout=120)


@pytest.mark.parametrize(
    "doc",
    [
        "john.smith-4111111111111111",
        "call-212-555-0198",
        "guide-Maria-Garcia",
        "notes_jane.doe@example.com_v2",
        "Maria_Garcia_contract",
        "card_4111-1111-1111-1111_x",
        "Maria.Garcia",
        "card:4111:1111:1111:1111",
        "4111--1111--1111--1111",
        "4111_1111__1111_1111",
        "DE89--3704--0044--0532--0130--00",
        "host-192..168.1.20",
    ],
)
def test_a_document_id_holding_personal_data_is_a_400_that_does_not_echo_it(
    api: dict[str, Any], doc: str
) -> None:
    with _http(api) as http:
        answer = http.put(f"/v1/documents/{doc}", json={"text": "Shipping takes two days."})
        listed = [d["id"] for d in http.get("/v1/documents").json()["data"]]

    assert answer.status_code == 400 and answer.json()["error"]["param"] == "id", answer.text
    assert doc not in answer.text and doc not in listed


def test_a_product_or_place_in_a_document_id_is_kept_and_source_feedback_names_its_chunk_whole(
    api: dict[str, Any],
) -> None:
    with _http(api) as http:
        for doc in ("jira-workflow.md", "Mastercard-limits.md", "Austin-office-hours.md"):
            stored = http.put(f"/v1/documents/{doc}", json={"text": "Open a ticket, then assign it."})
            assert stored.status_code in (200, 201), stored.text
        chunk = "jira-workflow.md:v1:0"
        http.post(
            "/v1/interactions",
            json={
                "id": "int-jira",
                "messages": [{"role": "user", "content": "How?"}],
                "response": "Open a ticket [1].",
            },
        ).raise_for_status()
        events = [
            {"id": "e-known", "interaction_id": "int-jira", "kind": "source_helpful",
             "value": {"chunk_id": chunk}},
            {"id": "e-made-up", "interaction_id": "int-jira", "kind": "source_clicked",
             "value": {"chunk_id": "Maria-Garcia:v1:0"}},
        ]  # fmt: skip
        answer = http.post("/v1/feedback", json={"events": events})
        stored = {
            e["kind"]: e["value"]["chunk_id"]
            for e in http.get("/v1/feedback?interaction_id=int-jira").json()["data"]
        }

    assert stored == {"source_helpful": chunk}  # a chunk of the tenant's documents: its id is kept whole
    # No such chunk: refused, and the refusal names it as redaction read it.
    [made_up] = [r for r in answer.json()["results"] if r["id"] == "e-made-up"]
    assert made_up["status"] == "rejected" and "not found" in made_up["error"]
    assert "Maria" not in answer.text


def test_a_new_title_alone_makes_the_next_version(api: dict[str, Any]) -> None:
    with _http(api) as http:
        http.put("/v1/documents/zebra", json={"text": "Zebras are striped.", "title": "Zebras"})
        again = http.put("/v1/documents/zebra", json={"text": "Zebras are striped.", "title": "Zebras"})
        retitled = http.put("/v1/documents/zebra", json={"text": "Zebras are striped.", "title": "Stripes"})
        listed = {d["id"]: d for d in http.get("/v1/documents").json()["data"]}

    assert again.json()["status"] == "unchanged" and retitled.json()["status"] == "updated"
    assert (listed["zebra"]["version"], listed["zebra"]["title"]) == (2, "Stripes")


def test_a_deleted_and_recreated_document_goes_on_counting_versions(api: dict[str, Any]) -> None:
    with _http(api) as http:
        http.put("/v1/documents/gone", json={"text": "The old text."}).raise_for_status()
        http.delete("/v1/documents/gone").raise_for_status()
        back = http.put("/v1/documents/gone", json={"text": "The new text."}).json()

    # Feedback that named the old text's chunks (gone:v1:…) never lands on the new text's.
    assert (back["status"], back["version"]) == ("created", 2)


@pytest.mark.parametrize("title", ["first\u2028second", "evil\u202egnp.exe", "a\u2066b"])
def test_a_title_with_separators_or_bidi_controls_is_a_400(api: dict[str, Any], title: str) -> None:
    with _http(api) as http:
        answer = http.put("/v1/documents/titled", json={"text": "Some text.", "title": title})

    assert answer.status_code == 400 and answer.json()["error"]["param"] == "title", answer.text


@pytest.mark.parametrize(
    ("unit", "fmt"), [("[", "markdown"), ("![", "markdown"), ('<a b="', "html"), ("<![", "html")]
)
def test_documents_of_repeated_unclosed_markup_are_stored_not_a_500(
    api: dict[str, Any], unit: str, fmt: str
) -> None:
    with _http(api) as http:
        text = "Refunds take three days. " + unit * (20_000 // len(unit))
        answer = http.put(f"/v1/documents/unclosed-{fmt}-{len(unit)}", json={"text": text, "format": fmt})

    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("dots", [".", "..", "..."])
def test_an_id_of_dots_alone_is_a_400_as_no_url_could_read_it_back(api: dict[str, Any], dots: str) -> None:
    with _http(api) as http:
        document = http.post("/v1/documents", json={"id": dots, "text": "Refunds take two days."})
        interaction = http.post(
            "/v1/interactions",
            json={"id": dots, "messages": [{"role": "user", "content": "Hi"}], "response": "Hello."},
        )
        dotted = http.post("/v1/documents", json={"id": f"v1{dots}2", "text": "Refunds take three days."})

    assert document.status_code == 400 and document.json()["error"]["param"] == "id", document.text
    assert interaction.status_code == 400, interaction.text
    assert dotted.status_code == 201, dotted.text


def test_runs_of_no_letter_or_digit_are_not_chunks_and_a_document_of_only_them_is_a_400(
    api: dict[str, Any],
) -> None:
    """50,000 quote marks made 72 chunks whose embeddings sat near every query, above the answering page."""
    with _http(api) as http:
        junk = http.put("/v1/documents/junk", json={"text": "\u2039" * 50_000, "format": "html"})
        mixed = http.put(
            "/v1/documents/mixed", json={"text": "The vault code is in the safe. " + "=" * 20_000}
        )

    assert junk.status_code == 400 and "no letter or digit" in junk.json()["error"]["message"]
    assert mixed.status_code == 201 and mixed.json()["chunks"] == 1, mixed.text
