"""After real traffic with PII in every field, no raw value is anywhere under HOME, and HOME is private."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.cli import main
from tuneloop.signals.snapshots import list_snapshots
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store

USER = "jane.doe@example.com"
SESSION = "session-of-jane-doe"
RATERS = ("johanna.whitfield@example.org", "rick.sanchez@example.net")
KEY_EMAIL = "mike.jones@example.com"
CARD = "4111 1111 1111 1111"
PHONE = "+1 415-555-0132"
IBAN = "DE89 3704 0044 0532 0130 00"
MODEL_EMAIL = "sally.ride@example.com"
ID_PII = "jane.doe-4155550132"  # apps do build ids from names and numbers
# Every raw value the traffic sends; none may appear in any file under HOME.
RAW = (USER, SESSION, *RATERS, KEY_EMAIL, CARD, CARD.replace(" ", ""), PHONE, IBAN, MODEL_EMAIL, ID_PII)


def _interaction(n: int) -> dict:
    return {
        "id": f"{ID_PII}-{n}",
        "user": USER,
        "session": SESSION,
        "model": f"ft:{MODEL_EMAIL}",
        "messages": [
            {"role": "user", "content": f"My email is {USER}, IBAN {IBAN}; question {n}: reset my card?"}
        ],
        "response": f"Call {PHONE} and we will block {CARD}.",
        "choices": [f"Call {PHONE} and we will block {CARD}.", "Open Settings, then Cards."],
        "metadata": {
            KEY_EMAIL: "vip",
            "by card": {CARD: f"phone {PHONE}"},
            "channel": "web",
            "card_on_file": [int(CARD.replace(" ", ""))],  # a JSON number
        },
    }


def _feedback(n: int) -> list[dict]:
    # Two raters who disagree on every answer, so both get a weight in the snapshot's rater report.
    votes = [
        {
            "id": f"{ID_PII}-fb-{n}-{i}",
            "interaction_id": f"{ID_PII}-{n}",
            "kind": "thumbs",
            "value": 1 if i == 0 else -1,
            "rater": rater,
            "source": "labeler",
            "metadata": {f"reviewer {rater}": PHONE},
        }
        for i, rater in enumerate(RATERS)
    ]
    preference = {"id": f"pref-{n}", "interaction_id": f"{ID_PII}-{n}", "kind": "preference"}
    comment = {
        "id": f"note-{n}",
        "interaction_id": f"{ID_PII}-{n}",
        "kind": "comment",
        "value": f"mail {USER}",
    }
    return [*votes, {**preference, "value": {"chosen": 1, "rejected": 0}}, comment]


@pytest.fixture(scope="module")
def home_after_traffic(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Path]:
    """HOME after a traffic run over real HTTP (capture API and gateway) for a `redact` and a `hash` tenant,
    snapshots and exports, with every log record of the run written to HOME/server.log."""
    home = tmp_path_factory.mktemp("privacy") / "home"
    settings = Settings(home=home, model=str(tiny_model))
    store = Store(settings.database_url)
    keys = {mode: store.create_tenant(f"t-{mode}", redaction=mode)[1] for mode in ("redact", "hash")}
    handler = logging.FileHandler(home / "server.log")
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "sqlalchemy.engine")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)  # every record and statement, as an operator debugging might log them
    try:
        with pytest.MonkeyPatch.context() as env, live_server(settings) as url:
            env.setenv("TUNELOOP_HOME", str(home))
            (home / "exports").mkdir()
            for mode, key in keys.items():
                _traffic(url, key)
                tenant = f"t-{mode}"
                assert main(["snapshot", "create", "--tenant", tenant]) == 0
                for fmt in ("jsonl", "parquet"):
                    out = home / "exports" / f"{tenant}.{fmt}"
                    assert main(["export", "--tenant", tenant, "--format", fmt, "--out", str(out)]) == 0
            for tenant in store.tenants():
                for snap in list_snapshots(store.for_tenant(tenant)):
                    out = str(home / "exports" / f"{tenant.name}-trl")
                    assert main(["snapshot", "export", snap.hash, "--tenant", tenant.name, "--out", out]) == 0
            assert main(["audit", "verify"]) == 0
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()
    yield home  # the store stays open, so its WAL file is there to be read
    store.close()


def _traffic(url: str, key: str) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        for n in range(4):
            assert http.post("/v1/interactions", json=_interaction(n)).status_code == 201
            # A retry of the same payload is still recognised through the keyed digest.
            assert http.post("/v1/interactions", json=_interaction(n)).status_code == 200
            reply = http.post("/v1/feedback", json={"events": _feedback(n)}).json()
            assert reply["accepted"] == 4, reply
        bad = {"id": "x", "interaction_id": f"{ID_PII}-0", "kind": "thumbs", "value": 7, "rater": USER}
        assert http.post("/v1/feedback", json=bad).status_code == 400
        ask = {"role": "user", "content": f"I am {USER}, card {CARD}"}
        chat = {"model": "tuneloop", "user": USER, "messages": [ask], "max_tokens": 4}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200


def _readable_text(path: Path) -> bytes:
    """The file's bytes, plus its decoded rows for Parquet (whose pages may be compressed)."""
    data = path.read_bytes()
    if path.suffix == ".parquet":
        data += json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False).encode()
    return data


def test_no_raw_identifier_or_pii_is_in_any_file_under_home(home_after_traffic: Path) -> None:
    files = [p for p in home_after_traffic.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"tuneloop.db", "tuneloop.db-wal", "server.log", "manifest.json", "pairs.parquet"} <= names
    assert {"t-redact.jsonl", "t-hash.parquet", "preference_train.jsonl"} <= names
    assert "SELECT" in (home_after_traffic / "server.log").read_text()  # the log did record the run
    leaks = [
        (str(path.relative_to(home_after_traffic)), raw)
        for path in files
        for raw in RAW
        if raw.encode() in _readable_text(path)
    ]
    assert leaks == []


def test_stored_identifiers_are_keyed_hashes_that_join_within_a_tenant_only(home_after_traffic: Path) -> None:
    settings = Settings(home=home_after_traffic)
    store = Store(settings.database_url)
    pseudonyms = Pseudonyms(settings.hash_key())
    users = set()
    for mode in ("redact", "hash"):
        tenant = store.for_tenant(store.tenant_by_name(f"t-{mode}"))
        rows = tenant.interactions()
        user = pseudonyms.identifier(USER, tenant.tenant_id)
        assert {r["user"] for r in rows} == {user}  # the gateway's row too
        assert {r["session"] for r in rows if not r["id"].startswith("chatcmpl-")} == {
            pseudonyms.identifier(SESSION, tenant.tenant_id)
        }
        raters = {e["rater"] for e in tenant.feedback()} - {None}
        assert raters == {pseudonyms.identifier(r, tenant.tenant_id) for r in RATERS}
        assert "channel" in rows[0]["metadata"]  # keys that are not personal are kept as they are
        users.add(user)
    # The same person in two tenants' apps: their exports cannot be joined on the pseudonym.
    assert len(users) == 2
    store.close()


def test_everything_under_home_is_private(home_after_traffic: Path) -> None:
    loose = [
        (str(path), oct(stat.S_IMODE(path.stat().st_mode)))
        for path in [home_after_traffic, *home_after_traffic.rglob("*")]
        if stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    assert loose == []
