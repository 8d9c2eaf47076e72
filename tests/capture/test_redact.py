"""PII redaction with the real Presidio analyzer and spaCy's small English model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tuneloop.capture.events import InteractionIn
from tuneloop.capture.ingest import Capture
from tuneloop.capture.redact import MAX_TEXT_CHARS, Redactor
from tuneloop.errors import PayloadTooLarge
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    r = Redactor(hash_key=b"test-key")
    r.warm_up()
    return r


PII_CASES = [
    ("Please write to john.doe@example.com today", "john.doe@example.com", "EMAIL_ADDRESS"),
    ("Call me at (212) 555-0187 after lunch", "555-0187", "PHONE_NUMBER"),
    ("You can reach me on +44 20 7946 0958 tomorrow", "7946 0958", "PHONE_NUMBER"),
    ("My German office is +49 30 901820.", "901820", "PHONE_NUMBER"),
    ("My card is 4111 1111 1111 1111, expires soon", "4111 1111 1111 1111", "CREDIT_CARD"),
    ("Charge 5500-0000-0000-0004 instead", "5500-0000-0000-0004", "CREDIT_CARD"),
    ("Refund to DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00", "IBAN_CODE"),
    ("my iban: ES91 2100 0418 4502 0005 1332 thanks", "ES91 2100 0418 4502 0005 1332", "IBAN_CODE"),
    ("IBAN GB29NWBK60161331926819.", "GB29NWBK60161331926819", "IBAN_CODE"),
    ("My name is John Smith and I need help", "John Smith", "PERSON"),
    ("this is Olusegun Obasanjo speaking", "Olusegun Obasanjo", "PERSON"),
    ("Our server 192.168.1.20 is down", "192.168.1.20", "IP_ADDRESS"),
    ("My SSN is 536-90-4399", "536-90-4399", "US_SSN"),
]


@pytest.mark.parametrize(("text", "secret", "entity"), PII_CASES, ids=[c[2] + ":" + c[1] for c in PII_CASES])
def test_pii_is_replaced_by_a_typed_placeholder(
    redactor: Redactor, text: str, secret: str, entity: str
) -> None:
    [out] = redactor.redact_texts([text], "redact")
    assert f"<{entity}>" in out
    assert secret not in out
    # Nothing of the value survives, not even a fragment of its digits or name.
    for part in re.split(r"[\s\-]+", secret):
        if len(part) >= 4:
            assert part not in out


def test_text_around_pii_is_kept(redactor: Redactor) -> None:
    [out] = redactor.redact_texts(["Please write to john.doe@example.com today"], "redact")
    assert out == "Please write to <EMAIL_ADDRESS> today"


# Compatibility forms (fullwidth, mathematical letters) read as the ASCII the recognisers look for.
LOOK_ALIKES = [
    ("mail jane＠example．com now", "mail <EMAIL_ADDRESS> now"),
    ("mail 𝐣𝐚𝐧𝐞@𝐞𝐱𝐚𝐦𝐩𝐥𝐞.𝐜𝐨𝐦 now", "mail <EMAIL_ADDRESS> now"),
    ("card ４１１１ １１１１ １１１１ １１１１ thanks", "card <CREDIT_CARD> thanks"),
    ("our host １９２.１６８.０.１ is down", "our host <IP_ADDRESS> is down"),
    # Invisible format characters and other dashes inside a value hide it from every recogniser.
    ("card 4111\u200b1111\u200b1111\u200b1111 thanks", "card <CREDIT_CARD> thanks"),
    ("mail jdoe1985\u200b@gmail.com now", "mail <EMAIL_ADDRESS> now"),
    ("mail jane\u00addoe@exam\u2060ple.com now", "mail <EMAIL_ADDRESS> now"),
    ("card 4111\u20111111\u20111111\u20111111 thanks", "card <CREDIT_CARD> thanks"),
]


@pytest.mark.parametrize(("text", "expected"), LOOK_ALIKES, ids=[ascii(c[0]) for c in LOOK_ALIKES])
def test_look_alike_characters_do_not_hide_pii(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact_texts([text], "redact") == [expected]


def test_sixteen_digits_failing_luhn_are_not_a_card(redactor: Redactor) -> None:
    # Not Luhn-valid, not a valid phone number anywhere: it comes back unchanged.
    [out] = redactor.redact_texts(["reference 4111111111111112"], "redact")
    assert "<CREDIT_CARD>" not in out
    assert out == "reference 4111111111111112"


def test_context_words_decide_whether_a_bare_number_is_an_ssn(redactor: Redactor) -> None:
    assert redactor.redact_texts(["my ssn is 536904399"], "redact") == ["my ssn is <US_SSN>"]
    assert redactor.redact_texts(["Order 536904399 shipped"], "redact") == ["Order 536904399 shipped"]


def test_a_value_found_once_is_removed_from_every_text_of_the_batch(redactor: Redactor) -> None:
    texts = [
        "I am Johanna Whitfield, hi",
        "Thanks Johanna Whitfield!",
        "my ssn is 536904399",
        "Order 536904399",
    ]
    assert redactor.redact_texts(texts, "redact") == [
        "I am <PERSON>, hi",
        "Thanks <PERSON>!",
        "my ssn is <US_SSN>",
        "Order <US_SSN>",
    ]


def test_each_word_of_a_name_is_removed_from_the_other_texts_of_its_record(redactor: Redactor) -> None:
    """A model answers "I'm Priya Raman" with "Priya, …" and "@Priya.Raman", which no recogniser reads."""
    texts = [
        "Hi, I'm Priya Raman, my laptop won't boot",
        "Priya, try this. Priya's apps are fine; ask @Priya.Raman, not Priyanka or the Dr.",
    ]
    assert redactor.redact_texts(texts, "redact") == [
        "Hi, I'm <PERSON>, my laptop won't boot",
        "<PERSON>, try this. <PERSON>'s apps are fine; ask @<PERSON>.<PERSON>, not Priyanka or the Dr.",
    ]


def test_the_names_an_address_spells_are_removed_from_the_other_texts_of_its_record(
    redactor: Redactor,
) -> None:
    """Given "lukas.moreau88@example.com", the model answered "Lukas: welcome"; "support@" names no one."""
    texts = [
        "My email is lukas.moreau88@example.com and support@parcelo.com never replied.",
        "Lukas: welcome! Support will write to Moreau today.",
    ]
    assert (
        redactor.redact_texts(texts, "redact")[1]
        == "<PERSON>: welcome! Support will write to <PERSON> today."
    )


ORDINARY = [
    "How do I reset my password?",
    "The export to CSV cuts off after row 1200.",
    "Version 2.3.1 crashes on startup",
    "Order 123456789 has not arrived",
    "It costs $1,250.00 per month",
    "I am having trouble logging in since Monday.",
    "Deploy to prod at 10:30 on 2024-05-01",
    "订单号12345678已发货",  # order 12345678 has shipped
    "版本v2.3发布了",
    "card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 2 is no card",
    "Deploy at 10:30:45, build 2024-05-01",
    "my passport expires in 2027",
    "Licensed under the Apache License 2.0 since 2019",
    "order id 12345678 is late",
    "print(np.zeros(16)) gives 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0",
    "our MIT license since build 20240115 is fine",
    "the identity provider returned error 4010123",
    "national holiday on 2024-12-25 closes support",
    "请打电话查询订单号12345678",  # call to ask about order 12345678
    "電話で注文番号1234567890について問い合わせ",  # asking by phone about order 1234567890
    "order 2345 6789 0123 shipped",  # twelve digits failing Aadhaar's check digit
    "โทรทัศน์รุ่น 55123456789 เสียครับ",  # the television model 55123456789 is broken
]


@pytest.mark.parametrize("text", ORDINARY)
def test_text_without_pii_comes_back_unchanged(redactor: Redactor, text: str) -> None:
    assert redactor.redact_texts([text], "redact") == [text]


def test_short_and_symbol_only_strings_pass_through(redactor: Redactor) -> None:
    texts = ["", "ok", "👍", "?!", "  "]
    assert redactor.redact_texts(texts, "redact") == texts


def test_hash_mode_gives_equal_placeholders_for_equal_values(redactor: Redactor) -> None:
    a, b, c = redactor.redact_texts(
        [
            "write to john.doe@example.com",
            "or John.Doe@Example.com later",
            "or jane.roe@example.com instead",
        ],
        "hash",
    )
    [pa] = re.findall(r"<EMAIL_ADDRESS:[0-9a-f]+>", a)
    [pb] = re.findall(r"<EMAIL_ADDRESS:[0-9a-f]+>", b)
    [pc] = re.findall(r"<EMAIL_ADDRESS:[0-9a-f]+>", c)
    assert pa == pb
    assert pa != pc
    assert "example.com" not in a + b + c


def test_hash_mode_joins_differently_formatted_cards(redactor: Redactor) -> None:
    spaced, dashed = redactor.redact_texts(["card 4111 1111 1111 1111", "card 4111-1111-1111-1111"], "hash")
    assert spaced == dashed
    assert re.fullmatch(r"card <CREDIT_CARD:[0-9a-f]{12}>", spaced)


def test_hash_depends_on_the_secret_key(redactor: Redactor) -> None:
    other = Redactor(hash_key=b"another-key")
    assert redactor.placeholder("EMAIL_ADDRESS", "a@b.com") != other.placeholder("EMAIL_ADDRESS", "a@b.com")
    text = ["mail a@example.com"]
    assert redactor.redact_texts(text, "hash") != other.redact_texts(text, "hash")


def test_off_returns_input_unchanged(redactor: Redactor) -> None:
    texts = ["My name is John Smith", "card 4111 1111 1111 1111"]
    assert redactor.redact_texts(texts, "off") == texts
    values = [{"email": "a@example.com"}, 3]
    assert redactor.redact_json(values, "off") == values


def test_redact_json_walks_nested_structures_and_leaves_keys_and_non_strings(redactor: Redactor) -> None:
    values = [
        ["Hi, I'm Priya Patel", "reach me at priya@example.com"],
        {
            "john.doe@example.com": {"note": "call +44 20 7946 0958", "tries": 3, "ok": True},
            "tags": ("vip", None, 2.5),
        },
        42,
        None,
    ]
    out = redactor.redact_json(values, "redact")
    assert out[0] == ["Hi, I'm <PERSON>", "reach me at <EMAIL_ADDRESS>"]
    assert list(out[1]) == ["john.doe@example.com", "tags"]  # keys untouched, in order
    assert out[1]["john.doe@example.com"] == {"note": "call <PHONE_NUMBER>", "tries": 3, "ok": True}
    assert out[1]["tags"] == ("vip", None, 2.5)
    assert out[2:] == [42, None]
    assert values[0][0] == "Hi, I'm Priya Patel"  # the input is not modified


def test_a_value_is_read_after_the_key_it_is_under(redactor: Redactor) -> None:
    """The key is the context a bare number or date needs, as the same words before it in a sentence."""
    values = [
        {
            "ssn": "078051120",
            "dateOfBirth": "1984-03-12",
            "passport": "X1234567",
            "customer_name": "jane",
            "phones": ["5550134"],
            "name": "tests_passed",
            "plan": "gold",
        }
    ]
    [out] = redactor.redact_json(values, "redact")
    assert out == {
        "ssn": "<US_SSN>",
        "dateOfBirth": "<DATE_OF_BIRTH>",
        "passport": "<ID_NUMBER>",
        "customer_name": "<PERSON>",
        "phones": ["<PHONE_NUMBER>"],
        "name": "tests_passed",
        "plan": "gold",
    }


def test_json_text_is_read_as_its_keys_and_strings(redactor: Redactor) -> None:
    arguments = json.dumps({"email": "jane\\u0040example.com", "ssn": "078051120"}, separators=(",", ":"))
    call = json.dumps({"tool_calls": [{"function": {"name": "lookup", "arguments": arguments}}]})
    pasted = '{"name":"Jane Doe","ssn":"078051120","jane.doe@example.com":1}'
    clean = '{"ok":true,  "items":[1,2,"three"]}'
    out_call, out_pasted, out_clean = redactor.redact_texts([call, pasted, clean], "redact")
    assert json.loads(json.loads(out_call)["tool_calls"][0]["function"]["arguments"]) == {
        "email": "<EMAIL_ADDRESS>",
        "ssn": "<US_SSN>",
    }
    assert json.loads(out_pasted) == {"name": "<PERSON>", "ssn": "<US_SSN>", "<EMAIL_ADDRESS>": 1}
    assert out_clean == clean  # nothing found: kept byte for byte


def test_json_text_nested_too_deep_is_read_as_text(redactor: Redactor) -> None:
    deep = "[" * 5000 + '"mail jane@example.com"' + "]" * 5000
    [out] = redactor.redact_texts([deep], "redact")
    assert "jane@example.com" not in out and out.startswith("[" * 5000)


def test_reading_new_words_does_not_grow_the_vocabulary(redactor: Redactor) -> None:
    from tuneloop.capture.redact import _engines

    redactor.redact_texts(["warm the pipeline up once"], "redact")
    strings = _engines().nlp_engine.nlp["en"].vocab.strings
    before = len(strings)
    words = [f"zq{i}x{i * 7919 % 10007}" for i in range(400)]
    redactor.redact_texts([" ".join(words[i : i + 20]) for i in range(0, 400, 20)], "redact")
    assert len(strings) == before


def test_a_long_run_without_whitespace_reaches_the_model_in_short_words_and_keeps_its_finds(
    redactor: Redactor,
) -> None:
    from tuneloop.capture.redact import MAX_WORD_CHARS, _short_words

    run = "+" * 5000
    short = _short_words(f"see {run} end")
    assert len(short) == len(run) + 8 and max(map(len, short.split())) < MAX_WORD_CHARS
    url = "https://shop.example.org/track?" + "step=1&" * 20 + "mail=jane.doe@example.com&ref=" + "9" * 6
    [out] = redactor.redact_texts([f"open {url} now"], "redact")
    assert "jane" not in out and "<EMAIL_ADDRESS>" in out


def test_repeated_texts_in_a_batch_get_the_same_result(redactor: Redactor) -> None:
    text = "Thanks Sarah Connor, my email is sarah@example.com"
    first, second = redactor.redact_texts([text, text], "redact")
    assert first == second == redactor.redact_texts([text], "redact")[0]
    assert "Sarah" not in first


def test_concurrent_calls_each_get_their_own_results(redactor: Redactor) -> None:
    batches = [[f"ticket {i}: mail user{i}@example.com", f"How do I export report {i}?"] for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(lambda b: redactor.redact_texts(b, "redact"), batches))
    for i, out in enumerate(outs):
        assert out == [f"ticket {i}: mail <EMAIL_ADDRESS>", f"How do I export report {i}?"]


def test_unknown_mode_is_rejected(redactor: Redactor) -> None:
    with pytest.raises(ValueError, match="redact, hash, off"):
        redactor.redact_texts(["hello there"], "mask")  # type: ignore[arg-type]


def test_text_beyond_spacy_limit_is_refused(redactor: Redactor) -> None:
    with pytest.raises(PayloadTooLarge, match="too long to redact"):
        redactor.redact_texts(["word " * (MAX_TEXT_CHARS // 5 + 1)], "redact")


def test_creating_a_redactor_loads_no_models() -> None:
    code = (
        "import sys; from tuneloop.capture.redact import Redactor; Redactor(); "
        "print(sorted(m for m in ('spacy', 'presidio_analyzer', 'presidio_anonymizer') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_a_card_sent_as_a_json_number_is_redacted_and_other_numbers_stay_numbers() -> None:
    capture = Capture(Redactor(hash_key=b"s" * 32), Pseudonyms(b"s" * 32))
    store = Store("sqlite://")
    tenant = store.for_tenant(store.create_tenant("a")[0])
    metadata = {
        "card": 4111111111111111,
        "as_float": 4.111111111111111e15,
        "phone_with_a_fraction": 4155550134.5,
        "ts": 1733300000000,
        "n": 3,
        "amount": 1234567.25,
    }
    item = InteractionIn(messages=[{"role": "user", "content": "hi"}], response="hello", metadata=metadata)

    row, _ = capture.interaction_row(tenant, item)

    stored = row["metadata"]
    assert stored["card"] == stored["as_float"] == "<CREDIT_CARD>"
    assert stored["phone_with_a_fraction"] == "<PHONE_NUMBER>"
    assert (stored["ts"], stored["n"], stored["amount"]) == (1733300000000, 3, 1234567.25)


def test_hash_placeholders_join_within_a_tenant_and_not_across(redactor: Redactor) -> None:
    texts = ["mail a@example.com", "write to a@example.com"]
    alpha = redactor.redact_texts(texts, "hash", key_scope="alpha")
    beta = redactor.redact_texts(texts, "hash", key_scope="beta")
    placeholder = re.compile(r"<EMAIL_ADDRESS:[0-9a-f]{12}>")
    assert len({placeholder.search(t)[0] for t in alpha}) == 1
    assert {placeholder.search(t)[0] for t in alpha}.isdisjoint({placeholder.search(t)[0] for t in beta})
