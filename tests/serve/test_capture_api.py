from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tuneloop import Client, Settings
from tuneloop.errors import NotFound
from tuneloop.store.repository import Store

PII = {
    "email": "jane.doe@example.com",
    "phone": "+1 415-555-0132",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "name": "Johanna Whitfield",
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, Path]]:
    home = tmp_path_factory.mktemp("home")
    settings = Settings(
        home=home, backend="none", max_body_bytes=200_000, max_batch_events=50, max_text_chars=5000
    )
    store = Store(settings.database_url)
    _, key_a = store.create_tenant("a")
    _, key_b = store.create_tenant("b")
    store.close()
    with live_server(settings) as url:
        yield url, key_a, key_b, home / "tuneloop.db"


def _http(api: tuple, key: str | None = None) -> httpx.Client:
    url, key_a, *_ = api
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key or key_a}"})


def _new_interaction(client: Client, text: str = "How do I reset my password?") -> str:
    return client.log_interaction([{"role": "user", "content": text}], "Open Settings, then Security.")


def test_feedback_lands_on_its_interaction(api: tuple) -> None:
    url, key_a, *_ = api
    with Client(url, key_a) as client:
        iid = _new_interaction(client)
        event = str(uuid.uuid4())  # opaque, so stored as sent (others are stored keyed)
        assert client.feedback(iid, "thumbs", 1, id=event) == "accepted"
        assert client.feedback(iid, "thumbs", 1, id=event) == "duplicate"
        stored = client.interaction(iid)
    assert [(e["id"], e["kind"], e["value"]) for e in stored["feedback"]] == [(event, "thumbs", 1)]


def test_an_id_of_other_characters_is_told_which_ones_it_may_hold(api: tuple) -> None:
    with _http(api) as http:
        resp = http.post("/v1/interactions", json={"id": "a/b", "messages": [], "response": "a"})
    message = resp.json()["error"]["message"]
    assert resp.status_code == 400 and message.startswith("id: use only letters, digits")
    assert "pattern" not in message


def test_conflicting_duplicate_event_gets_409(api: tuple) -> None:
    with _http(api) as http:
        iid = http.post(
            "/v1/interactions", json={"messages": [{"role": "user", "content": "q"}], "response": "a"}
        ).json()["id"]
        event = {"id": "dup-1", "interaction_id": iid, "kind": "rating", "value": 4}
        assert http.post("/v1/feedback", json=event).status_code == 201
        assert http.post("/v1/feedback", json=event).status_code == 200
        clash = http.post("/v1/feedback", json={**event, "value": 2})
    message = clash.json()["error"]["message"]
    assert clash.status_code == 409 and "different payload" in message
    assert "dup-1" in message and "ref-" not in message  # the id the client sent, not its stored form


def test_batch_answers_per_item_and_one_bad_event_loses_none_of_the_others(api: tuple) -> None:
    with _http(api) as http:
        iid = http.post(
            "/v1/interactions",
            json={"messages": [{"role": "user", "content": "q"}], "response": "a", "choices": ["a", "b"]},
        ).json()["id"]
        events = [
            {"id": "b-1", "interaction_id": iid, "kind": "thumbs", "value": 1},
            {"id": "b-2", "interaction_id": iid, "kind": "rating", "value": 9},
            {"id": "b-3", "interaction_id": iid, "kind": "preference", "value": {"chosen": 1, "rejected": 0}},
            {"id": "b-4", "interaction_id": "int-missing", "kind": "accepted"},
            {
                "id": "b-5",
                "interaction_id": iid,
                "kind": "outcome",
                "value": {"name": "tests_passed", "value": True},
            },
            [1, 2],
            {"id": "b-7", "interaction_id": iid, "kind": "preference", "value": {"chosen": 5, "rejected": 0}},
        ]
        body = http.post("/v1/feedback", json={"events": events}).json()
        stored = http.get("/v1/feedback", params={"interaction_id": iid}).json()["data"]
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "rejected",
        "accepted",
        "pending",
        "accepted",
        "rejected",
        "rejected",
    ]
    assert "rating takes an integer from 1 to 5" in body["results"][1]["error"]
    assert body["results"][5]["error"] == "events.5: expected a JSON object"
    assert body["results"][6]["error"].startswith("events.6.value: interaction")  # refused by the write
    # Kept until its interaction is logged (capture/pending.py).
    assert (body["accepted"], body["rejected"], body["pending"]) == (3, 3, 1)
    # Stored by their keyed ids ("b-1" could spell anything), so only the count is readable here.
    assert len(stored) == 3 and all(e["id"].startswith("ref-") for e in stored)


