"""Readable text out of what users hand us: HTML and Markdown markup dropped, malformed markup read as text,
and no input that makes the scan quadratic (it runs with the GIL held, stalling every tenant)."""

from __future__ import annotations

import time

import pytest

from tuneloop.retrieve.extract import to_text


def test_html_keeps_its_text_and_paragraphs_and_drops_scripts_styles_head_and_comments() -> None:
    page = (
        "<html><head><title>Fees</title><style>p {}</style></head><body><h1>Fees &amp; limits</h1>"
        "<p>Transfers cost 0.7%.<br/>Cards are free.</p><script>track()</script><!-- draft -->"
        "<svg/><p>Ask support.</p></body></html>"
    )
    assert to_text(page, "html") == "Fees & limits\n\nTransfers cost 0.7%.\n\nCards are free.\n\nAsk support."


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("<p>Customer record</p><![ Jane Roe", "Customer record\n\n<![ Jane Roe"),
        ("a < b and c > d", "a < b and c > d"),
        ("kept <!-- never closed", "kept"),
        ('<a href="x>link</a> after', "link after"),
    ],
)
def test_malformed_html_is_read_as_text_not_refused(raw: str, text: str) -> None:
    assert to_text(raw, "html") == text


def test_markdown_shows_escaped_punctuation_and_entities_as_the_reader_sees_them() -> None:
    raw = "Write to carol\\@example.com, card 4111\\-1111, \\*not emphasis\\* and AT&amp;T &#64; home"
    assert (
        to_text(raw, "markdown")
        == "Write to carol@example.com, card 4111-1111, *not emphasis* and AT&T @ home"
    )


def test_markdown_drops_single_emphasis_but_keeps_snake_case_and_arithmetic() -> None:
    raw = "tap **Cards**, then tap *Freeze* or _Lock_; keep snake_case_name and 2*3*4"
    assert to_text(raw, "markdown") == "tap Cards, then tap Freeze or Lock; keep snake_case_name and 2*3*4"


def test_markdown_keeps_link_and_image_text() -> None:
    raw = "# Head\nSee [the fees](https://x.test/fees) and ![a chart](c.png), <b>bold</b> **now**."
    assert to_text(raw, "markdown") == "Head\nSee the fees and a chart, bold now."


@pytest.mark.parametrize(
    ("unit", "fmt"),
    [('<a b="', "html"), ("<a", "html"), ("<!--", "html"), ("<script>", "html"), ("[", "markdown"),
     ("![", "markdown"), ("[a](", "markdown"), ("<a", "markdown")],
)  # fmt: skip
def test_a_document_of_repeated_unclosed_markup_is_read_in_linear_time(unit: str, fmt: str) -> None:
    raw = unit * (100_000 // len(unit))  # the API's whole text limit; minutes each before
    if unit == "<a" and fmt == "html":
        raw += "<" + "a" * 100_000  # and one unclosed tag of a long name: 12 s before its name was possessive
    started = time.perf_counter()
    to_text(raw, fmt)
    assert time.perf_counter() - started < 5
