"""The stored idempotency digest is keyed: a redacted phone number cannot be brute-forced back from it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store, payload_hash

PHONE = "+1 415-555-0132"


def _payload(phone: str) -> dict:
    return {
        "id": "int-phone",
        "user": None,
        "session": None,
        "messages": [{"role": "user", "content": f"Please call me back on {phone} today."}],
        "response": "We will call you.",
        "choices": None,
        "model": None,
        "metadata": None,
    }


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, bytes]:
    """(the stored digest, the stored message, the server secret) after one interaction over HTTP."""
    settings = Settings(home=tmp_path_factory.mktemp("digest"), backend="none")
    store = Store(settings.database_url)
    _, key = store.create_tenant("acme")
    store.close()
    with live_server(settings) as url, httpx.Client(base_url=url) as http:
        auth = {"Authorization": f"Bearer {key}"}
        assert http.post("/v1/interactions", json=_payload(PHONE), headers=auth).status_code == 201
        assert (
            http.post("/v1/interactions", json=_payload(PHONE), headers=auth).json()["status"] == "duplicate"
        )
        other = http.post("/v1/interactions", json=_payload("+1 415-555-0133"), headers=auth)
        assert other.status_code == 409
    with sqlite3.connect(Path(settings.home) / "tuneloop.db") as db:
        digest, messages = db.execute("SELECT payload_hash, messages FROM interactions").fetchone()
    return digest, messages, settings.hash_key()


def test_brute_force_of_a_redacted_phone_number_fails(stored: tuple[str, str, bytes]) -> None:
    digest, messages, _ = stored
    assert PHONE not in messages and "<PHONE_NUMBER>" in messages
    # Every number of the exchange, the true one among them: none hashes (unkeyed) to what is stored.
    candidates = [f"+1 415-555-{n:04d}" for n in range(10_000)]
    assert PHONE in candidates
    assert all(payload_hash(_payload(phone)) != digest for phone in candidates)


def test_the_digest_depends_on_the_server_secret(stored: tuple[str, str, bytes]) -> None:
    digest, _, secret = stored
    assert Pseudonyms(secret).digest(_payload(PHONE)) == digest
    assert Pseudonyms(secret + b"x").digest(_payload(PHONE)) != digest
