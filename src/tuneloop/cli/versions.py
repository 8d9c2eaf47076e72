"""`tuneloop versions list|show|create|approve|reject|rollback|promote|retire`: a tenant's versions,
candidates composed by hand, and the governance moves an operator makes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, get_args

from tuneloop.cli.admin import open_store
from tuneloop.cli.output import add_json_flag, add_reason_flag, emit, readable
from tuneloop.cli.version_export import register_export
from tuneloop.errors import BadRequest
from tuneloop.learn.privacy import budget_text
from tuneloop.registry.composition import MAX_SYSTEM_PROMPT_CHARS
from tuneloop.registry.versions import FALLBACK, ServedKind
from tuneloop.store.repository import TenantStore
from tuneloop.user_files import read_named

DECODING_FLAGS = ("temperature", "top_p", "max_tokens", "repetition_penalty", "sources")


def register(commands: Any) -> None:
    versions = commands.add_parser("versions", help="a tenant's versions, lineage and states")
    actions = versions.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", help="every version with its state")
    p.add_argument("--tenant", required=True)
    add_json_flag(p)
    p.set_defaults(run=cmd_versions_list)
    p = actions.add_parser("show", help="one version's lineage and metrics")
    p.add_argument("version")
    p.add_argument("--tenant", required=True)
    add_json_flag(p)
    p.set_defaults(run=cmd_versions_show)
    p = actions.add_parser(
        "create",
        help="a candidate composed from a version's adapter with a system prompt and decoding settings",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--from",
        dest="parent",
        metavar="VERSION",
        help="the version whose adapter, prompt and decoding it starts from (default: production, else base)",
    )
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--system-prompt", metavar="TEXT", help="the system prompt it serves with")
    prompt.add_argument("--system-prompt-file", type=Path, metavar="PATH", help="the same, read from a file")
    p.add_argument("--temperature", type=float, metavar="X", help="default temperature, 0–2 (0: greedy)")
    p.add_argument("--top-p", type=float, metavar="X", help="default nucleus mass, (0, 1]")
    p.add_argument("--max-tokens", type=int, metavar="N", help="default cap on answer tokens, 1–32768")
    p.add_argument("--repetition-penalty", type=float, metavar="X", help="0.5–2; 1 is off")
    p.add_argument("--examples", type=int, metavar="K", help="show up to K (1–8) in-context examples")
    p.add_argument("--examples-min-reward", type=float, metavar="X", help="least reward of one, 0–1")
    p.add_argument("--examples-min-similarity", type=float, metavar="X", help="least prompt similarity, 0–1")
    p.add_argument("--best-of-n", metavar="N|auto", help="serve the best of N (2–8) answers; auto: by budget")
    p.add_argument("--latency-budget-ms", type=int, metavar="MS", help="what best-of-N auto may take")
    p.add_argument(
        "--sources", type=int, metavar="N", help="show at most N (1–20) retrieved sources, within retrieval k"
    )
    p.add_argument(
        "--snapshot", help="the snapshot the gate holds it out on, for a parent without one (e.g. the base)"
    )
    add_reason_flag(p, "composed by hand")
    p.set_defaults(run=cmd_versions_create)
    register_export(actions)
    for name, helptext in (
        ("approve", "let a candidate pending approval go to the canary, or a winning canary to production"),
        ("reject", "block a candidate pending approval, or roll back a winning canary waiting for approval"),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("version")
        p.add_argument("--tenant", required=True)
        p.add_argument("--by", required=True, metavar="NAME", help="who decides, for the audit log")
        add_reason_flag(p, f"{name}d by hand")
        p.set_defaults(run=cmd_versions_decide)
    p = actions.add_parser(
        "rollback", help="restore the previous production adapter or re-ranker now (or --to VERSION)"
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--kind", choices=get_args(ServedKind), default="adapter", help="what to roll back")
    p.add_argument("--to", metavar="VERSION", help="a retired version to restore (default: the one replaced)")
    add_reason_flag(p, "manual rollback")
    p.set_defaults(run=cmd_versions_rollback)
    for name, helptext in (
        ("promote", "make a gated or retired reward model the judge"),
        ("retire", "retire a reward model"),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("version")
        p.add_argument("--tenant", required=True)
        add_reason_flag(p, f"manual {name}")
        p.set_defaults(run=cmd_versions_reward_model)


def _light_parts(args: argparse.Namespace) -> dict[str, Any]:
    """The example policy and best-of-N the flags ask for; Decoding validates their ranges."""
    parts: dict[str, Any] = {}
    names = {
        "examples": "k",
        "examples_min_reward": "min_reward",
        "examples_min_similarity": "min_similarity",
    }
    if examples := {field: v for flag, field in names.items() if (v := getattr(args, flag)) is not None}:
        parts["examples"] = examples
    if args.best_of_n is not None or args.latency_budget_ms is not None:
        n = args.best_of_n or "auto"
        if n != "auto" and not n.isdigit():
            raise BadRequest(f"--best-of-n takes a number of answers or auto, not {n!r}", param="best_of_n")
        budget = {"latency_budget_ms": args.latency_budget_ms} if args.latency_budget_ms else {}
        parts["best_of_n"] = {"n": None if n == "auto" else int(n), **budget}
    return parts


def _tenant(name: str) -> TenantStore:
    store = open_store()
    return store.for_tenant(store.tenant_by_name(name))


def cmd_versions_list(args: argparse.Namespace) -> int:
    from tuneloop.registry.composition import made_of
    from tuneloop.registry.versions import Registry

    registry = Registry(_tenant(args.tenant))
    versions, history = registry.list(), registry.history()
    # Why each version is where it is: a `blocked` or `rolled_back` alone sends the reader to the audit log.
    why = {v: changes[-1]["reason"] for v, changes in history.items() if changes[-1]["reason"]}

    def lines() -> Iterator[str]:
        for v in versions:
            snapshot = (v.snapshot_hash or "-")[:12]
            budget = budget_text(v.metrics)
            yield (
                f"{v.id}\t{made_of(v)}\t{v.state}\tsnapshot={snapshot}\tcreated={v.created_at:%Y-%m-%d %H:%M}"
                + (f"\t{budget}" if budget else "")
                + (f"\twhy={why[v.id]}" if v.id in why else "")
            )

    listed = [{**asdict(v), "made_of": made_of(v), "why": why.get(v.id)} for v in versions]
    emit(args, listed, lines, empty="no versions yet — `tuneloop train` or the loop registers them")
    return 0


def cmd_versions_show(args: argparse.Namespace) -> int:
    from tuneloop.registry.versions import Registry

    version = Registry(_tenant(args.tenant)).get(args.version)
    emit(args, version, lambda: readable(version))
    return 0


def cmd_versions_create(args: argparse.Namespace) -> int:
    from tuneloop.config import Settings
    from tuneloop.registry.composition import Decoding, compose
    from tuneloop.registry.versions import Registry
    from tuneloop.signals.snapshots import get_snapshot

    settings = {k: v for k in DECODING_FLAGS if (v := getattr(args, k)) is not None}
    decoding = Decoding.parse({**settings, **_light_parts(args)})
    system_prompt = _read_prompt(args.system_prompt_file) if args.system_prompt_file else args.system_prompt
    tenant = _tenant(args.tenant)
    registry = Registry(tenant)
    parent = registry.get(args.parent) if args.parent else registry.production()
    version = compose(
        registry,
        parent=parent,
        base_model=Settings().model,
        actor="cli",
        reason=args.reason,
        system_prompt=system_prompt,
        decoding=decoding,
        snapshot_hash=get_snapshot(tenant, args.snapshot).hash if args.snapshot else None,
    )
    print(
        f"registered {version.id} ({version.state}) from {parent.id if parent else 'base'}", file=sys.stderr
    )
    print(version.id)
    return 0


def cmd_versions_decide(args: argparse.Namespace) -> int:
    from tuneloop.rollout import controller

    decide = controller.approve if args.action == "approve" else controller.reject
    state = decide(_tenant(args.tenant), args.version, by=args.by, reason=args.reason, via="cli")
    print(f"{args.version}: {args.action}d by {args.by}; now {state}")
    return 0


def cmd_versions_rollback(args: argparse.Namespace) -> int:
    from tuneloop.registry.versions import Registry

    rolled_back, restored = Registry(_tenant(args.tenant)).rollback(
        to=args.to, actor="cli", reason=args.reason, kind=args.kind
    )
    print(f"rolled back {rolled_back}; {restored or FALLBACK[args.kind]} serves {args.tenant} now")
    return 0


def cmd_versions_reward_model(args: argparse.Namespace) -> int:
    from tuneloop.registry.versions import Registry

    to: Literal["production", "retired"] = "production" if args.action == "promote" else "retired"
    version = Registry(_tenant(args.tenant)).set_reward_model(
        args.version, to, actor="cli", reason=args.reason
    )
    print(f"{version.id}: {version.state}")
    return 0


def _read_prompt(path: Path) -> str:
    """A prompt file's text: a readable UTF-8 file no longer than a prompt may be."""
    label = f"--system-prompt-file {path}"
    try:
        if (
            path.is_file() and path.stat().st_size > MAX_SYSTEM_PROMPT_CHARS * 4
        ):  # 4 bytes a character at most
            raise BadRequest(f"{label}: over {MAX_SYSTEM_PROMPT_CHARS} characters")
        # A folder or a device is "not a regular file", never "no such file" (that sends one looking for a
        # typo); read non-blocking and checked on the open file, as /proc/kmsg's plain read waits for ever.
        # An editor's byte order mark is no character of the prompt, which a version keeps for good.
        return read_named(path, MAX_SYSTEM_PROMPT_CHARS * 4, label).decode("utf-8-sig")
    except OSError as exc:
        raise BadRequest(f"{label}: cannot read it ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise BadRequest(f"{label}: not UTF-8 text") from None
