"""In-context examples over real HTTP: only the tenant's own, only redacted text, and what the model reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.live import live_server
from tuneloop import Settings
from tuneloop.capture.redact import Redactor
from tuneloop.learn.light_changes import BRIEF, word_limit
from tuneloop.model_files import load_tokenizer
from tuneloop.registry.composition import Decoding, ExamplePolicy, compose, with_system_prompt
from tuneloop.registry.versions import Registry
from tuneloop.serve import examples
from tuneloop.serve.examples import Example, Pool, build_pool, with_examples
from tuneloop.store.repository import Store

PROMPT = "You are the support desk."
EMAIL = "jane.doe@example.com"
ASK = [{"role": "user", "content": "How can I reset my password?"}]
SEEN = "How do I reset my password? I am Jane Doe, write to jane.doe@example.com"
EDITED = "Open Settings, then Security, then Reset."
# An answer that held PII: shown, its placeholder would teach the model to write "<EMAIL_ADDRESS>".
WITH_PII = ("How can I reset my password today?", "Ask jane.doe@example.com to reset it.")
UNRELATED = "What is the capital of France?"


def _serve_with_examples(store: Store, name: str, redaction: str, model: Path) -> tuple[str, str]:
    """A tenant whose production shows up to two examples; returns its key and production id."""
    row, key = store.create_tenant(name, redaction=redaction)
    registry = Registry(store.for_tenant(row))
    version = compose(
        registry,
        parent=None,
        base_model=str(model),
        actor="test",
        reason="setup",
        system_prompt=PROMPT,
        decoding=Decoding(temperature=0, max_tokens=2, examples=ExamplePolicy(k=2, min_similarity=0.5)),
    )
    registry.move(version.id, "gated", actor="test", reason="setup")
    registry.move(version.id, "production", actor="test", reason="setup")
    return key, version.id


def _edited_exchange(http: httpx.Client, prompt: str, edited: str) -> str:
    """A past exchange whose user rewrote the answer (an edit: the strongest example there is)."""
    messages = [{"role": "user", "content": prompt}]
    iid = http.post("/v1/interactions", json={"messages": messages, "response": "Try again."}).json()["id"]
    event = {"id": f"e-{iid}", "interaction_id": iid, "kind": "edit", "value": edited}
    assert http.post("/v1/feedback", json=event).status_code == 201
    return iid


@pytest.fixture(scope="module")
def gateway(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), model=str(tiny_model))
    store = Store(settings.database_url)
    keys = {
        name: _serve_with_examples(store, name, redaction, tiny_model)[0]
        for name, redaction in (("acme", "redact"), ("globex", "off"))
    }
    with live_server(settings) as url:
        clients = {
            name: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
            for name, key in keys.items()
        }
        own = {
            name: {
                _edited_exchange(http, SEEN, EDITED),
                _edited_exchange(http, UNRELATED, "Paris."),
            }
            for name, http in clients.items()
        }
        with_pii = {name: _edited_exchange(http, *WITH_PII) for name, http in clients.items()}
        yield {
            "http": clients,
            "own": own,
            "with_pii": with_pii,
            "settings": settings,
            "store": store,
            "model": tiny_model,
        }
    store.close()


def _ask(http: httpx.Client) -> tuple[dict, dict]:
    body = {"model": "tuneloop", "messages": ASK, "user": "someone"}
    answer = http.post("/v1/chat/completions", json=body).json()
    return answer, http.get(f"/v1/interactions/{answer['id']}").json()


@pytest.mark.parametrize("name", ["acme", "globex"])
def test_examples_are_the_tenants_own_similar_past_answers(gateway: dict, name: str) -> None:
    _, stored = _ask(gateway["http"][name])
    shown = stored["decoding"]["examples"]["shown"]
    # The similar exchange is shown and the unrelated one is not; nothing comes from the other tenant.
    assert len(shown) == 1 and set(shown) <= gateway["own"][name]


@pytest.mark.parametrize("name", ["acme", "globex"])
def test_examples_never_hold_unredacted_text(gateway: dict, name: str) -> None:
    tenant = gateway["store"].for_tenant(gateway["store"].tenant_by_name(name))
    pool = build_pool(tenant, gateway["settings"].home, Redactor())
    texts = [t for ex in pool.examples for t in (ex.prompt, ex.answer)]
    assert texts and not any(EMAIL in t or "Jane Doe" in t for t in texts)
    # A tenant that stores raw text (globex, redaction off) still shows only redacted examples.
    assert any("<EMAIL_ADDRESS>" in ex.prompt for ex in pool.examples)
    # An answer that held PII is never an example, whether stored redacted or redacted for the pool.
    assert gateway["with_pii"][name] not in {ex.interaction_id for ex in pool.examples}
    assert not any("<" in ex.answer for ex in pool.examples)


def test_answers_never_shown_take_no_place_in_a_full_pool(
    gateway: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = gateway["store"].for_tenant(gateway["store"].tenant_by_name("acme"))  # stores redacted text
    monkeypatch.setattr(examples, "MAX_POOL", 2)  # the two clean exchanges, then the newest, holding PII
    pool = build_pool(tenant, gateway["settings"].home, Redactor())
    assert {ex.interaction_id for ex in pool.examples} == gateway["own"]["acme"]


class _CountingRedactor(Redactor):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def redact_texts(self, texts: list[str], *args, **kwargs) -> list[str]:
        self.texts += texts
        return super().redact_texts(texts, *args, **kwargs)


def test_an_answer_withheld_for_its_pii_is_not_redacted_again_at_each_rebuild(gateway: dict) -> None:
    tenant = gateway["store"].for_tenant(gateway["store"].tenant_by_name("globex"))  # stores raw text
    redactor = _CountingRedactor()
    first = build_pool(tenant, gateway["settings"].home, redactor)
    assert gateway["with_pii"]["globex"] in {key[0] for key in first.withheld}
    assert WITH_PII[1] in redactor.texts
    redactor.texts.clear()
    again = build_pool(tenant, gateway["settings"].home, redactor, previous=first)
    assert again.withheld == first.withheld and WITH_PII[1] not in redactor.texts


def test_the_model_reads_the_examples_the_interaction_records(gateway: dict) -> None:
    http = gateway["http"]["acme"]
    answer, stored = _ask(http)
    [iid] = stored["decoding"]["examples"]["shown"]
    # The example as the store holds it: the redacted prompt and the user's redacted edit.
    past = http.get(f"/v1/interactions/{iid}").json()
    edit = past["feedback"][0]["value"]
    example = Example(iid, past["messages"][-1]["content"], edit, 1.0)
    messages = with_examples(with_system_prompt(ASK, PROMPT), [example])
    tokenizer = load_tokenizer(gateway["model"])
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert answer["usage"]["prompt_tokens"] == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    # What is stored is what the client sent: examples never enter training data as the user's words.
    assert stored["messages"] == ASK


def test_a_rebuilt_pool_adds_new_examples_and_reuses_what_it_had(gateway: dict) -> None:
    tenant = gateway["store"].for_tenant(gateway["store"].tenant_by_name("globex"))
    first = build_pool(tenant, gateway["settings"].home, Redactor())
    added = _edited_exchange(gateway["http"]["globex"], "Where is my invoice?", "Billing, then Invoices.")
    second = build_pool(tenant, gateway["settings"].home, Redactor(), first)
    assert [ex.interaction_id for ex in second.examples] == [
        *(ex.interaction_id for ex in first.examples),
        added,
    ]
    # Known examples keep the (redacted) text and vector they had: only the new one was redacted and embedded.
    assert all(second.known[key][1] is vector for key, (_, vector) in first.known.items())


def test_a_prompt_asked_often_shows_its_edit_and_best_rated_answer_not_its_oldest() -> None:
    prompt = "How do I reset my password?"
    examples = [
        Example("old", prompt, "Try turning it off and on.", 0.6),
        Example("best", prompt, "Settings, then Security, then Reset.", 0.9),
        Example("copy", prompt, "Settings, then Security, then Reset.", 0.8),
        Example("newer", prompt, "Ask your admin.", 0.7),
        Example("edit", prompt, "Open Settings > Security > Reset password.", 0.5, edited=True),
    ]
    pool = Pool(examples, np.ones((len(examples), 1), dtype=np.float32))
    shown = pool.nearest(np.ones(1, dtype=np.float32), ExamplePolicy(k=3, min_reward=0.5, min_similarity=0.5))
    # The same answer twice teaches nothing more: the lower-rated copy gives way to the next answer.
    assert [ex.interaction_id for ex in shown] == ["edit", "best", "newer"]


def test_a_version_asking_for_brevity_shows_no_example_longer_than_it_asks() -> None:
    prompt = "Where is my parcel?"
    long = Example("long", prompt, " ".join(["word"] * 40), 1.0)
    short = Example("short", prompt, "Track it at the link in your email.", 0.6)
    pool = Pool([long, short], np.ones((2, 1), dtype=np.float32))
    policy = ExamplePolicy(k=2, min_reward=0.5, min_similarity=0.5)
    limit = word_limit(f"{BRIEF.format(words=30)}\n\nYou are Parcelo's assistant.")
    assert limit == 30 and word_limit("You are Parcelo's assistant.") is None
    assert [ex.interaction_id for ex in pool.nearest(np.ones(1, dtype=np.float32), policy)] == [
        "long",
        "short",
    ]
    shown = pool.nearest(np.ones(1, dtype=np.float32), policy, max_words=limit)
    assert [ex.interaction_id for ex in shown] == ["short"]


def test_the_most_similar_example_is_shown_next_to_the_conversation() -> None:
    nearest = [
        Example("i1", "Reset my PIN?", "Settings, then PIN.", 1.0),
        Example("i2", "PIN?", "See Settings.", 0.8),
    ]
    messages = with_examples(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "New PIN?"}], nearest
    )
    assert [m["content"] for m in messages] == [
        "Be brief.",
        "PIN?",
        "See Settings.",
        "Reset my PIN?",
        "Settings, then PIN.",
        "New PIN?",
    ]