def test_paging_by_cursor_returns_every_event_of_one_batch(api: tuple) -> None:
    """A batch's events share one received_at: `since` that time skips the rest of them, `next` does not."""
    query = {"interaction_id": "page-1", "limit": 5}
    with _http(api) as http:
        http.post(
            "/v1/interactions",
            json={"id": "page-1", "messages": [{"role": "user", "content": "q"}], "response": "a"},
        )
        events = [
            {"id": f"pg-{i}", "interaction_id": "page-1", "kind": "thumbs", "value": 1} for i in range(20)
        ]
        assert http.post("/v1/feedback", json={"events": events}).json()["accepted"] == 20
        pages = [http.get("/v1/feedback", params=query).json()]
        while pages[-1]["next"]:
            pages.append(http.get("/v1/feedback", params={**query, "after": pages[-1]["next"]}).json())
        [received] = {e["received_at"] for page in pages for e in page["data"]}
        since = http.get("/v1/feedback", params={**query, "since": received}).json()["data"]
        stored = http.get("/v1/interactions/page-1").json()["feedback"]
    assert [len(page["data"]) for page in pages] == [5, 5, 5, 5, 0]
    # In arrival order, then by id as stored (keyed, `ref-…`): each event once.
    assert [e["id"] for page in pages for e in page["data"]] == sorted(e["id"] for e in stored)
    assert len(stored) == 20 and since == []  # `since` stays "received strictly after"


def test_an_outcome_or_score_the_reward_policy_does_not_list_is_stored_with_a_warning(
    api: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    """A team posting its own outcome names (a sale) hears at once that they train nothing until listed."""
    with _http(api) as http:
        iid = http.post(
            "/v1/interactions", json={"messages": [{"role": "user", "content": "q"}], "response": "a"}
        ).json()["id"]
        sale = {
            "id": "w-1",
            "interaction_id": iid,
            "kind": "outcome",
            "value": {"name": "purchase", "value": 1},
        }
        single = http.post("/v1/feedback", json=sale)
        listed = {**sale, "id": "w-2", "value": {"name": "resolved", "value": True}}
        score = {"id": "w-3", "interaction_id": iid, "kind": "score"}
        score["value"] = {"name": "helpfulness", "data_type": "numeric", "value": 0.9}
        batch = http.post("/v1/feedback", json={"events": [listed, score]}).json()["results"]
        personal = {**score, "id": "w-4", "value": {**score["value"], "name": "Oscar Wilde 415-555-0123"}}
        unnamed = http.post("/v1/feedback", json=personal).json()["warning"]
    assert single.status_code == 201 and single.json()["status"] == "accepted"
    assert (
        "outcome 'purchase' is stored but carries no reward: list it under `outcomes`"
        in single.json()["warning"]
    )
    assert "warning" not in batch[0] and batch[0]["status"] == "accepted"
    assert batch[1]["status"] == "accepted" and "map it under `scores`" in batch[1]["warning"]
    # A name that reads as data (the store redacts it) is not repeated back.
    assert unnamed.startswith("score '<key>' is stored") and "555" not in unnamed

    url, key_a, *_ = api
    with Client(url, key_a) as client:
        for _ in range(3):  # the SDK logs it once, not once per sale
            client.feedback(iid, "outcome", {"name": "add_to_cart", "value": True})
    logged = [r.getMessage() for r in caplog.records if "'add_to_cart'" in r.getMessage()]
    assert len(logged) == 1 and "carries no reward" in logged[0]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (
            b'{"id": "x", "interaction_id": "i", "kind": "dwell_ms", "value": NaN}',
            400,
            "NaN is not valid JSON",
        ),
        (b'{"id": "x", "interaction_id": "i", "kind": "dwell_ms", "value": Infinity}', 400, "Infinity"),
        (
            b'{"id": "x", "interaction_id": "i", "kind": "comment", "value": "caf\xe9"}',
            400,
            "not valid UTF-8",
        ),
        (b'{"id": "x", "interaction_id": "i", "kind": "smile"}', 400, "kind"),
        (b'{"id": 5, "interaction_id": "i", "kind": "thumbs", "value": 1}', 400, "id"),
        (b'{"id": "x", "interaction_id": "i", "kind": "thumbs", "value": "up"}', 400, "thumbs takes 1"),
        (b'{"id": "x", "interaction_id": "i", "kind": "thumbs", "value": 1, "extra": 1}', 400, "extra"),
        (b"[1, 2]", 400, "expected a JSON object"),
        (b"", 400, "empty"),
        (
            b'{"id": "x", "interaction_id": "i", "kind": "comment", "value": "' + b"a" * 6000 + b'"}',
            400,
            "value",
        ),
        (b'{"events": "nope"}', 400, "events"),
        (b'{"events": [' + b",".join([b'{"id": "x"}'] * 51) + b"]}", 413, "limit is 50"),
        (b'{"id": "x", "kind": "comment", "value": "' + b"a" * 250_000 + b'"}', 413, "200000"),
    ],
)
def test_bad_feedback_input_gets_a_4xx_that_names_the_problem(
    api: tuple, body: bytes, status: int, fragment: str
) -> None:
    with _http(api) as http:
        resp = http.post("/v1/feedback", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert fragment in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"kind": "thumbs", "value": "up"}, "value"),
        ({"kind": "thumbs", "value": 1, "created_at": "1900-01-01T00:00:00Z"}, "created_at"),
        ({"kind": "outcome", "value": {"name": "resolved", "value": 10**400}}, "value.value"),
    ],
)
def test_a_check_across_fields_names_the_field_in_param(api: tuple, event: dict, param: str) -> None:
    with _http(api) as http:
        resp = http.post("/v1/feedback", json={"id": "x", "interaction_id": "i", **event})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text


