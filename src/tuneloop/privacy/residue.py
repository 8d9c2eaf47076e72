"""Copies of an erased user's data in files under HOME: exports written there, the capture spool, gate
reports and a starter golden set (both quote prompts). The store and snapshots are handled on their own.

JSON-lines and Parquet files lose the rows that mention the user, and a golden set (YAML with `items`) the
items that do: an item carries no record of whose data it came from, so an item is the user's when it quotes
them, as a row is. Any other file that mentions the user is deleted, and every path touched is reported.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

MIN_TEXT = 12  # shorter messages ("thanks", "hi there") cannot be told apart from anyone else's
PREFIX = 64  # reports quote a message cut short: its start is what is looked for
MAX_SCAN_BYTES = 64 * 2**20  # larger files are model weights and caches, which hold no captured text
WEIGHTS = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt"}  # tensors, never captured text


@dataclass(frozen=True)
class Needles:
    """What marks the user's data: the start of each message they wrote, and their stored identifiers."""

    texts: frozenset[str]
    identifiers: frozenset[str]

    @classmethod
    def of(cls, texts: Iterable[str], identifiers: Iterable[str]) -> Needles:
        starts = {t.strip()[:PREFIX] for t in texts if len(t.strip()) >= MIN_TEXT}
        return cls(frozenset(starts), frozenset(i for i in identifiers if i))

    def mentions(self, value: Any) -> bool:
        """Whether a decoded JSON/YAML value holds an identifier as a string or one of the texts in one."""
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if item in self.identifiers or any(t in item for t in self._text_forms):
                    return True
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list | tuple):
                stack.extend(item)
        return False

    def in_bytes(self, data: bytes) -> bool:
        """Whether raw bytes hold any needle as written, JSON-escaped or HTML-escaped."""
        return any(form in data for form in self._byte_forms)

    @cached_property
    def _text_forms(self) -> tuple[str, ...]:
        # A JSON string nested in a value (an export's flattened feedback column) escapes non-ASCII. A short
        # raw id ("u-42", redaction off) would match inside other ids: only long ones are searched within.
        long_ids = {i for i in self.identifiers if len(i) >= MIN_TEXT}
        return tuple({*self.texts, *(json.dumps(t)[1:-1] for t in self.texts), *long_ids})

    @cached_property
    def _byte_forms(self) -> tuple[bytes, ...]:
        from markupsafe import escape

        forms = {*self._text_forms, *(str(escape(t)) for t in self.texts)}
        return tuple(f.encode() for f in forms)


@dataclass
class Residue:
    """The files under HOME changed for one erasure, relative to HOME."""

    rewritten: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def scrub_home(home: Path, needles: Needles, skip: Iterable[Path]) -> Residue:
    """Take the user's rows out of JSON-lines and Parquet files under `home`, and delete other files that
    hold their data; `skip` lists paths handled elsewhere (the store's files, snapshots)."""
    residue = Residue()
    skipped = [p.resolve() for p in skip]
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.suffix in WEIGHTS:
            continue
        if path.stat().st_size > MAX_SCAN_BYTES:
            continue
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skipped):
            continue
        name = str(path.relative_to(home))
        outcome = _scrub(path, needles)
        if outcome == "rewritten":
            residue.rewritten.append(name)
        elif outcome == "removed":
            residue.removed.append(name)
    return residue


def _scrub(path: Path, needles: Needles) -> str | None:
    if path.suffix == ".jsonl":
        return "rewritten" if _rewrite_jsonl(path, needles) else None
    if path.suffix == ".parquet":
        return "rewritten" if _rewrite_parquet(path, needles) else None
    if path.suffix in (".yaml", ".yml") and (outcome := _rewrite_items(path, needles)):
        return outcome
    if not _holds(path, needles):
        return None
    path.unlink()
    return "removed"


def _holds(path: Path, needles: Needles) -> bool:
    data = path.read_bytes()
    if needles.in_bytes(data):
        return True
    if path.suffix in (".yaml", ".yml", ".json"):
        # YAML folds long strings over lines, so a message can hide from a byte search; read it instead.
        try:
            return needles.mentions(yaml.safe_load(data))
        except yaml.YAMLError:
            return False
    return False


def _rewrite_items(path: Path, needles: Needles) -> str | None:
    """Drop the `items` that mention the user from a YAML golden set, keeping its leading comments; None when
    the file is no such set, no item mentions them, or something besides the items does (it is deleted)."""
    data = path.read_bytes()
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        return None
    kept = [item for item in doc["items"] if not needles.mentions(item)]
    lines = data.splitlines(keepends=True)
    header = b"".join(itertools.takewhile(lambda line: line.startswith(b"#"), lines))
    rest = {k: v for k, v in doc.items() if k != "items"}
    if len(kept) == len(doc["items"]) or needles.mentions(rest) or needles.in_bytes(header):
        return None
    if not kept:  # nothing of the set is left to guard against regressions
        path.unlink()
        return "removed"
    # The team's comments between items cannot survive a YAML round trip; the starter set's header does.
    body = yaml.safe_dump({**doc, "items": kept}, sort_keys=False, allow_unicode=True).encode()
    tmp = path.with_name(f".{path.name}.erasing")
    tmp.write_bytes(header + body)
    os.replace(tmp, path)
    return "rewritten"


def _rewrite_jsonl(path: Path, needles: Needles) -> bool:
    """Drop the lines that mention the user, in place under an exclusive lock (the spool appends under one,
    so no row written meanwhile is lost)."""
    with path.open("r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lines = f.read().splitlines(keepends=True)
        kept = [line for line in lines if not _line_mentions(line, needles)]
        if len(kept) == len(lines):
            return False
        f.seek(0)
        f.write(b"".join(kept))
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    return True


def _line_mentions(line: bytes, needles: Needles) -> bool:
    try:
        return needles.mentions(json.loads(line))
    except ValueError:
        return needles.in_bytes(line)


def _rewrite_parquet(path: Path, needles: Needles) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return False  # not a Parquet file after all: nothing of ours to rewrite
    rows = table.to_pylist()
    kept = [row for row in rows if not needles.mentions(row)]
    if len(kept) == len(rows):
        return False
    tmp = path.with_name(f".{path.name}.erasing")
    pq.write_table(pa.Table.from_pylist(kept, schema=table.schema), tmp)
    os.replace(tmp, path)
    return True
