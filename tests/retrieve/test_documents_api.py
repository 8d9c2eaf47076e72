"""Documents and retrieval over real HTTP: tenants isolated, deletions final, sources in gateway prompts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.live import live_server, serve_app
from tests.serve.openai_standin import standin
from tuneloop import Settings
from tuneloop.registry.composition import Decoding, compose
from tuneloop.registry.versions import Registry
from tuneloop.store.repository import Store

REFUNDS = (
    "# Refunds\n\nRefunds reach your Finly balance within 5 business days after the merchant sends them. "
    "Write to jane.doe@example.com if a refund is late."
)
FEES = (
    "<html><head><style>p{}</style></head><body><h1>Fees</h1><p>Transfers abroad cost 0.5%.</p></body></html>"
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """tuneloop before an upstream stand-in that records every prompt; tenants a (retrieval on) and b."""
    received: list[dict[str, Any]] = []
    with serve_app(standin(received)) as upstream:
        home = tmp_path_factory.mktemp("home")
        settings = Settings(
            home=home, backend="openai", upstream_url=f"{upstream}/v1", upstream_runtime_lora=False
        )
        store = Store(settings.database_url)
        _, key_a = store.create_tenant("a")
        _, key_b = store.create_tenant("b")
        store.close()
        policy = home / "policies" / "a" / "retrieval_policy.yaml"
        policy.parent.mkdir(parents=True)
        policy.write_text("enabled: true\nk: 2\n")
        with live_server(settings) as url:
            yield {"url": url, "a": key_a, "b": key_b, "received": received, "settings": settings}


def _http(api: dict[str, Any], tenant: str = "a") -> httpx.Client:
    return httpx.Client(base_url=api["url"], headers={"Authorization": f"Bearer {api[tenant]}"}, timeout=60)


def _retrieve(http: httpx.Client, query: str, **extra: Any) -> dict[str, Any]:
    response = http.post("/v1/retrieve", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_tenant_never_retrieves_another_tenants_chunks(api: dict[str, Any]) -> None:
    with _http(api, "a") as a, _http(api, "b") as b:
        assert a.put("/v1/documents/refunds", json={"text": REFUNDS, "format": "markdown"}).status_code == 201
        assert b.put("/v1/documents/menu", json={"text": "Our soup of the day is tomato."}).status_code == 201

        mine = _retrieve(a, "When will my refund arrive?")["data"]
        theirs = _retrieve(b, "When will my refund arrive?")["data"]
        b_docs = b.get("/v1/documents").json()["data"]

    assert mine[0]["document_id"] == "refunds"
    assert {r["document_id"] for r in theirs} == {"menu"}
    assert [d["id"] for d in b_docs] == ["menu"]


def test_documents_are_redacted_chunked_with_provenance_and_versioned(api: dict[str, Any]) -> None:
    with _http(api) as http:
        first = http.put("/v1/documents/fees", json={"text": FEES, "format": "html"}).json()
        again = http.put("/v1/documents/fees", json={"text": FEES, "format": "html"}).json()
        changed = http.put("/v1/documents/fees", json={"text": "Transfers abroad cost 0.7% now."}).json()
        clash = http.post("/v1/documents", json={"id": "fees", "text": "something else"})
        renamed = http.put("/v1/documents/fees", json={"id": "other", "text": "something else"})
        hits = _retrieve(http, "What does a transfer abroad cost?", k=5)["data"]
        refund = _retrieve(http, "refund late, who do I write to?")["data"][0]

    assert (first["status"], first["version"], again["status"], changed["version"]) == (
        "created",
        1,
        "unchanged",
        2,
    )
    assert clash.status_code == 409 and renamed.status_code == 400
    fees = [h for h in hits if h["document_id"] == "fees"]
    assert [(h["version"], h["text"]) for h in fees] == [(2, "Transfers abroad cost 0.7% now.")]
    assert (fees[0]["chunk_id"], fees[0]["start"], fees[0]["end"]) == ("fees:v2:0", 0, 31)
    assert "jane.doe@example.com" not in refund["text"] and "<EMAIL_ADDRESS>" in refund["text"]


def test_deleting_a_document_removes_it_from_retrieval_and_from_prompts(api: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=f"{api['url']}/v1", api_key=api["a"], max_retries=0)
    ask = [
        {"role": "system", "content": "You are Finly's helper."},
        {"role": "user", "content": "How do I close my account?"},
    ]
    with _http(api) as http:
        http.put("/v1/documents/closing", json={"text": "Close your account under Profile > Close account."})
        answer = client.chat.completions.create(model="tuneloop", messages=ask)
        before = api["received"][-1]["messages"][0]["content"]
        record = http.get("/v1/retrievals", params={"interaction_id": answer.id}).json()["data"][0]
        assert http.delete("/v1/documents/closing").json()["deleted"] is True
        assert http.delete("/v1/documents/closing").status_code == 404
        client.chat.completions.create(model="tuneloop", messages=ask)
        after = api["received"][-1]["messages"][0]["content"]
        hits = _retrieve(http, "How do I close my account?", k=10)["data"]

    assert before.startswith("You are Finly's helper.") and "[1] Close your account" in before
    assert record["results"][0]["chunk_id"] == "closing:v1:0" and record["results"][0]["rank"] == 1
    assert record["cited"] == []  # the stand-in's answer cites nothing
    assert "Close your account" not in after
    assert all(h["document_id"] != "closing" for h in hits)


def test_source_feedback_names_a_chunk(api: dict[str, Any]) -> None:
    with _http(api) as http:
        http.put("/v1/documents/payouts", json={"text": "Payouts land in two days."}).raise_for_status()
        iid = http.post(
            "/v1/interactions", json={"messages": [{"role": "user", "content": "q"}], "response": "a [1]"}
        ).json()["id"]
        good = http.post(
            "/v1/feedback",
            json={
                "id": "s-1",
                "interaction_id": iid,
                "kind": "source_helpful",
                "value": {"chunk_id": "payouts:v1:0"},
            },
        )
        bad = http.post(
            "/v1/feedback", json={"id": "s-2", "interaction_id": iid, "kind": "source_clicked", "value": 3}
        )

    assert good.status_code == 201
    assert bad.status_code == 400 and "chunk_id" in bad.json()["error"]["message"]


def test_source_feedback_must_name_a_source_its_answer_showed(api: dict[str, Any]) -> None:
    with _http(api, "b") as http:
        http.put("/v1/documents/refunds", json={"text": REFUNDS, "format": "markdown"}).raise_for_status()
        http.put("/v1/documents/menu", json={"text": "Our soup of the day is tomato."}).raise_for_status()
        iid = http.post(
            "/v1/interactions", json={"messages": [{"role": "user", "content": "q"}], "response": "a [1]"}
        ).json()["id"]
        shown = http.post("/v1/retrieve", json={"query": "refund", "k": 1, "interaction_id": iid}).json()
        [chunk] = [r["chunk_id"] for r in shown["data"]]
        other = next(c for c in ("menu:v1:0", "refunds:v1:0") if c != chunk)

        def mark(event_id: str, chunk_id: str, interaction: str = iid) -> httpx.Response:
            body = {"interaction_id": interaction, "kind": "source_helpful", "value": {"chunk_id": chunk_id}}
            return http.post("/v1/feedback", json={"id": event_id, **body})

        on_shown, not_shown = mark("m-1", chunk), mark("m-2", other)
        plain = http.post(
            "/v1/interactions", json={"messages": [{"role": "user", "content": "q"}], "response": "a"}
        ).json()["id"]  # an answer without a logged retrieval: any chunk of the tenant's documents
        on_document, made_up = mark("m-3", other, plain), mark("m-4", "nothing:v9:0", plain)

    assert on_shown.status_code == 201 and on_document.status_code == 201
    assert not_shown.status_code == 400 and "not among the sources shown" in not_shown.text
    assert made_up.status_code == 404 and "not found" in made_up.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": ""}, 400),
        ({"text": " \n\t "}, 400),
        ({"text": "x", "format": "pdf"}, 400),
        ({"text": "<script>only()</script>", "format": "html"}, 400),
        ({"text": "x", "extra": 1}, 400),
    ],
)
def test_bad_documents_get_a_clear_4xx(api: dict[str, Any], body: dict[str, Any], status: int) -> None:
    with _http(api) as http:
        response = http.post("/v1/documents", json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_a_blank_query_is_refused_not_answered(api: dict[str, Any], query: str) -> None:
    with _http(api) as http:
        response = http.post("/v1/retrieve", json={"query": query})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("query:")


def test_a_document_title_holding_control_characters_is_a_400(api: dict[str, Any]) -> None:
    # `tuneloop docs list` prints titles to a terminal: an escape sequence in one would run there.
    with _http(api) as http:
        response = http.put("/v1/documents/escapes", json={"text": "Fees", "title": "\x1b]0;owned\x07Fees"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "title"


def test_a_title_taken_from_the_text_drops_its_control_characters(api: dict[str, Any]) -> None:
    with _http(api) as http:
        put = http.put(
            "/v1/documents/ansi", json={"text": "\x1b[2J\x1b[31mFees\x1b[0m\n\nTransfers cost 0.5%."}
        )
        assert put.status_code == 201, put.text
        [doc] = [d for d in http.get("/v1/documents").json()["data"] if d["id"] == "ansi"]
    assert doc["title"] == "[2J[31mFees[0m"


@pytest.mark.parametrize("value", ["jane.doe@example.com", "4111 1111 1111 1111"])
def test_a_title_cut_from_a_long_first_line_keeps_no_part_of_what_redaction_removes(
    api: dict[str, Any], value: str
) -> None:
    # The title is the first line's first 200 characters: the value straddles the cut.
    first_line = "Refunds and chargebacks explained " * 10
    first_line = first_line[: 199 - len(value) // 2] + " " + value + " for every customer"
    with _http(api) as http:
        doc_id = f"long-heading-{value[0]}"
        put = http.put(f"/v1/documents/{doc_id}", json={"text": f"{first_line}\n\nRefunds take 5 days."})
        assert put.status_code == 201, put.text
        [doc] = [d for d in http.get("/v1/documents").json()["data"] if d["id"] == doc_id]
    assert len(doc["title"]) <= 200
    assert value[:6] not in doc["title"], doc["title"]


def test_a_broken_retrieval_policy_answers_without_sources_rather_than_refusing_the_client(
    api: dict[str, Any],
) -> None:
    store = Store(api["settings"].database_url)
    _, key = store.create_tenant("careless")
    store.close()
    policy = api["settings"].home / "policies" / "careless" / "retrieval_policy.yaml"
    policy.parent.mkdir(parents=True)
    policy.write_text("enabled: true\nmin_scor: 0.5\n")  # a typo of the operator's
    client = openai.OpenAI(base_url=f"{api['url']}/v1", api_key=key, max_retries=0)
    ask = [{"role": "user", "content": "How do I close my account?"}]

    answer = client.chat.completions.create(model="tuneloop", messages=ask)

    assert answer.choices[0].message.content
    assert "[1]" not in api["received"][-1]["messages"][0]["content"]


def test_a_version_that_shows_fewer_sources_gets_only_its_top_ones(api: dict[str, Any]) -> None:
    store = Store(api["settings"].database_url)
    tenant_row, key = store.create_tenant("terse")
    registry = Registry(store.for_tenant(tenant_row))
    version = compose(
        registry, parent=None, base_model="m", actor="test", reason="t", decoding=Decoding(sources=1)
    )
    registry.move(version.id, "gated", actor="test", reason="t")
    registry.move(version.id, "production", actor="test", reason="t")
    store.close()
    policy = api["settings"].home / "policies" / "terse" / "retrieval_policy.yaml"
    policy.parent.mkdir(parents=True)
    policy.write_text("enabled: true\nk: 2\n")
    client = openai.OpenAI(base_url=f"{api['url']}/v1", api_key=key, max_retries=0)
    with httpx.Client(base_url=api["url"], headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        http.put("/v1/documents/refunds", json={"text": REFUNDS})
        http.put("/v1/documents/refund-card", json={"text": "A refund goes back to the card you paid with."})
        answer = client.chat.completions.create(
            model="tuneloop", messages=[{"role": "user", "content": "When does my refund arrive?"}]
        )
        record = http.get("/v1/retrievals", params={"interaction_id": answer.id}).json()["data"][0]

    prompt = api["received"][-1]["messages"][0]["content"]
    assert "[1] " in prompt and "[2] " not in prompt
    assert [r["rank"] for r in record["results"]] == [1]
    assert answer.system_fingerprint == version.id
