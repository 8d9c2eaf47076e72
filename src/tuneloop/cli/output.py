"""What every command prints: exit codes, `--json` output, and stage progress on stderr.

Exit codes: 0 done, 1 error (bad input, a failed step), 2 usage (argparse), 3 blocked (the gate blocked
the version, the canary rolled back), 130 interrupted. Results go to stdout, as text or with `--json` as
one JSON document; progress goes to stderr and `--json` silences it, so scripts read stdout alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BLOCKED = 3
EXIT_INTERRUPTED = 130


# Turn outcomes whose candidate never reached all users: the gate blocked it, or its canary lost or halted.
NOT_SHIPPED = frozenset({"blocked", "rolled_back", "halted"})


def turn_exit_code(outcome: str | None) -> int:
    """The exit code for a loop turn that ended with `outcome` (None: still running, or no turn)."""
    if outcome in NOT_SHIPPED:
        return EXIT_BLOCKED
    return EXIT_ERROR if outcome == "failed" else EXIT_OK


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Give a command `--json`: its result as one JSON document on stdout, no progress on stderr."""
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON (for scripts); no progress lines"
    )


def positive_int(text: str) -> int:
    """argparse type for a count or size that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give 1 or more")
    return value


MAX_INTERVAL_SECONDS = 7 * 24 * 3600.0


def interval(text: str) -> float:
    """argparse type for seconds between passes: a finite number above 0, at most a week (`time.sleep` and
    `Event.wait` fail on what is larger, or never return on NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_INTERVAL_SECONDS:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text}: give seconds above 0, at most {MAX_INTERVAL_SECONDS:g}")
    return value


def port(text: str) -> int:
    """argparse type for a TCP port, 1 to 65535; anything else is a usage error, not a bind() traceback."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port; give 1 to 65535")
    return value


def add_reason_flag(parser: argparse.ArgumentParser, default: str | None, helptext: str = "") -> None:
    """Give a command `--reason`, redacted as it is read: the audit log keeps what it is given for good."""

    def redacted(text: str) -> str:
        if text == default:  # argparse passes the default through here too; it needs no NLP model
            return text
        from tuneloop.capture.redact import Redactor

        [clean] = Redactor().redact_texts([text], "redact")
        return clean

    parser.add_argument("--reason", default=default, type=redacted, help=helptext or "why, for the audit log")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def to_json(data: Any) -> str:
    """`data` (dicts, lists, dataclasses, datetimes, paths) as indented JSON."""
    return json.dumps(data, indent=2, default=_plain, ensure_ascii=False)


def readable(data: Any) -> list[str]:
    """Nested `data` as indented `key: value` lines (YAML), for records whose lineage, metrics or looks
    nest; `--json` prints the same as JSON."""
    import yaml

    plain = json.loads(to_json(data))
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=110).rstrip("\n").splitlines()


def emit(
    args: argparse.Namespace, data: Any, text: Callable[[], Iterable[str]], empty: str | None = None
) -> None:
    """Print `data` as JSON when the command got `--json`, else the lines `text()` makes, or `empty` when
    `data` is an empty list (a list command that prints nothing looks broken)."""
    if getattr(args, "json", False):
        print(to_json(data))
        return
    if empty is not None and data == []:
        print(empty)
        return
    for line in text():
        print(line)


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class Progress:
    """Stage lines on stderr: `… NAME` as a stage starts, `✓ NAME (ELAPSED)` or `✗` as it ends."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    @classmethod
    def of(cls, args: argparse.Namespace) -> Progress:
        """Progress for a command: silent under `--json`."""
        return cls(quiet=getattr(args, "json", False))

    def say(self, line: str) -> None:
        """One line on stderr (read at call time: the demo redirects stderr around noisy stages)."""
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Announce `name`, run the block, then say how long it took (or that it failed)."""
        started = time.monotonic()
        self.say(f"… {name}")
        try:
            yield
        except BaseException:
            self.say(f"✗ {name} stopped after {_elapsed(time.monotonic() - started)}")
            raise
        self.say(f"✓ {name} ({_elapsed(time.monotonic() - started)})")
