"""Metadata keys and numbers go through redaction like text: a client may key a dict by an email or a name,
or send a card or phone number as a JSON number.

`keys_of` lists every dict key inside a value; `with_keys` puts the redacted keys back in the same order.
`numbers_as_text` turns long numbers (`is_long_number`) into their whole digits as text for redaction;
`numbers_back` restores those it left.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

MIN_NUMBER_DIGITS = 7  # a local phone number; shorter numbers (counts, ids, prices) pass as they are


def keys_of(value: Any) -> list[str]:
    """Every dict key inside `value` (nested dicts and lists), depth first."""
    out: list[str] = []
    _collect(value, out)
    return out


def with_keys(value: Any, keys: list[str]) -> Any:
    """A copy of `value` whose dict keys are `keys`, taken in `keys_of` order.

    Keys that redaction made equal (two emails both `<EMAIL_ADDRESS>`) get `#2`, `#3`... so no value is lost.
    """
    names = iter(keys)
    out = _rename(value, names)
    if next(names, None) is not None:
        raise ValueError("more keys than the value holds")
    return out


def _collect(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            out.append(key)
            _collect(item, out)
    elif isinstance(value, list):
        for item in value:
            _collect(item, out)


def _rename(value: Any, names: Iterator[str]) -> Any:
    if isinstance(value, list):
        return [_rename(item, names) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for item in value.values():
        name = next(names)
        unique, n = name, 1
        while unique in out:
            n += 1
            unique = f"{name}#{n}"
        out[unique] = _rename(item, names)
    return out


def numbers_as_text(value: Any) -> Any:
    """A copy of `value` whose long whole numbers (7 digits or more) are their digits as text, so that
    redaction reads a card or phone number sent as a JSON number (`"card": 4111111111111111`)."""
    if isinstance(value, dict):
        return {key: numbers_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [numbers_as_text(item) for item in value]
    digits = _digits_of(value)
    return value if digits is None else digits


def numbers_back(original: Any, redacted: Any) -> Any:
    """`redacted` (of `numbers_as_text(original)`) with each number redaction left alone a number again."""
    if isinstance(original, dict) and isinstance(redacted, dict):
        return {key: numbers_back(original[key], item) for key, item in redacted.items()}
    if isinstance(original, list) and isinstance(redacted, list):
        return [numbers_back(o, r) for o, r in zip(original, redacted, strict=True)]
    return original if redacted == _digits_of(original) else redacted


def is_long_number(value: Any) -> bool:
    """Whether `value` has MIN_NUMBER_DIGITS whole digits or more, as a phone, card or account number has:
    an int, or a float below 1e19 (past that a float has lost such digits) — with a fraction too, since
    `4155550134.5` carries the phone number as plainly as `4155550134`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) < 1e19):
        return False
    return abs(value) >= 10 ** (MIN_NUMBER_DIGITS - 1)


def _digits_of(value: Any) -> str | None:
    return str(int(value)) if is_long_number(value) else None
