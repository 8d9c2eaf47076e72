"""Sessions on gateway calls (the `X-Tuneloop-Session` header or `metadata.session_id`) and feedback that
targets a session or arrives before its interaction, over real HTTP with the openai SDK."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.live import live_server, serve_app
from tests.serve.openai_standin import standin
from tuneloop import Settings
from tuneloop.store.repository import Store

ASK = [{"role": "user", "content": "Where do I change my address?"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with serve_app(standin([])) as up:
        settings = Settings(home=tmp_path_factory.mktemp("gw"), backend="openai", upstream_url=f"{up}/v1")
        store = Store(settings.database_url)
        _, key = store.create_tenant("a", redaction="off")
        with (
            live_server(settings) as url,
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
        ):
            yield {"url": url, "key": key, "http": http}
        store.close()


def _sdk(gw: dict, session: str | None = None) -> openai.OpenAI:
    headers = {"X-Tuneloop-Session": session} if session else None
    return openai.OpenAI(
        base_url=f"{gw['url']}/v1", api_key=gw["key"], max_retries=0, default_headers=headers
    )


def test_the_session_header_and_metadata_session_id_are_stored(gateway: dict) -> None:
    by_header = _sdk(gateway, "conv-7").chat.completions.create(model="tuneloop", messages=ASK)
    by_body = _sdk(gateway).completions.create(
        model="tuneloop", prompt="Hi", extra_body={"metadata": {"session_id": "conv-8"}}
    )
    http = gateway["http"]
    assert http.get(f"/v1/interactions/{by_header.id}").json()["session"] == "conv-7"
    assert http.get(f"/v1/interactions/{by_body.id}").json()["session"] == "conv-8"


@pytest.mark.parametrize("session", ["s" * 300, 42, " ", "line\nbreak"])
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_a_session_id_capture_cannot_store_is_a_400_before_generating(
    gateway: dict, route: str, session: object
) -> None:
    ask = {"messages": ASK} if route == "/v1/chat/completions" else {"prompt": "Hi"}
    for stream in (False, True):
        body = {"model": "tuneloop", **ask, "stream": stream, "metadata": {"session_id": session}}
        answer = gateway["http"].post(route, json=body)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "metadata.session_id"


def test_session_feedback_sent_before_the_first_answer_lands_on_it(gateway: dict) -> None:
    http = gateway["http"]
    early = {
        "id": "early-1",
        "session": "conv-9",
        "kind": "outcome",
        "value": {"name": "resolved", "value": True},
    }
    response = http.post("/v1/feedback", json=early)
    assert (response.status_code, response.json()["status"]) == (202, "pending")
    answer = _sdk(gateway, "conv-9").chat.completions.create(model="tuneloop", messages=ASK)
    stored = http.get(f"/v1/interactions/{answer.id}").json()
    assert [e["id"] for e in stored["feedback"]] == ["early-1"]


def test_feedback_for_an_interaction_not_yet_logged_is_pending_then_attached(gateway: dict) -> None:
    http = gateway["http"]
    events = [
        {"id": "p-1", "interaction_id": "app-42", "kind": "thumbs", "value": 1},
        {"id": "p-2", "interaction_id": "app-42", "kind": "comment", "value": "clear"},
    ]
    batch = http.post("/v1/feedback", json={"events": events}).json()
    assert batch["pending"] == 2 and {r["status"] for r in batch["results"]} == {"pending"}
    interaction = {"id": "app-42", "messages": ASK, "response": "Settings, then Profile."}
    assert http.post("/v1/interactions", json=interaction).status_code == 201
    stored = http.get("/v1/interactions/app-42").json()
    assert sorted(e["id"] for e in stored["feedback"]) == ["p-1", "p-2"]


@pytest.mark.parametrize(
    "event",
    [
        {"id": "x-1", "kind": "thumbs", "value": 1},
        {"id": "x-2", "interaction_id": "i", "session": "s", "kind": "thumbs", "value": 1},
    ],
)
def test_an_event_names_exactly_one_of_interaction_and_session(gateway: dict, event: dict) -> None:
    response = gateway["http"].post("/v1/feedback", json=event)
    assert response.status_code == 400 and "interaction_id" in response.json()["error"]["message"]
