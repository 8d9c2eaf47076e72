"""Files a user points tuneloop at (policies, guidelines, documents): untrusted, so read only when they are
regular files and never past a limit — a FIFO, a device or a 2 GB file gets one clear line, not a hang."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from tuneloop.errors import BadRequest, PayloadTooLarge

READ_CHUNK = 1 << 20


def read_limited(path: Path, max_bytes: int, label: str) -> bytes:
    """The bytes of the regular file `path`, at most `max_bytes`; errors start with `label` (what it is)."""
    try:
        # O_NONBLOCK: opening a FIFO no one writes to returns at once (then refused) instead of hanging.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise BadRequest(f"{label}: cannot read it ({exc.strerror or exc})") from None
    # Checked on the open file, not the name: a path swapped after a check cannot slip a device in.
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BadRequest(f"{label}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > max_bytes:
            raise PayloadTooLarge(f"{label}: {info.st_size} bytes; the limit is {max_bytes}")
        try:
            data = _read_at_most(f, max_bytes + 1)  # a file growing while read stops at the limit too
        except OSError as exc:
            raise BadRequest(f"{label}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{label}: more than {max_bytes} bytes; the limit is {max_bytes}")
    if data and info.st_size == 0:
        # /proc and /sys files pass as regular with size 0 and yield whatever the kernel has (/proc/kmsg:
        # its log, and a blocking read waits for the next line): not a file a user wrote.
        raise BadRequest(f"{label}: not a regular file (it reports no size, as /proc and /sys files do)")
    return data


def read_named(path: Path, max_bytes: int, label: str) -> bytes:
    """`read_limited`, but a path that names nothing is "no such file": a typo, said as such."""
    try:
        exists, linked = path.exists(), path.is_symlink()
    except OSError as exc:  # a name too long, a folder we may not look into
        raise BadRequest(f"{label}: cannot read it ({exc.strerror or exc})") from None
    if not exists:
        # A link is there, so no typo: it points nowhere, or (a loop) at itself.
        raise BadRequest(f"{label}: {'a symbolic link to nothing readable' if linked else 'no such file'}")
    return read_limited(path, max_bytes, label)


def _read_at_most(f: BinaryIO, limit: int) -> bytes:
    # In pieces: read(limit) reserves `limit` bytes up front, so a generous limit cost memory (or failed)
    # for a 10-byte file.
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = f.read(min(left, READ_CHUNK))
        if chunk is None:  # non-blocking, and no data yet: a file that would make the read wait
            raise BlockingIOError(errno.EAGAIN, "reading it would wait for more data")
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
