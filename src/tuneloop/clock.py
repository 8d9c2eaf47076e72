"""Time in one convention: every datetime tuneloop compares or stores is aware and in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def now_utc() -> datetime:
    return datetime.now(UTC)


def utc(moment: datetime) -> datetime:
    """The moment as an aware UTC datetime; naive ones (SQLite hands datetimes back naive) are UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
