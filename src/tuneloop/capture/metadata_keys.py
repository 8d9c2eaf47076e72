"""Metadata keys go through redaction like values: a client may key a dict by an email or a name.

`keys_of` lists every dict key inside a value; `with_keys` puts the redacted keys back in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


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
