"""Copies of an erased user's data in files under HOME: exports written there, the capture spool, gate
reports and a starter golden set (both quote prompts). The store and snapshots are handled on their own.

Only the erased user's tenant's copies change. A user's message is matched by its start, and other tenants'
users ask the same questions ("How do I reset my password?"): a match alone never says whose a file is. So a
file is the tenant's by where it lies (its `reports/<id>/`, `jobs/<id>/` and `policies/<name>/` folders), by
the dataset card of a `snapshot export` folder, or row by row by the tenant a row names (the spool, `tuneloop
export`). In those, JSON-lines and Parquet files lose the rows that mention the user, and a golden set (YAML
with `items`) the items that do: an item carries no record of whose data it came from, so an item is the
user's when it quotes them, as a row is. Another file of the tenant's reports or jobs that mentions the user
is deleted. Every other file that mentions the user (the team's own policy files, a file nothing attributes)
is left as it is and listed for the operator to review; another tenant's files are not opened.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from tuneloop.config import read_yaml

MIN_TEXT = 12  # shorter messages ("thanks", "hi there") cannot be told apart from anyone else's
PREFIX = 64  # reports quote a message cut short: its start is what is looked for
MAX_SCAN_BYTES = 64 * 2**20  # larger files are model weights and caches, which hold no captured text
# Values a YAML or JSON file under HOME is read with, aliases written out: past it, a byte search alone.
MAX_SCAN_VALUES = 2_000_000
WEIGHTS = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt"}  # tensors, never captured text
EXPORT_CARD = "A tuneloop snapshot"  # how `snapshot export`'s dataset card begins, naming its tenant next
_CARD_TENANT = re.compile(re.escape(EXPORT_CARD) + r" \(tenant ([^,\s]+),")
OWNED = ("reports", "jobs")  # HOME folders with one subfolder per tenant id, written by tuneloop only


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


@dataclass(frozen=True)
class Owner:
    """The tenant whose files an erasure may change: its id and name."""

    id: str
    name: str


@dataclass
class Residue:
    """The files under HOME changed for one erasure, and those that mention the user but were not the
    tenant's to change (`left`, for the operator to review), relative to HOME."""

    rewritten: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def scrub_home(home: Path, needles: Needles, owner: Owner, skip: Iterable[Path]) -> Residue:
    """Take the user's rows and items out of `owner`'s files under `home` and delete its other files that
    hold their data; `skip` lists paths never to open (the store's files, snapshots, models, keys)."""
    residue = Residue()
    skipped = [p.resolve() for p in skip]
    owners: dict[Path, bool | None] = {}  # per folder: a folder's files share its owner, and its card
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.suffix in WEIGHTS:
            continue
        resolved = path.resolve()
        if any(resolved == s or s in resolved.parents for s in skipped):
            continue
        name = path.relative_to(home)
        if name.parent not in owners:
            owners[name.parent] = _folder_owner(home, name.parent, owner)
        whose = owners[name.parent]
        if whose is False:
            continue
        owned = whose is True
        stat = path.stat()
        if stat.st_size > MAX_SCAN_BYTES or stat.st_nlink > 1:
            # Too large to read whole, or also another path's file (a hard link): the tenant's is reported
            # unchanged rather than skipped unsaid or rewritten under whoever shares it.
            if owned:
                residue.left.append(str(name))
            continue
        outcome = _scrub(path, needles, owner.id, owned, owned and name.parts[0] in OWNED)
        if outcome is not None:
            getattr(residue, outcome).append(str(name))
    return residue


def _folder_owner(home: Path, folder: Path, owner: Owner) -> bool | None:
    """Whether a folder under HOME is `owner`'s (True) or another tenant's (False): in `reports/<id>/`,
    `jobs/<id>/` or `policies/<name>/`, or a `snapshot export` folder whose dataset card names it; None for
    a folder nothing attributes. Ids and names are each matched where they are used: a tenant may be named
    like another's id."""
    if len(folder.parts) > 1 and folder.parts[0] in OWNED:
        return folder.parts[1] == owner.id
    if len(folder.parts) > 1 and folder.parts[0] == "policies":
        return folder.parts[1] == owner.name
    card = home / folder / "README.md"
    if card.is_file() and card.stat().st_size <= MAX_SCAN_BYTES:
        found = _CARD_TENANT.search(card.read_text(errors="replace"))
        return found.group(1) == owner.id if found else None
    return None


