"""Files only their owner may read: HOME holds the store, snapshots, exports and spool, all personal data."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_UMASK = 0o077  # new files 0600, new folders 0700


def restrict_new_files() -> None:
    """Make every file and folder this process creates from now on private to its user."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> None:
    """Create `path` and any missing parents with mode 0700; folders that exist are left as they are."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode passes through the umask


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if missing, or take an existing one of ours down to 0600."""
    # Never open an existing file: closing any descriptor of it drops every POSIX lock this process holds
    # on it, and SQLite's locks on an open database are exactly those (another process then checkpoints
    # and deletes a WAL still in use: "file is not a database").
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    tighten(path)


def tighten(path: Path) -> None:
    """Mode 0600 (0700 for a folder) on an existing path this user owns; others' files are left alone."""
    stat = path.stat()
    if stat.st_uid == os.getuid():
        path.chmod(0o700 if path.is_dir() else 0o600)
