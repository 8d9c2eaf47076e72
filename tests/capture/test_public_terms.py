"""A brand the name recogniser reads as a person is kept once the app's system prompts show it is public."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.capture.events import InteractionIn
from tuneloop.capture.ingest import Capture
from tuneloop.capture.public_terms import PublicTerms
from tuneloop.capture.redact import Redactor
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store, TenantStore

BRAND_PROMPT = "You are the support assistant of Finly, a payments app. Answer the customer's question."
MIN_USERS = 3


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    r = Redactor(hash_key=b"test-key")
    r.warm_up()
    return r


@pytest.fixture
def tenants(tmp_path: Path) -> tuple[TenantStore, TenantStore]:
    store = Store(f"sqlite:///{tmp_path / 'tuneloop.db'}")
    a, _ = store.create_tenant("acme")
    b, _ = store.create_tenant("globex")
    return store.for_tenant(a), store.for_tenant(b)


def _row(capture: Capture, tenant: TenantStore, item: InteractionIn) -> tuple[dict, str]:
    """The row of an interaction an operator's key sent (the gateway, a server-side app)."""
    return capture.interaction_row(tenant, item, teaches=True)


def _item(user: str, system: str, question: str, answer: str) -> InteractionIn:
    return InteractionIn(
        user=user,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        response=answer,
    )


def _capture(redactor: Redactor) -> Capture:
    return Capture(redactor, Pseudonyms(b"server-secret"), PublicTerms(MIN_USERS))


def test_the_apps_brand_is_kept_once_enough_users_saw_it_in_the_system_prompt(
    redactor: Redactor, tenants: tuple[TenantStore, TenantStore]
) -> None:
    capture = _capture(redactor)
    acme, _ = tenants
    answer = "Refunds reach your Finly balance within 5-10 business days."
    rows = [
        _row(capture, acme, _item(f"user-{n}", BRAND_PROMPT, "Where is my refund?", answer))[0]
        for n in range(MIN_USERS + 1)
    ]
    assert "<PERSON>" in rows[0]["response"] and "<PERSON>" in rows[0]["messages"][0]["content"]
    assert rows[-1]["response"] == answer
    assert rows[-1]["messages"][0]["content"] == BRAND_PROMPT


def test_a_name_in_per_user_system_prompts_stays_redacted(
    redactor: Redactor, tenants: tuple[TenantStore, TenantStore]
) -> None:
    capture = _capture(redactor)
    acme, _ = tenants
    names = ["Johanna Whitfield", "Olusegun Obasanjo", "Rick Sanchez", "Sally Ride", "Mike Jones"]
    for n, name in enumerate(names):
        row, _ = _row(
            capture,
            acme,
            _item(f"user-{n}", f"The customer is {name}.", "Hi", f"Hello {name}, how can I help?"),
        )
        assert name not in str(row)


def test_one_user_repeating_a_name_does_not_make_it_public(
    redactor: Redactor, tenants: tuple[TenantStore, TenantStore]
) -> None:
    capture = _capture(redactor)
    acme, _ = tenants
    for _ in range(MIN_USERS * 3):
        row, _ = _row(
            capture, acme, _item("user-1", "You help Johanna Whitfield.", "Hi", "Hi Johanna Whitfield!")
        )
    assert "Johanna Whitfield" not in str(row)


def test_public_terms_are_per_tenant_and_never_cover_structured_pii(
    redactor: Redactor, tenants: tuple[TenantStore, TenantStore]
) -> None:
    capture = _capture(redactor)
    acme, globex = tenants
    for n in range(MIN_USERS):
        _row(capture, acme, _item(f"user-{n}", BRAND_PROMPT, "Hi", "Hello"))
    assert "Finly" in capture.public_terms.public(acme.tenant_id)
    row, _ = _row(capture, globex, _item("user-9", BRAND_PROMPT, "Hi", "Hello"))
    assert "Finly" not in row["messages"][0]["content"]
    row, _ = _row(
        capture, acme, _item("user-9", BRAND_PROMPT, "Hi", "Write to finly.help@example.com about Finly.")
    )
    assert row["response"] == "Write to <EMAIL_ADDRESS> about Finly."


def test_zero_users_keeps_redacting_every_name(
    redactor: Redactor, tenants: tuple[TenantStore, TenantStore]
) -> None:
    capture = Capture(redactor, Pseudonyms(b"server-secret"), PublicTerms(0))
    acme, _ = tenants
    for n in range(MIN_USERS * 2):
        row, _ = _row(capture, acme, _item(f"user-{n}", BRAND_PROMPT, "Hi", "Welcome to Finly."))
    assert "Finly" not in str(row)


