"""Files a user points tuneloop at are read only when regular, and never past the limit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuneloop.errors import BadRequest, PayloadTooLarge
from tuneloop.user_files import read_limited, read_named


def test_a_regular_file_within_the_limit_is_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    assert read_limited(tmp_path / "a.txt", 5, "guide") == b"hello"


def test_a_fifo_no_one_writes_to_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(BadRequest, match=r"pipe\.yaml: not a regular file"):
        read_limited(tmp_path / "pipe.yaml", 100, str(tmp_path / "pipe.yaml"))


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom"])
def test_an_endless_device_is_refused_without_reading_it(path: str) -> None:
    with pytest.raises(BadRequest, match="not a regular file"):
        read_limited(Path(path), 100, path)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="not a regular file"):
        read_limited(tmp_path, 100, "guide")


def test_a_huge_sparse_file_is_refused_by_its_size_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(2 * 1024**3)  # 2 GB, no blocks on disk
    with pytest.raises(PayloadTooLarge, match="2147483648 bytes; the limit is 100"):
        read_limited(big, 100, "big.txt")


def test_a_name_too_long_or_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="cannot read it"):
        read_limited(tmp_path / ("a" * 300), 100, "x")
    with pytest.raises(BadRequest, match="cannot read it"):
        read_limited(tmp_path / "absent", 100, "x")


def test_a_named_file_that_is_a_link_loop_or_to_nowhere_is_said_so_not_called_missing(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    for name in ("loop", "dangling"):
        with pytest.raises(BadRequest, match="a symbolic link to nothing readable"):
            read_named(tmp_path / name, 100, "x")
    with pytest.raises(BadRequest, match="no such file"):
        read_named(tmp_path / "absent", 100, "x")


def test_a_limit_far_above_the_file_costs_no_memory_and_no_overflow(tmp_path: Path) -> None:
    path = tmp_path / "small.txt"
    path.write_text("ten bytes!")
    assert read_limited(path, 10**23, "a document") == b"ten bytes!"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_proc_file_that_passes_for_a_regular_one_is_refused() -> None:
    # Size 0, yet it yields the kernel's text (and /proc/kmsg's blocking read would wait for ever).
    with pytest.raises(BadRequest, match="reports no size"):
        read_limited(Path("/proc/self/status"), 1 << 20, "prompt")
