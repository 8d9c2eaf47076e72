"""Plain text from what a user hands us (text, Markdown, HTML): decoded strictly, binary refused."""

from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from tuneloop.errors import BadRequest, PayloadTooLarge

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
# A title is one line printed as it is (`tuneloop docs list`): no C0/C1 controls, so no terminal escapes.
TITLE_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
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
    """A file's text, decoded as UTF-8 (or UTF-16 with a byte-order mark); binary files are refused."""
    if not path.is_file():
        raise BadRequest(f"{path}: not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise PayloadTooLarge(f"{path.name}: {size} bytes; the limit is {max_bytes} (split the document)")
    return decode(path.read_bytes(), path.name)


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


def visible(text: str) -> bool:
    """Whether `text` shows anything: a character that is neither whitespace nor an invisible format
    character (zero-width spaces and joiners, a byte order mark), which `str.strip` keeps."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)


def title_of(text: str, fallback: str) -> str:
    """The first line of the text (its heading), at most 200 characters, else `fallback`."""
    lines = (TITLE_CONTROL.sub("", line).strip() for line in text.splitlines())
    return (next((line for line in lines if line), "") or fallback)[:200]


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _html_text(raw: str) -> str:
    parser = _TextParser()
    parser.feed(raw)
    parser.close()
    return "".join(parser.parts)


_MD_RULES = (
    (re.compile(r"```[^\n]*\n?"), ""),  # code fences: keep the code, drop the markers
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images: their alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links: their text
    (re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE), ""),  # heading markers
    (re.compile(r"^\s{0,3}>\s?", re.MULTILINE), ""),  # quote markers
    (re.compile(r"(\*\*|__|`)"), ""),  # emphasis and inline code markers
    (re.compile(r"<[^>\n]+>"), ""),  # inline HTML tags
)


def _markdown_text(raw: str) -> str:
    for pattern, replacement in _MD_RULES:
        raw = pattern.sub(replacement, raw)
    return raw
