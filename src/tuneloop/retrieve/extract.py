"""Plain text from what a user hands us (text, Markdown, HTML): decoded strictly, binary refused."""

from __future__ import annotations

import html
import re
import unicodedata
from pathlib import Path
from typing import Literal

from tuneloop.errors import BadRequest
from tuneloop.user_files import read_limited

Format = Literal["text", "markdown", "html"]
FORMATS: dict[str, Format] = {
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
}
MAX_FILE_BYTES = 2_000_000  # redaction reads about 25,000 characters per CPU second: 2 MB is ~80 s
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# A title is one line printed as it is (`tuneloop docs list`): no C0/C1 controls (terminal escapes), line
# or paragraph separators, or bidirectional overrides and isolates (text that reads other than it is).
TITLE_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SKIPPED_TAGS = {"script", "style", "noscript", "template", "svg", "head"}
_BLOCK_TAGS = {
    "p", "div", "br", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer",
    "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dd", "dt", "title", "hr",
}  # fmt: skip


def format_of(path: Path) -> Format:
    """The format a file's extension names; BadRequest for anything else (PDFs, images, archives)."""
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise BadRequest(
            f"{path.name}: unsupported file type {path.suffix or '(none)'!r}; add text, Markdown or HTML "
            f"files ({', '.join(sorted(FORMATS))})"
        )
    return found


def read_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """A file's text, decoded as UTF-8 (or UTF-16 with a byte-order mark); binary files are refused, and
    so are FIFOs, devices and unreadable paths (one line each, never a hang or a traceback)."""
    return decode(read_limited(path, max_bytes, path.name), path.name)


def decode(data: bytes, name: str) -> str:
    """Text from bytes: UTF-8 (BOM or not) or UTF-16 with a BOM; NULs or control bytes mean binary."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
        if b"\x00" in data[:8192]:
            raise BadRequest(f"{name}: binary file (it holds NUL bytes); add text, Markdown or HTML")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"{name}: not valid {encoding.removesuffix('-sig').upper()} text (byte {exc.start}); convert it "
            "to UTF-8 first"
        ) from None
    check_text(text, name)
    return text


def check_text(text: str, name: str) -> None:
    """Refuse text that is mostly control characters (a binary file that happened to decode)."""
    sample = text[:8192]
    if "\x00" in sample or (sample and len(_CONTROL.findall(sample)) > len(sample) * 0.01):
        raise BadRequest(f"{name}: looks binary (control characters); add text, Markdown or HTML")


def to_text(raw: str, fmt: Format) -> str:
    """The readable text of a document in `fmt`, with paragraphs kept as blank-line breaks."""
    if fmt == "html":
        text = _html_text(raw)
    elif fmt == "markdown":
        text = _markdown_text(raw)
    else:
        text = raw
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r"\n\s*\n\s*", "\n\n", text).strip()
    return text if visible(text) else ""


# Letters and symbols that render as blank space (Hangul fillers, the blank braille pattern, Khmer's
# inherent vowels, the object replacement character): their categories say they show something.
BLANKS = frozenset("\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0\ufffc")


def visible(text: str) -> bool:
    """Whether `text` shows anything: a letter, number, punctuation mark or symbol that is not a blank one,
    where whitespace, format characters (zero-width spaces, a byte order mark), controls and combining marks
    alone show nothing (`str.strip` keeps all but the first)."""
    return any(unicodedata.category(ch)[0] in "LNPS" and ch not in BLANKS for ch in text)


def title_of(text: str, fallback: str) -> str:
    """The first line of the text (its heading), at most 200 characters, else `fallback`."""
    lines = (TITLE_CONTROL.sub("", line).strip() for line in text.splitlines())
    return (next((line for line in lines if line), "") or fallback)[:200]


# A tag, a comment's start, or a declaration / processing instruction. `[^<>]*` stops at the next `<`, so
# every search is bounded by the distance to the next tag and the whole scan stays linear in the text:
# html.parser rescans unclosed tags and quotes (40,000 characters of `<a b="` took 4 s, the GIL held). The
# name is possessive: `<` and a long name with no `>` gave back its letters to `[^<>]*` one at a time.
_MARKUP = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*+)[^<>]*>|<!--|<[!?][^<>]*>")


def _html_text(raw: str) -> str:
    parts: list[str] = []
    skipping, at = 0, 0
    while (tag := _MARKUP.search(raw, at)) is not None:
        if not skipping:
            parts.append(raw[at : tag.start()])
        at = tag.end()
        if tag.group(0) == "<!--":
            end = raw.find("-->", at)
            at = len(raw) if end < 0 else end + 3
            continue
        name, closing = (tag.group(2) or "").lower(), tag.group(1) == "/"
        if name in _SKIPPED_TAGS and not tag.group(0).endswith("/>"):
            skipping = max(0, skipping - 1) if closing else skipping + 1
        elif name in _BLOCK_TAGS and not skipping:
            parts.append("\n\n")
    if not skipping:
        parts.append(raw[at:])
    return html.unescape("".join(parts))


_MD_RULES = (
    (re.compile(r"```[^\n]*\n?"), ""),  # code fences: keep the code, drop the markers
    # Brackets and parentheses are excluded inside each part, so a failed match stops at the next one and
    # the scan stays linear: `[^\]]+` over 100,000 `[` took a minute, holding the GIL.
    (re.compile(r"!\[([^\[\]\n]*)\]\([^()\n]*\)"), r"\1"),  # images: their alt text
    (re.compile(r"\[([^\[\]\n]+)\]\([^()\n]*\)"), r"\1"),  # links: their text
    (re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE), ""),  # heading markers
    (re.compile(r"^\s{0,3}>\s?", re.MULTILINE), ""),  # quote markers
    (re.compile(r"(\*\*|__|`)"), ""),  # strong emphasis and inline code markers
    # Emphasis by one `*` or `_` around a phrase of a line (not `snake_case`, not an escaped `\*`); bounded,
    # so a line of 100,000 lone `*` stays a linear scan.
    (re.compile(r"(?<![\w*\\])([*_])(?=[^\s*_])([^*_\n]{1,300}?)(?<=[^\s\\])\1(?![\w*])"), r"\2"),
    (re.compile(r"<[^<>\n]+>"), ""),  # inline HTML tags
)


# CommonMark: a backslash before ASCII punctuation shows the punctuation itself.
_MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def _markdown_text(raw: str) -> str:
    for pattern, replacement in _MD_RULES:
        raw = pattern.sub(replacement, raw)
    # What the reader sees: escapes and entity references ("&#64;") as the characters they show.
    return html.unescape(_MD_ESCAPE.sub(r"\1", raw))
