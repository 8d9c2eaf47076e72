"""Split a document's text into overlapping chunks that fit the encoder's window, with their offsets."""

from __future__ import annotations

from dataclasses import dataclass

# MiniLM reads 256 word pieces, about 1,000 characters of English: a chunk stays well inside that.
CHUNK_CHARS = 700
OVERLAP_CHARS = 100
MAX_CHUNKS = 5000  # per document: more is a corpus, not a document
_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


@dataclass(frozen=True)
class Chunk:
    """A slice text[start:end] of the document's (redacted) text."""

    position: int
    start: int
    end: int
    text: str


def chunk_text(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """Chunks of at most `size` characters, cut at the strongest break (paragraph, line, sentence, word)
    in their second half, each starting `overlap` characters before the previous one ended; pieces with no
    letter or digit are left out."""
    assert 0 <= overlap < size // 2
    chunks: list[Chunk] = []
    start = _skip_space(text, 0)
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            end = _break_before(text, start + size // 2, end)
        piece = text[start:end].rstrip()
        # A piece of no letter or digit (a run of rules or quote marks) holds nothing to find, and its
        # degenerate embedding sat near every query, above the pages that answered it.
        if any(c.isalnum() for c in piece):
            chunks.append(Chunk(len(chunks), start, start + len(piece), piece))
        if end >= len(text):
            break
        start = _skip_space(text, max(end - overlap, start + 1))
        if overlap:
            start = _word_start(text, start, end)
    return chunks


def _break_before(text: str, lo: int, hi: int) -> int:
    """The end of the last strongest break in text[lo:hi], else `hi`."""
    for mark in _BREAKS:
        at = text.rfind(mark, lo, hi)
        if at != -1:
            return at + len(mark)
    return hi


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _word_start(text: str, i: int, limit: int) -> int:
    """Move `i` forward to the start of a word (an overlap never begins mid-word), not past `limit`."""
    while 0 < i < limit and not text[i - 1].isspace():
        i += 1
    return _skip_space(text, i) if i < limit else i
