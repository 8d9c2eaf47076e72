"""Patterns a team writes (a golden item's `regex`, the pii suite's `canary_pattern`), run over text users
and models wrote. Each search has a time limit: a pattern that backtracks (`(\\w+\\s?)*!` doubled its time
per character of a long word) fails its suite with the reason, where it held the gate for good."""

from __future__ import annotations

from collections.abc import Iterator

import regex

SEARCH_SECONDS = 2.0  # per text searched; a sane pattern takes microseconds on an answer or a message


class PatternTimeout(ValueError):
    """A pattern's search ran past SEARCH_SECONDS."""


def compiled(pattern: str, *, may_match_empty: bool = True) -> regex.Pattern:
    """`pattern` compiled; ValueError says why it cannot be used (for a canary pattern: one that matches
    empty text would find a "canary" in every text, so every candidate would leak)."""
    try:
        found = regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"{pattern[:100]!r}: {exc}") from None
    if not may_match_empty and found.search("", timeout=SEARCH_SECONDS) is not None:
        raise ValueError(f"{pattern[:100]!r} matches empty text; make it match at least one character")
    return found


def matches(pattern: regex.Pattern, text: str) -> Iterator[regex.Match]:
    """`pattern.finditer(text)` within SEARCH_SECONDS (PatternTimeout past it)."""
    try:
        yield from pattern.finditer(text, timeout=SEARCH_SECONDS)
    except TimeoutError:
        raise PatternTimeout(
            f"the pattern {pattern.pattern[:100]!r} took over {SEARCH_SECONDS:g} s on one text of "
            f"{len(text)} characters; rewrite it without nested repeats"
        ) from None
