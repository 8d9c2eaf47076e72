"""`tuneloop docs add|list|delete|rerank`: a tenant's retrieval collection and its learned re-ranker."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from tuneloop.capture.events import ID_MAX, is_id
from tuneloop.cli.admin import open_capture, open_store
from tuneloop.cli.output import EXIT_BLOCKED, EXIT_OK, Progress, add_json_flag, emit, positive_int
from tuneloop.config import Settings
from tuneloop.errors import BadRequest, TuneloopError
from tuneloop.retrieve.extract import FORMATS, MAX_FILE_BYTES, format_of, read_file, to_text
from tuneloop.store.repository import TenantStore

_NOT_ID = re.compile(r"[^A-Za-z0-9._:\-]+")


def register(commands: Any) -> None:
    docs = commands.add_parser("docs", help="documents retrieval grounds answers in").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = docs.add_parser("add", help="add or update text, Markdown and HTML files (folders: their files)")
    p.add_argument("--tenant", required=True)
    p.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    p.add_argument("--max-bytes", type=positive_int, default=MAX_FILE_BYTES, help="largest file accepted")
    p.add_argument(
        "--id",
        dest="document_id",
        metavar="ID",
        help="the document id of the one file given (default: its name); keeps files of one name apart",
    )
    add_json_flag(p)
    p.set_defaults(run=cmd_add)

    p = docs.add_parser("list", help="the tenant's documents, versions and chunk counts")
    p.add_argument("--tenant", required=True)
    add_json_flag(p)
    p.set_defaults(run=cmd_list)

    p = docs.add_parser("delete", help="delete documents by id (no retrieval shows them again)")
    p.add_argument("--tenant", required=True)
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(run=cmd_delete)

    p = docs.add_parser(
        "rerank",
        help="decide the re-ranker on canary, or train one on new source feedback, gate it and put it on "
        "canary (the loop's turn does the same)",
    )
    p.add_argument("--tenant", required=True)
    add_json_flag(p)
    p.set_defaults(run=cmd_rerank)


def _tenant(name: str) -> TenantStore:
    store = open_store()
    return store.for_tenant(store.tenant_by_name(name))


def document_id(path: Path) -> str:
    """A file's document id: its name, with characters ids cannot hold replaced by '-'."""
    name = _NOT_ID.sub("-", path.name).strip("-")[:ID_MAX]
    return name if is_id(name) else "document"


def files_of(paths: list[Path]) -> list[Path]:
    """The files named, and the text, Markdown and HTML files inside named folders (symlinks skipped)."""
    found = []
    for path in paths:
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except OSError as exc:  # a name too long, a folder we may not look into
            raise BadRequest(f"{path}: cannot read it ({exc.strerror or exc})") from None
        if is_dir:
            inside = _files_inside(path)
            if not inside:
                raise BadRequest(
                    f"{path}: no text, Markdown or HTML files in this folder ({', '.join(sorted(FORMATS))})"
                )
            found += inside
        elif exists:
            found.append(path)
        else:
            raise BadRequest(f"{path}: no such file or folder")
    ids: dict[str, Path] = {}
    unique: list[Path] = []
    for path in found:
        clash = ids.setdefault(document_id(path), path)
        if clash is path:
            unique.append(path)
        elif clash != path and clash.resolve() != path.resolve():
            # Either would silently become the other's next version: refuse before anything is added. (One
            # file named twice, as `kb` and `kb/fees.md` or by two spellings of its path, is one document.)
            raise BadRequest(
                f"{clash} and {path} would both be document {document_id(path)!r}; nothing was added. "
                "Rename one, or add each alone under an id of its own: "
                "`tuneloop docs add --tenant NAME --id ID PATH`"
            )
    return unique


def _files_inside(folder: Path) -> list[Path]:
    """The text, Markdown and HTML files anywhere under `folder`, sorted; symlinks are not followed."""
    # A stack, not recursion: `rglob` recursed once per level, so a tree 1,000 folders deep ended in
    # RecursionError's traceback instead of a line.
    found: list[Path] = []
    folders = [folder]
    while folders:
        current = folders.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False) and Path(entry.name).suffix.lower() in FORMATS:
                        found.append(Path(entry.path))
        except OSError as exc:  # a folder we may not look into, a path grown past the system's limit
            raise BadRequest(f"{current}: cannot read it ({exc.strerror or exc})") from None
    return sorted(found)


