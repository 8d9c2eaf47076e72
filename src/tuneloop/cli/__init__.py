"""`tuneloop ...`: the command line. Each command group lives in its own module; errors end here."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from tuneloop.cli.output import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from tuneloop.errors import TuneloopError


def _groups() -> tuple:
    """The command groups in --help's order. Imported when the parser is built, inside `main`'s handlers:
    they take seconds to import (scipy, the store), and a Ctrl-C then is an interrupt, not a traceback."""
    from tuneloop.cli import (
        admin,
        chat,
        demo,
        docs,
        gate,
        loop,
        outcome,
        privacy,
        review,
        rollout,
        serve,
        snapshot,
        train,
        versions,
        worker,
    )

    return (admin, privacy, serve, chat, docs, outcome, snapshot, train, versions, gate, rollout, review,
            loop, worker, demo)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneloop",
        description="Auto-tune a deployed LLM from its users' feedback.",
        epilog="exit codes: 0 done, 1 error, 2 usage, 3 blocked (gate blocked, canary rolled back), "
        "130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"tuneloop {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _groups():
        group.register(commands)
    return parser


def _is_utf8(arg: str) -> bool:
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tuneloop")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run one command; a TuneloopError prints one line to stderr and exits 1 (see `output` for codes)."""
    if threading.current_thread() is threading.main_thread():
        # `docker stop`, systemd and `kill` stop a command as Ctrl-C does: its cleanup runs (the demo's
        # server, a training child; a worker's leases, so another worker resumes the turn at once rather
        # than after their TTL), where Python's default would exit at once and orphan them.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # a reader that left shows here, not as "Exception ignored" at Python's exit
        return code
    except BrokenPipeError:
        if not _reader_gone(sys.stdout.fileno()):
            raise  # another pipe broke (a launcher's, a socket's): a real failure, shown as one
        # stdout's reader went away (`tuneloop versions show V | head`): stop quietly, as Unix tools do,
        # and point stdout at /dev/null so the interpreter's own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _reader_gone(fd: int) -> bool:
    """Whether `fd` is a pipe whose reading end is closed (Linux polls such a writer as an error)."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _main(argv: list[str]) -> int:
    undecodable = next((a for a in argv if not _is_utf8(a)), None)
    if undecodable is not None:
        # Python keeps bytes that are not UTF-8 as lone surrogates; any command that stores, hashes or
        # prints such an argument would end in UnicodeEncodeError's traceback instead of one line.
        shown = ascii(undecodable)[:100]
        print(f"error: argument {shown} is not UTF-8 text; send it in UTF-8", file=sys.stderr)
        return EXIT_USAGE
    # Commands print their own stage lines (none with --json); Hugging Face would add a bar per model load.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        args = build_parser().parse_args(argv)
        return args.run(args) or EXIT_OK
    except TuneloopError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