def _scrub(path: Path, needles: Needles, tenant_id: str, owned: bool, deletable: bool) -> str | None:
    """What became of one file that is the tenant's (`owned`) or nobody's in particular: `rewritten`,
    `removed`, `left` (it mentions the user but is not theirs to change), or None (no mention)."""
    if path.suffix == ".jsonl":
        return _rewrite_jsonl(path, needles, tenant_id, owned)
    if path.suffix == ".parquet":
        return _rewrite_parquet(path, needles, tenant_id, owned)
    if owned and path.suffix in (".yaml", ".yml") and (outcome := _rewrite_items(path, needles)):
        return outcome
    if not _holds(path, needles):
        return None
    if not deletable:
        return "left"
    path.unlink()
    return "removed"


def _holds(path: Path, needles: Needles) -> bool:
    data = path.read_bytes()
    if needles.in_bytes(data):
        return True
    if path.suffix in (".yaml", ".yml", ".json"):
        # YAML folds long strings over lines, so a message can hide from a byte search; read it instead.
        return needles.mentions(_decoded(data))
    return False


def _decoded(data: bytes) -> Any:
    """A YAML or JSON file's data, or None for one that is neither, or too large or deep once its aliases
    are written out (an alias bomb in a stray file held an erasure forever)."""
    try:
        return read_yaml(data, max_values=MAX_SCAN_VALUES)
    except ValueError:
        return None


def _rewrite_items(path: Path, needles: Needles) -> str | None:
    """Drop the `items` that mention the user from a YAML golden set, keeping its leading comments; None when
    the file is no such set, no item mentions them, or something besides the items does (it is deleted)."""
    data = path.read_bytes()
    doc = _decoded(data)
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


def _rewrite_jsonl(path: Path, needles: Needles, tenant_id: str, owned: bool) -> str | None:
    """Drop the tenant's lines that mention the user, in place under an exclusive lock (the spool appends
    under one, so no row written meanwhile is lost)."""
    with path.open("r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lines = f.read().splitlines(keepends=True)
        verdicts = [_line_verdict(line, needles, tenant_id, owned) for line in lines]
        kept = [line for line, verdict in zip(lines, verdicts, strict=True) if verdict != "drop"]
        if len(kept) < len(lines):
            f.seek(0)
            f.write(b"".join(kept))
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
    return _outcome(verdicts)


def _line_verdict(line: bytes, needles: Needles, tenant_id: str, owned: bool) -> str | None:
    try:
        return _row_verdict(json.loads(line), needles, tenant_id, owned)
    except ValueError:
        return ("drop" if owned else "keep") if needles.in_bytes(line) else None


def _row_verdict(row: Any, needles: Needles, tenant_id: str, owned: bool) -> str | None:
    """`drop` for the tenant's row that mentions the user (one naming the tenant, or any row of a file
    that is the tenant's), `keep` for one that mentions them but that nothing attributes, None for a row
    that does not mention them or is another tenant's (whose users may well have written the same)."""
    named = (row.get("tenant_id") or row.get("tenant")) if isinstance(row, dict) else None
    named = named.get("id") if isinstance(named, dict) else named
    if (named is not None and named != tenant_id) or not needles.mentions(row):
        return None
    return "drop" if named is not None or owned else "keep"


def _outcome(verdicts: list[str | None]) -> str | None:
    """What a file's row verdicts make of it: left when any row mentioning the user stays, else rewritten
    when one went, else None."""
    if "keep" in verdicts:
        return "left"
    return "rewritten" if "drop" in verdicts else None


def _rewrite_parquet(path: Path, needles: Needles, tenant_id: str, owned: bool) -> str | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):  # not readable as Parquet: the tenant's is reported unchanged
        return "left" if owned else None
    rows = table.to_pylist()
    verdicts = [_row_verdict(row, needles, tenant_id, owned) for row in rows]
    if "drop" in verdicts:
        kept = [row for row, verdict in zip(rows, verdicts, strict=True) if verdict != "drop"]
        tmp = path.with_name(f".{path.name}.erasing")
        pq.write_table(pa.Table.from_pylist(kept, schema=table.schema), tmp)
        os.replace(tmp, path)
    return _outcome(verdicts)