def cmd_add(args: argparse.Namespace) -> int:
    from tuneloop.retrieve.documents import check_document_id, put_document

    one_file = "--id names the document of one file: give exactly one file, not a folder"
    if args.document_id is not None and len(args.paths) != 1:
        raise BadRequest(one_file)
    files = files_of(args.paths)
    if args.document_id is not None and args.paths[0].is_dir():
        raise BadRequest(one_file)
    if args.document_id is not None and not is_id(args.document_id):
        raise BadRequest(
            f"--id {args.document_id[:ID_MAX]!r}: an id is 1 to {ID_MAX} letters, digits and . _ : -"
        )
    ids = {path: args.document_id or document_id(path) for path in files}
    # All checked before any is added, but only one file's text is held at a time: a folder of thousands
    # of large files must not all sit in memory at once. Each is read again (and checked again) to add it.
    for path in files:
        fmt = format_of(path)
        if not to_text(read_file(path, args.max_bytes), fmt):
            raise BadRequest(f"{path.name}: has no text once extracted from {fmt}; nothing was added")
    tenant = _tenant(args.tenant)
    capture = open_capture()
    for path in files:
        # The id is the file name with what ids cannot hold replaced ('@' by '-'), which hides an email
        # address from the check put_document makes on the id; so the name is checked as it is, without
        # its extension (`jane@example.org.md` reads as an address in the domain `org.md`). An id given
        # with --id is stored instead of the name, so it is the one checked.
        check_document_id(tenant, capture, args.document_id or path.stem)
    progress = Progress.of(args)
    results = []
    for path in files:
        named = ids[path] if ids[path] == path.name else f"{ids[path]} ({path.name})"  # as the result says
        with progress.stage(f"{named}: redact, chunk, embed"):
            try:  # read again too: a file changed or removed since the check is this file's error
                raw = read_file(path, args.max_bytes)
                results.append(
                    put_document(tenant, capture, ids[path], raw, format_of(path), budget=False, actor="cli")
                )
            except TuneloopError as exc:  # which of many files it was, and that the ones before it stand
                added = f"; {len(results)} added before it" if results else ""
                named_in = exc.message.startswith(f"{path.name}: ")  # read_file's errors name the file
                exc.message = f"{'' if named_in else f'{path.name}: '}{exc.message}{added}"
                raise
    emit(
        args,
        results,
        lambda: (f"{r.id}: version {r.version}, {r.chunks} chunks, {r.status}" for r in results),
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from tuneloop.retrieve.documents import list_documents

    docs = list_documents(_tenant(args.tenant))
    emit(
        args,
        docs,
        lambda: (f"{d['id']}\tv{d['version']}\t{d['chunks']} chunks\t{d['title']}" for d in docs),
        empty="no documents — add some with `tuneloop docs add --tenant NAME PATH`",
    )
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    from tuneloop.retrieve.documents import delete_document

    tenant = _tenant(args.tenant)
    for doc in args.ids:
        print(f"{doc}: deleted with {delete_document(tenant, doc, actor='cli')} chunks")
    return EXIT_OK


def cmd_rerank(args: argparse.Namespace) -> int:
    from tuneloop.retrieve.training import retrain

    with Progress.of(args).stage("the re-ranker's canary and training"):
        report = retrain(_tenant(args.tenant), Settings().home, actor="cli")
    emit(args, report, lambda: _describe_rerank(report))
    return EXIT_BLOCKED if report.get("state") == "blocked" else EXIT_OK


def _describe_rerank(report: dict) -> list[str]:
    lines = []
    if canary := report.get("canary"):
        tally = f"favoured in {canary['wins']} of {canary['decisive']} decisive retrievals"
        lines.append(f"canary {canary['version']}: {canary['state']}, {tally}")
    if "version" in report:
        lines.append(f"{report['version']} {report['state']}: {report['reason']}")
    if "skipped" in report:
        lines.append(f"no new re-ranker: {report['skipped']}")
    return lines
