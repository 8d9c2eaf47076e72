"""How deep JSON text nests, read from its brackets before json.loads (and every recursive walk after it)
sees it: the request bodies' bound, and redaction's for JSON text inside a string."""

from __future__ import annotations

import re

MAX_DEPTH = 64  # json.loads and pydantic recurse: bodies stay far below the recursion limit
# A string left open runs to the end of the body: were only closed ones matched, each quote of `"\"\"\"…`
# would begin a scan to the end (quadratic in the body, holding the GIL from every tenant).
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_OPENS = {"[": 1, "{": 1, "]": -1, "}": -1}


def nests_deeper(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON `text` opens arrays/objects deeper than `limit` (brackets inside strings do not count)."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    if len(brackets) <= limit:
        return False
    depth = 0
    for char in brackets:
        depth += _OPENS[char]
        if depth > limit:
            return True
    return False
