"""Code-aware signals: the fenced code blocks of an answer, and how much of a suggestion survived an edit."""

from __future__ import annotations

import difflib
import re

# A fence opens a line (``` or ~~~, optionally a language tag) and closes with the same fence; an unclosed
# block runs to the end, because answers get cut at the token limit.
_BLOCK = re.compile(
    r"^(?P<fence>```|~~~)[ \t]*[\w+#.-]*[ \t]*\n(?P<code>.*?)(?:^(?P=fence)[ \t]*$|\Z)", re.M | re.S
)


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks of a Markdown answer, in order (empty ones left out)."""
    return [m["code"].rstrip("\n") for m in _BLOCK.finditer(text) if m["code"].strip()]


def code_of(text: str) -> str | None:
    """The answer's code: its fenced blocks joined, or None when it has none (the answer is prose)."""
    blocks = code_blocks(text)
    return "\n\n".join(blocks) if blocks else None


def survival(suggestion: str, edited: str) -> float | None:
    """Share of the suggestion's code lines that survive in the edited text (difflib on stripped, non-blank
    lines), or None when the suggestion holds no fenced code. An edit without fences counts as bare code:
    developers paste back what they ran, not the prose around it."""
    before = code_of(suggestion)
    if before is None:
        return None
    after = code_of(edited)
    old, new = _lines(before), _lines(edited if after is None else after)
    if not old:
        return None
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    return round(kept / len(old), 6)


def looks_like_code(text: str) -> bool:
    """Whether unfenced text parses as Python (prose almost never does)."""
    import ast

    try:
        ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    # A lone word or phrase can parse as a name or an expression; code has some syntax in it.
    return any(c in text for c in "=():[]")


def edited_answer(original: str, edit: str) -> str:
    """The edit as a whole answer. A developer's edit of a one-block code answer is often just the code
    they kept, unfenced: it goes back into that block, so an edit pair compares code, not prose (and a
    fenced or prose edit is kept as written)."""
    if code_of(edit) is not None or len(code_blocks(original)) != 1 or not looks_like_code(edit):
        return edit
    return with_code(original, edit)


def with_code(answer: str, code: str) -> str:
    """`answer` with the contents of its first fenced block replaced by `code`, prose and fence kept."""
    match = _BLOCK.search(answer)
    if match is None:
        return answer
    start, end = match.span("code")
    return answer[:start] + code.strip("\n") + "\n" + (answer[end:] or match["fence"])


def _lines(code: str) -> list[str]:
    return [line.strip() for line in code.splitlines() if line.strip()]
