"""What the gateway stores beside the messages (its decoding settings) is redacted like the messages."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.live import live_server
from tuneloop import Settings
from tuneloop.store.repository import Store

EMAIL = "jane.doe@example.com"
PHONE = "+1 415-555-0132"


def test_stop_sequences_are_stored_redacted(tmp_path: Path, tiny_model: Path) -> None:
    settings = Settings(home=tmp_path / "home", model=str(tiny_model))
    store = Store(settings.database_url)
    _, key = store.create_tenant("acme")
    chat = {
        "model": "tuneloop",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
        "stop": [f"mail {EMAIL}", f"call {PHONE}", "\n\n"],
    }
    auth = {"Authorization": f"Bearer {key}"}
    with live_server(settings) as url, httpx.Client(base_url=url, headers=auth) as http:
        reply = http.post("/v1/chat/completions", json=chat)
        assert reply.status_code == 200, reply.text
        stored = http.get(f"/v1/interactions/{reply.json()['id']}")
    tenant = store.for_tenant(store.tenant_by_name("acme"))
    rows = tenant.interactions()
    store.close()
    assert stored.json()["decoding"]["stop"] == ["mail <EMAIL_ADDRESS>", "call <PHONE_NUMBER>", "\n\n"]
    assert rows and not any(EMAIL in str(row) or PHONE in str(row) for row in rows)
