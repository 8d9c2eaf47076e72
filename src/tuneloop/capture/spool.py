"""A local spool for captured rows the store could not take in time, written to the store later.

Rows are spooled after redaction, so the file holds no more PII than the store would. Each line is one
(tenant, row, digest); writing it again later is idempotent, so a replay cut short is simply repeated.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from tuneloop.store.repository import Store, Tenant

log = logging.getLogger("tuneloop")


class Spool:
    """A JSON-lines file of pending interaction rows; flock lets processes sharing HOME share it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, tenant: Tenant, row: dict[str, Any], digest: str) -> None:
        """Add one row and fsync it: once this returns, a crash does not lose it."""
        line = json.dumps({"tenant": tenant.__dict__, "row": row, "digest": digest}, default=_iso) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def replay(self, store: Store) -> int:
        """Write every spooled row to `store`; rows that fail again stay spooled. Returns how many left."""
        if not self.path.exists():
            return 0
        with open(self.path, "r+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            kept = [line for line in f if line.strip() and not self._write(store, line)]
            f.seek(0)
            f.writelines(kept)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return len(kept)

    @property
    def set_aside(self) -> Path:
        """Where rows the store refuses for good (not for a lock or a lost connection) are kept."""
        return self.path.with_name(self.path.name + ".refused")

    def _write(self, store: Store, line: str) -> bool:
        """True when the line's row is done with: in the store now (accepted, duplicate or conflicting for
        good), or set aside because the store refuses its data."""
        from sqlalchemy.exc import DataError

        from tuneloop.errors import Conflict

        try:
            entry = json.loads(line)
            tenant = Tenant(
                **{**entry["tenant"], "created_at": datetime.fromisoformat(entry["tenant"]["created_at"])}
            )
            row = {**entry["row"], "created_at": datetime.fromisoformat(entry["row"]["created_at"])}
            store.for_tenant(tenant).log_interaction(row, entry["digest"])
        except Conflict:
            log.error("spooled interaction %s conflicts with a stored one; dropped", entry["row"].get("id"))
        except (ValueError, KeyError, TypeError):
            log.exception("unreadable spool line dropped: %.200s", line)
        except DataError as exc:
            # Retrying a row the store refuses would log this every replay, for ever.
            with open(self.set_aside, "a", encoding="utf-8") as f:
                f.write(line if line.endswith("\n") else line + "\n")
            log.error("spooled interaction refused by the store (%s); set aside in %s", exc.orig, f.name)
        except Exception:
            log.warning("spooled interaction still not written; kept for the next replay", exc_info=True)
            return False
        return True


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool a {type(value).__name__}")
