"""Ids a client chooses for interactions and events: opaque ones are stored as sent, any other by its keyed
hash, and the client still finds everything by the id it chose."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.capture import pending
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store

SECRET = b"k" * 32


@pytest.mark.parametrize(
    "client_id",
    [
        str(uuid.uuid4()),
        uuid.uuid4().hex,
        "int-" + uuid.uuid4().hex,
        "chatcmpl-" + uuid.uuid4().hex,
        str(uuid.uuid7()) if hasattr(uuid, "uuid7") else str(uuid.uuid1()),
    ],
)
def test_opaque_ids_are_stored_as_sent(client_id: str) -> None:
    assert Pseudonyms(SECRET).reference(client_id) == client_id


@pytest.mark.parametrize(
    "client_id",
    [
        "jane.doe-1",
        "4111111111111111",
        "555-0142",
        "123-45-6789",
        "ticket-7",
        "x",
        "johnsmith-" + uuid.uuid4().hex,  # found by an attacker: a name before an opaque part
        "0JANESMYTH5550142123456789",  # ULID-shaped
        "5550142987a65432",
        hashlib.md5(b"jane.doe@example.com").hexdigest(),  # a common conversation id, open to a dictionary
        "41555501-3400-0000-0000-000000000000",  # UUID-shaped, but no generator's: a phone number
        "int-41111111111111110000000000000000",
    ],
)
def test_ids_that_could_spell_something_personal_are_keyed_once(client_id: str) -> None:
    pseudonyms = Pseudonyms(SECRET)
    stored = pseudonyms.reference(client_id)
    assert stored.startswith("ref-") and client_id not in stored
    assert pseudonyms.reference(stored) == stored  # a stored id names the same row again
    assert Pseudonyms(b"o" * 32).reference(client_id) != stored  # keyed: no secret, no dictionary attack


@pytest.fixture
def served(tmp_path: Path, tiny_model: Path) -> Iterator[tuple[httpx.Client, httpx.Client, Store]]:
    """Clients of a `redact` tenant and a redaction-`off` tenant on a live server, and its store."""
    settings = Settings(home=tmp_path / "home", model=str(tiny_model))
    store = Store(settings.database_url)
    keys = [store.create_tenant(name, redaction=mode)[1] for name, mode in (("r", "redact"), ("o", "off"))]
    with live_server(settings) as url:
        clients = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {k}"}) for k in keys]
        yield clients[0], clients[1], store
        for c in clients:
            c.close()
    store.close()


def _interaction(iid: str) -> dict:
    return {
        "id": iid,
        "messages": [{"role": "user", "content": "Where is my parcel?"}],
        "response": "On its way.",
    }


def test_a_client_finds_its_keyed_interactions_and_events_by_the_ids_it_chose(served: tuple) -> None:
    http, _, store = served
    for iid in ("jane-doe-1", "jane-doe-2"):
        created = http.post("/v1/interactions", json=_interaction(iid))
        assert created.status_code == 201 and created.json()["id"] == iid
    assert http.post("/v1/interactions", json=_interaction("jane-doe-1")).json()["status"] == "duplicate"
    clash = http.post("/v1/interactions", json={**_interaction("jane-doe-1"), "response": "Lost."})
    assert clash.status_code == 409 and "'jane-doe-1'" in clash.json()["error"]["message"]
    events = [
        {"id": "jane-thumb", "interaction_id": "jane-doe-1", "kind": "thumbs", "value": 1},
        {"id": "jane-regen", "interaction_id": "jane-doe-1", "kind": "regenerated",
         "value": {"replaced_by": "jane-doe-2"}},
        {"id": "jane-pref", "interaction_id": "jane-doe-2", "kind": "preference",
         "value": {"chosen_interaction": "jane-doe-2", "rejected_interaction": "jane-doe-1"}},
    ]  # fmt: skip
    reply = http.post("/v1/feedback", json={"events": events}).json()
    assert reply["accepted"] == 3 and [r["id"] for r in reply["results"]] == [e["id"] for e in events]
    assert http.post("/v1/feedback", json=events[0]).json() == {"id": "jane-thumb", "status": "duplicate"}

    found = http.get("/v1/interactions/jane-doe-1").json()
    assert found["id"].startswith("ref-") and len(found["feedback"]) == 2
    assert http.get(f"/v1/interactions/{found['id']}").json()["id"] == found["id"]  # the stored id works too
    listed = http.get("/v1/feedback", params={"interaction_id": "jane-doe-2"}).json()["data"]
    [pref] = listed
    assert (
        pref["value"]["chosen_interaction"] == pref["interaction_id"]
    )  # references keyed alike, so they join

    tenant = store.for_tenant(store.tenant_by_name("r"))
    stored = [*tenant.interactions(), *tenant.feedback()]
    assert stored and not any("jane" in str(row) for row in stored)


def test_an_unknown_interaction_an_event_points_at_is_named_in_the_error_by_the_id_sent(
    served: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    http, _, _ = served
    monkeypatch.setattr(pending, "MAX_PENDING", 0)  # no room to wait for them: refused, naming them
    assert http.post("/v1/interactions", json=_interaction("jane-doe-3")).status_code == 201
    events = [
        {"id": "jane-pref-2", "interaction_id": "jane-doe-3", "kind": "preference",
         "value": {"chosen_interaction": "jane-doe-3", "rejected_interaction": "jane-doe-9"}},
        {"id": "jane-regen-2", "interaction_id": "jane-doe-3", "kind": "regenerated",
         "value": {"replaced_by": "jane-doe-8"}},
    ]  # fmt: skip
    errors = [r["error"] for r in http.post("/v1/feedback", json={"events": events}).json()["results"]]
    assert "'jane-doe-9' not found" in errors[0] and "'jane-doe-8' not found" in errors[1], errors
    assert not any("ref-" in e for e in errors)


def test_a_tenant_without_redaction_keeps_its_ids_as_sent(served: tuple) -> None:
    _, http, _ = served
    assert http.post("/v1/interactions", json=_interaction("jane-doe-1")).json()["id"] == "jane-doe-1"
    assert http.get("/v1/interactions/jane-doe-1").json()["id"] == "jane-doe-1"


def test_an_interaction_logged_before_ids_were_keyed_is_still_found_by_its_id(served: tuple) -> None:
    http, _, store = served
    tenant = store.for_tenant(store.tenant_by_name("r"))
    row = {"id": "legacy-7", "messages": [{"role": "user", "content": "q"}], "response": "a"}
    assert tenant.log_interaction({**row, "choices": ["a"]}, "0" * 64).status == "accepted"
    assert http.get("/v1/interactions/legacy-7").json()["id"] == "legacy-7"
    assert http.get("/v1/interactions/legacy-8").status_code == 404


def test_a_preference_or_regeneration_naming_one_interaction_by_both_its_ids_is_refused(
    served: tuple,
) -> None:
    http, _, _ = served
    assert http.post("/v1/interactions", json=_interaction("jane-doe-5")).status_code == 201
    stored = http.get("/v1/interactions/jane-doe-5").json()["id"]
    pair = {"chosen_interaction": "jane-doe-5", "rejected_interaction": stored}
    preference = {"id": "jane-self-pref", "interaction_id": "jane-doe-5", "kind": "preference", "value": pair}
    refused = http.post("/v1/feedback", json=preference)
    assert refused.status_code == 400 and "must differ" in refused.json()["error"]["message"]
    for iid, replaced_by in (("jane-doe-5", stored), (stored, "jane-doe-5")):
        regenerated = {
            "id": f"jane-self-regen-{len(iid)}",
            "interaction_id": iid,
            "kind": "regenerated",
            "value": {"replaced_by": replaced_by},
        }
        refused = http.post("/v1/feedback", json=regenerated)
        assert refused.status_code == 400 and "value.replaced_by" in refused.json()["error"]["message"]
    assert http.get("/v1/feedback", params={"interaction_id": "jane-doe-5"}).json()["data"] == []
