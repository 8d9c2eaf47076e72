"""`tuneloop docs`: files a user points at are untrusted; good ones become versioned documents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tuneloop.cli import main
from tuneloop.store.repository import Store


@pytest.fixture
def tenant(tuneloop_home: Path) -> str:
    assert main(["init"]) == 0
    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}")
    store.create_tenant("acme")
    store.close()
    return "acme"


def test_docs_add_list_update_delete(tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "kb"
    (folder / "deep").mkdir(parents=True)
    (folder / "fees.md").write_text("# Fees\n\nTransfers abroad cost **0.5%**.")
    (folder / "deep" / "cards.html").write_bytes("<p>Freeze a card under Cards.</p>".encode("utf-16"))
    (folder / "notes.bin").write_bytes(b"\x00\x01")  # not a document type: skipped inside a folder

    assert main(["docs", "add", "--tenant", tenant, str(folder)]) == 0
    (folder / "fees.md").write_text("# Fees\n\nTransfers abroad cost 0.7%.")
    assert main(["docs", "add", "--tenant", tenant, str(folder / "fees.md")]) == 0
    assert main(["docs", "list", "--tenant", tenant]) == 0
    assert main(["docs", "delete", "--tenant", tenant, "cards.html"]) == 0
    out = capsys.readouterr().out.splitlines()

    assert out[:2] == ["cards.html: version 1, 1 chunks, created", "fees.md: version 1, 1 chunks, created"]
    assert out[2] == "fees.md: version 2, 1 chunks, updated"
    assert out[3].startswith("cards.html\tv1\t1 chunks") and out[4] == "fees.md\tv2\t1 chunks\tFees"
    assert out[5] == "cards.html: deleted with 1 chunks"


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("photo.png", b"\x89PNG\r\n", "unsupported file type '.png'"),
        ("blob.txt", b"abc\x00\x00def", "binary file"),
        ("latin.txt", "café".encode("latin-1"), "not valid UTF-8"),
        ("big.txt", b"a" * 2048, "the limit is 1024"),
        ("control.txt", b"\x01\x02\x03\x04" * 20, "looks binary"),
        ("empty.txt", b"", "has no text"),
        ("blank.md", b"  \n\n\t\n", "has no text"),
        ("script.html", b"<script>track()</script><style>p{}</style>", "has no text"),
    ],
    ids=["image", "nul-bytes", "latin-1", "too-big", "control-bytes", "empty", "blank", "markup-only"],
)
def test_bad_files_get_one_line_errors_and_nothing_is_added(
    tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture, name: str, data: bytes, message: str
) -> None:
    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / name).write_bytes(data)

    code = main(
        [
            "docs",
            "add",
            "--tenant",
            tenant,
            "--max-bytes",
            "1024",
            str(tmp_path / "ok.txt"),
            str(tmp_path / name),
        ]
    )

    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert main(["docs", "list", "--tenant", tenant]) == 0
    assert "no documents" in capsys.readouterr().out


def test_deleting_an_unknown_document_is_an_error(tenant: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["docs", "delete", "--tenant", tenant, "nope"]) == 1
    assert "document 'nope' not found" in capsys.readouterr().err


def test_a_folder_without_text_markdown_or_html_files_is_an_error(
    tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty, photos = tmp_path / "empty", tmp_path / "photos"
    empty.mkdir()
    photos.mkdir()
    (photos / "cat.png").write_bytes(b"\x89PNG\r\n")

    for folder in (empty, photos):
        assert main(["docs", "add", "--tenant", tenant, str(folder)]) == 1
        err = capsys.readouterr().err
        assert f"{folder}: no text, Markdown or HTML files" in err and len(err.strip().splitlines()) == 1


def test_an_email_address_in_a_file_name_is_refused_before_anything_is_added(
    tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The id would be `jane.roe-example.org.txt`: '@' is not an id character, so the id alone hides it.
    (tmp_path / "ok.md").write_text("# Fees\n\nNone.")
    (tmp_path / "jane.roe@example.org.txt").write_text("Notes on the account.")

    code = main(
        [
            "docs",
            "add",
            "--tenant",
            tenant,
            str(tmp_path / "ok.md"),
            str(tmp_path / "jane.roe@example.org.txt"),
        ]
    )

    err = capsys.readouterr().err
    assert code == 1 and "EMAIL_ADDRESS" in err and len(err.strip().splitlines()) == 1
    assert main(["docs", "list", "--tenant", tenant]) == 0
    assert "no documents" in capsys.readouterr().out


def test_a_fifo_a_device_or_a_too_long_name_is_a_one_line_error(
    tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    os.mkfifo(tmp_path / "pipe.txt")  # no writer: reading it would hang
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    for path, says in (
        (tmp_path / "pipe.txt", "not a regular file"),
        (tmp_path / "zero.txt", "not a regular file"),
        (tmp_path / ("a" * 300 + ".txt"), "File name too long"),
    ):
        code = main(["docs", "add", "--tenant", tenant, str(path)])
        err = capsys.readouterr().err
        assert code == 1 and says in err and len(err.strip().splitlines()) == 1, err


def test_a_folder_nested_deeper_than_pythons_recursion_limit_is_walked_not_a_traceback(
    tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    deepest = tmp_path / "kb"
    deepest.mkdir()
    for _ in range(1100):  # past the default recursion limit of 1000, within the system's path length
        deepest /= "a"
        deepest.mkdir()  # one level at a time: mkdir(parents=True) recurses too
    (deepest / "fees.md").write_text("# Fees\n\nTransfers abroad cost 0.5%.")

    try:
        assert main(["docs", "add", "--tenant", tenant, str(tmp_path / "kb")]) == 0
        assert capsys.readouterr().out == "fees.md: version 1, 1 chunks, created\n"
    finally:  # bottom up: pytest's recursive rmtree of tmp_path would hit the recursion limit itself
        (deepest / "fees.md").unlink()
        while deepest != tmp_path:
            deepest.rmdir()
            deepest = deepest.parent


def test_files_of_one_name_in_two_folders_are_refused_and_kept_apart_with_their_own_ids(
    tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for folder, fact in (("a", "Transfers abroad cost 0.5%."), ("b", "Cards freeze under Cards.")):
        (tmp_path / "kb" / folder).mkdir(parents=True)
        (tmp_path / "kb" / folder / "README.md").write_text(f"# {folder}\n\n{fact}")
    first, second = tmp_path / "kb" / "a" / "README.md", tmp_path / "kb" / "b" / "README.md"

    for paths in ([str(first), str(second)], [str(tmp_path / "kb")]):
        assert main(["docs", "add", "--tenant", tenant, *paths]) == 1
        err = capsys.readouterr().err
        assert f"{first} and {second} would both be document 'README.md'" in err and "--id ID" in err
        assert len(err.strip().splitlines()) == 1
    assert main(["docs", "list", "--tenant", tenant]) == 0
    assert "no documents" in capsys.readouterr().out

    assert main(["docs", "add", "--tenant", tenant, "--id", "a-readme", str(first)]) == 0
    assert main(["docs", "add", "--tenant", tenant, "--id", "b-readme", str(second)]) == 0
    assert main(["docs", "add", "--tenant", tenant, "--id", "both", str(first), str(second)]) == 1
    assert "give exactly one file" in capsys.readouterr().err
    assert main(["docs", "list", "--tenant", tenant]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in listed[-2:]] == ["a-readme", "b-readme"]
    assert listed[-2].endswith("\ta") and listed[-1].endswith("\tb")


def test_one_file_named_twice_is_one_document(
    tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "fees.md").write_text("# Fees\n\nTransfers abroad cost 0.5%.")
    monkeypatch.chdir(tmp_path)

    assert (
        main(["docs", "add", "--tenant", tenant, "kb", "kb/fees.md", str(tmp_path / "kb" / "fees.md")]) == 0
    )

    assert capsys.readouterr().out == "fees.md: version 1, 1 chunks, created\n"


def test_a_file_refused_while_adding_many_is_named_and_those_before_it_stand(
    tenant: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.md").write_text("Transfers abroad cost 0.5%.")
    (folder / "b.md").write_text("x" * 1_100_000)  # one line past what redaction reads at once
    assert main(["docs", "add", "--tenant", tenant, str(folder)]) == 1
    err = capsys.readouterr().err
    assert "error: b.md: a text of 1100000 characters is too long" in err and "1 added before it" in err
    assert main(["docs", "list", "--tenant", tenant]) == 0
    assert capsys.readouterr().out.startswith("a.md\tv1")