def test_bad_interaction_input_names_the_field(api: tuple) -> None:
    with _http(api) as http:
        resp = http.post(
            "/v1/interactions", json={"messages": [{"role": "robot", "content": "x"}], "response": "a"}
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("messages.0.role")


def test_missing_or_unknown_key_gets_401(api: tuple) -> None:
    url = api[0]
    assert httpx.get(f"{url}/v1/feedback").status_code == 401
    resp = httpx.get(f"{url}/v1/feedback", headers={"Authorization": "Bearer tl-nope"})
    assert resp.status_code == 401 and "tuneloop tenants add" in resp.json()["error"]["message"]


def test_tenant_b_can_neither_read_nor_write_tenant_a_data(api: tuple) -> None:
    url, key_a, key_b, _ = api
    with Client(url, key_a) as a, Client(url, key_b) as b:
        iid = _new_interaction(a)
        a.feedback(iid, "thumbs", 1, id=f"iso-{iid}")
        with pytest.raises(NotFound):
            b.interaction(iid)
        # B's events wait for an interaction of B's with that id; they never reach A's.
        assert b.feedback(iid, "thumbs", -1) == "pending"
        assert (
            b.feedback_batch([{"interaction_id": iid, "kind": "thumbs", "value": -1}])[0]["status"]
            == "pending"
        )
        assert [e["rater"] for e in a.interaction(iid)["feedback"]] == [None]
    with _http(api, key_b) as http:
        assert http.get("/v1/feedback", params={"interaction_id": iid}).json()["data"] == []


def test_pii_sent_through_the_api_never_reaches_the_database_file(api: tuple) -> None:
    url, key_a, _, db_file = api
    text = (
        f"I am {PII['name']}, mail me at {PII['email']} or call {PII['phone']}. "
        f"Card {PII['card']}, IBAN {PII['iban']}."
    )
    with Client(url, key_a) as client:
        iid = client.log_interaction(
            [{"role": "user", "content": text}],
            f"Thanks {PII['name']}!",
            metadata={"note": f"contact {PII['email']}"},
        )
        client.feedback(iid, "edit", f"Sure, {PII['name']}, we will call {PII['phone']}.")
        client.feedback(iid, "comment", f"my card is {PII['card']}", metadata={"from": PII["email"]})
        stored = client.interaction(iid)
    assert "<EMAIL_ADDRESS>" in stored["messages"][0]["content"]
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob("tuneloop.db*"))
    for kind, value in PII.items():
        for variant in {value, value.replace(" ", ""), value.replace("-", "")}:
            assert variant.encode() not in raw, f"{kind} leaked into the database file"


def test_unknown_route_answers_an_openai_error(api: tuple) -> None:
    resp = httpx.get(f"{api[0]}/v1/nothing-here")
    assert resp.status_code == 404 and "error" in resp.json()


def test_client_retries_resend_the_same_event_id(api: tuple) -> None:
    url, key_a, *_ = api
    with Client(url, key_a) as client:
        iid = _new_interaction(client)
        eid = f"retry-{uuid.uuid4().hex}"
        statuses = [client.feedback(iid, "accepted", id=eid) for _ in range(3)]
        assert statuses == ["accepted", "duplicate", "duplicate"]
        assert len(client.interaction(iid)["feedback"]) == 1


def test_a_revoked_key_stores_nothing_more_though_the_server_cached_it(api: tuple) -> None:
    *_, db = api
    store = Store(f"sqlite:///{db}")
    key = store.add_key("a", role="ingest")
    with _http(api, key) as http:
        logged = http.post(
            "/v1/interactions", json={"messages": [{"role": "user", "content": "q"}], "response": "a"}
        )
        assert logged.status_code == 201, logged.text  # the server now holds the key's principal
        iid = logged.json()["id"]
        store.revoke_key(key[:10])  # as `tuneloop tenants revoke` does, from another process
        feedback = http.post(
            "/v1/feedback", json={"id": "after-revoke", "interaction_id": iid, "kind": "thumbs", "value": 1}
        )
        batch = http.post(
            "/v1/feedback",
            json={"events": [{"id": "after-revoke-2", "interaction_id": iid, "kind": "thumbs", "value": 1}]},
        )
        another = http.post(
            "/v1/interactions", json={"messages": [{"role": "user", "content": "q2"}], "response": "a"}
        )
        # Bodies refused before any write (which checks the key) are refused as the key is: a 401.
        refused = [
            http.post("/v1/feedback", json={"events": [{"id": "x", "interaction_id": iid, "kind": "smile"}]}),
            http.post("/v1/feedback", json={"id": "y", "interaction_id": iid, "kind": "smile"}),
            http.post("/v1/interactions", json={"messages": []}),
        ]
    assert [r.status_code for r in (feedback, batch, another, *refused)] == [401] * 6
    assert "revoked" in feedback.json()["error"]["message"]
    stored = store.for_tenant(store.tenant_by_name("a"))
    assert not {e["id"] for e in stored.feedback()} & {"after-revoke", "after-revoke-2"}
    store.close()
