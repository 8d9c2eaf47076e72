"""`tuneloop snapshot create|list|show|export`: freeze a tenant's training data and get it out."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tuneloop.cli.admin import open_store
from tuneloop.cli.output import Progress, add_json_flag, emit, readable
from tuneloop.config import Settings
from tuneloop.errors import BadRequest
from tuneloop.privacy.residue import EXPORT_CARD
from tuneloop.store.repository import TenantStore


def register(commands: Any) -> None:
    group = commands.add_parser("snapshot", help="freeze a tenant's signals into a reproducible dataset")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("create", help="build and register a snapshot; prints its hash")
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--policy", type=Path, help="reward policy YAML (default: the tenant's, else the defaults)"
    )
    add_json_flag(p)
    p.set_defaults(run=cmd_create)
    p = actions.add_parser("list", help="a tenant's snapshots")
    p.add_argument("--tenant", required=True)
    add_json_flag(p)
    p.set_defaults(run=cmd_list)
    p = actions.add_parser("show", help="one snapshot's counts, policy and rater report")
    p.add_argument("hash")
    p.add_argument("--tenant", required=True)
    add_json_flag(p)
    p.set_defaults(run=cmd_show)
    p = actions.add_parser(
        "export", help="write a snapshot as a dataset folder (TRL's JSONL formats) `datasets` loads as is"
    )
    p.add_argument("hash")
    p.add_argument("--tenant", required=True)
    p.add_argument("--format", choices=["trl"], default="trl")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=cmd_export)


def _tenant(name: str) -> TenantStore:
    store = open_store()
    return store.for_tenant(store.tenant_by_name(name))


def cmd_create(args: argparse.Namespace) -> int:
    from tuneloop.config import tenant_policy
    from tuneloop.signals.policy import RewardPolicy
    from tuneloop.signals.snapshots import create_snapshot

    home = Settings().home
    tenant = _tenant(args.tenant)
    progress = Progress.of(args)
    policy = tenant_policy(home, args.tenant, RewardPolicy, args.policy)
    with progress.stage(f"snapshot of {args.tenant}'s signals"):
        snap = create_snapshot(tenant, home, policy)
    progress.say(f"snapshot {snap.hash[:12]} ({', '.join(f'{k}={v}' for k, v in snap.counts.items())})")
    emit(args, {"hash": snap.hash, "counts": snap.counts}, lambda: [snap.hash])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from tuneloop.signals.snapshots import DATASETS, list_snapshots

    snaps = list_snapshots(_tenant(args.tenant))

    def lines() -> Iterator[str]:
        for s in snaps:
            sizes = "\t".join(f"{d}={s.counts[d + '_train']}+{s.counts[d + '_heldout']}" for d in DATASETS)
            yield f"{s.hash[:12]}\t{s.created_at:%Y-%m-%d %H:%M}\t{sizes}"

    emit(args, [_summary(s) for s in snaps], lines, empty="no snapshots yet — `tuneloop snapshot create`")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from tuneloop.signals.snapshots import get_snapshot

    snap = get_snapshot(_tenant(args.tenant), args.hash)
    shown = {**_summary(snap), "path": str(snap.path), "report": snap.report, "policy": snap.policy}
    emit(args, shown, lambda: readable(shown))
    return 0


def _summary(snap: Any) -> dict[str, Any]:
    return {"hash": snap.hash, "created_at": snap.created_at, "as_of": snap.as_of, "counts": snap.counts}


def cmd_export(args: argparse.Namespace) -> int:
    from tuneloop.signals.snapshots import export_trl, get_snapshot

    snap = get_snapshot(_tenant(args.tenant), args.hash)
    try:
        _check_out(args.out)
        written = export_trl(snap, args.out)
        (args.out / "README.md").write_text(dataset_card(written, snap.tenant_id, snap.hash))
    except OSError as exc:  # a full disk, a read-only folder
        raise BadRequest(f"--out {args.out}: cannot write the export ({exc.strerror or exc})") from None
    for path in written:
        print(path)
    return 0


def _check_out(out: Path) -> None:
    """Refuse an --out that is not a folder, or a folder holding files an export would not write: the
    export overwrites its README.md (`--out .` in a project would replace the project's README)."""
    if out.exists() and not out.is_dir():
        raise BadRequest(f"--out {out}: exists and is not a folder; name a new (or empty) folder")
    ours = {f"{name}_{split}.jsonl" for name in CONFIGS for split in ("train", "heldout")} | {"README.md"}
    others = sorted(p.name for p in out.iterdir() if p.name not in ours) if out.is_dir() else []
    if others:
        raise BadRequest(f"--out {out}: holds other files ({others[0]!r}, ...); name a new (or empty) folder")


# export_trl's file stems -> the `datasets` config they form; the held-out rows are the standard `test` split.
CONFIGS = {
    "preference": "prompt, chosen, rejected",
    "unpaired": "prompt, completion, label",
    "sft": "messages",
}


def dataset_card(files: list[Path], tenant_id: str, snapshot: str) -> str:
    """A README.md whose YAML header maps the exported files to configs and train/test splits, so that
    `datasets.load_dataset(DIR)` (the preference pairs) or `load_dataset(DIR, "sft")` read the folder.

    An empty file is left out (`datasets` refuses a split with no rows), and so is a config with none. The
    card names the tenant: an erasure under HOME changes only its own tenant's exports (privacy.residue)."""
    filled = {path.name for path in files if path.stat().st_size > 0}
    configs: list[dict[str, Any]] = []
    for name in CONFIGS:
        stems = (("train", "train"), ("test", "heldout"))
        splits = [{"split": split, "path": f"{name}_{stem}.jsonl"} for split, stem in stems]
        splits = [s for s in splits if s["path"] in filled]
        if splits:
            configs.append(
                {"config_name": name, "data_files": splits, **({} if configs else {"default": True})}
            )
    header = yaml.safe_dump({"configs": configs}, sort_keys=False)
    body = "\n".join(f"- `{name}`: {columns}" for name, columns in CONFIGS.items())
    said = f"{EXPORT_CARD} (tenant {tenant_id}, snapshot {snapshot}) in TRL's conversational formats."
    return f"---\n{header}---\n\n{said}\n\n{body}\n"