def test_system_prompts_an_ingest_key_sent_never_make_a_name_public(
    redactor: Redactor, tenants: tuple[TenantStore, TenantStore]
) -> None:
    """An ingest key may ship inside a browser or mobile app: anyone could name people in its prompts."""
    capture = _capture(redactor)
    acme, _ = tenants
    for n in range(MIN_USERS * 2):
        row, _ = capture.interaction_row(acme, _item(f"user-{n}", BRAND_PROMPT, "Hi", "Welcome to Finly."))
    assert "Finly" not in str(row) and not capture.public_terms.public(acme.tenant_id)


def test_a_few_accounts_named_after_someone_do_not_unredact_them_across_a_tenant_of_many_users(
    redactor: Redactor, tenants: tuple[TenantStore, TenantStore]
) -> None:
    """Where an app puts a user's display name in its system prompt, `min_users` accounts an attacker named
    after someone were enough to stop that person's name being redacted for every user of the tenant."""
    capture = _capture(redactor)
    acme, _ = tenants
    for n in range(2 * MIN_USERS):
        _row(capture, acme, _item(f"user-{n}", "You are a helpful assistant.", "Hi", "Hello"))
    for n in range(MIN_USERS):
        _row(capture, acme, _item(f"attacker-{n}", "You help Hannah Whitfield.", "Hi", "Hello"))

    row, _ = _row(capture, acme, _item("victim", "You help me.", "I am Hannah Whitfield.", "Hello"))

    assert "Hannah Whitfield" not in str(row) and not capture.public_terms.public(acme.tenant_id)


def test_a_name_made_of_a_public_terms_words_is_kept(redactor: Redactor) -> None:
    """The system prompt's "Wayfare Miles" is public; the user who asks whether Wayfare pays names the
    brand, not a person. A person whose name merely shares a word with it stays redacted."""
    texts = ["Will Wayfare pay me for the delay?", "Please ask Miles Davis about it."]
    asked, person = redactor.redact_texts(texts, "redact", keep=frozenset({"Wayfare Miles"}))
    assert asked == texts[0]
    assert "Davis" not in person


def test_a_brand_the_recogniser_reads_as_a_person_only_in_questions_is_kept_once_the_prompts_show_it(
    redactor: Redactor, tenants: tuple[TenantStore, TenantStore]
) -> None:
    """An HR assistant's "Lumen" was no name in its system prompt, so it never became public; in "Will Lumen
    pay for my gym membership?" it was, and the find was redacted there and, by propagation, in the prompt
    (Webster's list now knows "lumen"; a made-up brand stands in)."""
    capture = _capture(redactor)
    acme, _ = tenants
    system = "You are Lumora Corp's HR benefits assistant. Answer employees' questions about benefits."
    question = "Will Lumora pay for my gym membership?"
    first, _ = _row(capture, acme, _item("user-0", system, question, "Yes, up to $50 a month."))
    for n in range(1, MIN_USERS + 1):
        _row(capture, acme, _item(f"user-{n}", system, "How many vacation days do I get?", "Twenty."))
    later, _ = _row(capture, acme, _item("user-9", system, question, "Yes, up to $50 a month."))
    assert (
        "<PERSON>" in first["messages"][1]["content"]
    )  # the recogniser's mistake, before the prompts showed it
    assert [m["content"] for m in later["messages"]] == [system, question]


def test_the_tenants_own_name_is_kept_from_its_first_request(redactor: Redactor, tmp_path: Path) -> None:
    """A new tenant's first answers stored `<PERSON>` for its brand until enough users had sent prompts."""
    store = Store(f"sqlite:///{tmp_path / 'own.db'}")
    finly = store.for_tenant(store.create_tenant("finly")[0])
    answer = "Refunds reach your Finly balance within 5-10 business days, Maria Lopez."
    row, _ = _row(_capture(redactor), finly, _item("user-0", BRAND_PROMPT, "Where is my refund?", answer))
    assert row["response"] == "Refunds reach your Finly balance within 5-10 business days, <PERSON>."
    assert row["messages"][0]["content"] == BRAND_PROMPT
    strict = Capture(redactor, Pseudonyms(b"server-secret"), PublicTerms(0))  # counting off: no name is kept
    assert "Finly" not in str(_row(strict, finly, _item("user-1", BRAND_PROMPT, "Hi", answer))[0])
