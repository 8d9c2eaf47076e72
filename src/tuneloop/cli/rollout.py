"""`tuneloop rollout status|start|promote|rollback|pause|resume`: the canary, by hand."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from tuneloop.cli.admin import open_store
from tuneloop.cli.output import add_json_flag, add_reason_flag, emit, readable
from tuneloop.config import Settings
from tuneloop.store.repository import TenantStore

if TYPE_CHECKING:
    from tuneloop.rollout.experiments import Experiment


def register(commands: Any) -> None:
    group = commands.add_parser("rollout", help="see and steer a tenant's canary")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, helptext in (
        ("status", "the live experiment and its last look"),
        ("promote", "make the canary production now"),
        ("rollback", "take the canary out of traffic now"),
        ("pause", "send all traffic to control, keep the experiment"),
        ("resume", "put a paused experiment back on its step's share"),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("--tenant", required=True)
        if name == "status":
            add_json_flag(p)
        else:
            add_reason_flag(p, f"manual {name}")
        p.set_defaults(run=cmd_rollout)
    p = actions.add_parser("start", help="canary a gated version against production")
    p.add_argument("version")
    p.add_argument("--tenant", required=True)
    p.set_defaults(run=cmd_start)


def _tenant(name: str) -> TenantStore:
    store = open_store()
    return store.for_tenant(store.tenant_by_name(name))


def cmd_start(args: argparse.Namespace) -> int:
    from tuneloop.config import tenant_policy
    from tuneloop.rollout import controller
    from tuneloop.rollout.policy import RolloutPolicy
    from tuneloop.signals.policy import RewardPolicy

    home = Settings().home
    exp = controller.start_canary(
        _tenant(args.tenant),
        args.version,
        tenant_policy(home, args.tenant, RolloutPolicy),
        reward_policy=tenant_policy(home, args.tenant, RewardPolicy),
        actor="cli",
    )
    print(f"experiment {exp.id}: {exp.treatment_version} on {exp.share:.0%} of traffic")
    design = (exp.decision or {}).get("design") or {}
    if expected := design.get("expected_decision_at"):
        print(f"expected to decide by {expected} (`tuneloop rollout status` shows the design)")
    if note := design.get("note"):
        print(note)
    return 0


# A multi-arm trial keeps equal weights over its arms: a canary's share, step and ramp say nothing of it,
# and its treatment is only its first candidate.
CANARY_ONLY = ("treatment_version", "share", "step", "step_started_at")
CANARY_POLICY = ("canary_share", "ramp", "min_samples_per_step", "approve_promotion")


def _status_view(exp: Experiment) -> Any:
    """What `status` shows: a canary as stored; a trial as its arms, without the canary's fields."""
    if not exp.arms:
        return exp
    view = {"kind": "multi-arm trial", **{k: v for k, v in asdict(exp).items() if k not in CANARY_ONLY}}
    view["policy"] = {k: v for k, v in exp.policy.items() if k not in CANARY_POLICY}
    return view


def cmd_rollout(args: argparse.Namespace) -> int:

    from tuneloop.rollout import controller
    from tuneloop.rollout.experiments import active_experiment

    tenant = _tenant(args.tenant)
    if args.action == "status":
        exp = active_experiment(tenant)
        view = _status_view(exp) if exp else None
        # With --json, no experiment is `null` rather than a sentence.
        emit(args, view, lambda: readable(view) if view else [f"{args.tenant}: no live experiment"])
        return 0
    actor = "cli"
    if args.action == "pause":
        exp = controller.pause(tenant, actor=actor, reason=args.reason)
    elif args.action == "resume":
        exp = controller.resume(tenant, actor=actor, reason=args.reason)
    else:
        outcome = "promoted" if args.action == "promote" else "rolled_back"
        live = active_experiment(tenant)
        if live is not None and not (live.decision or {}).get("test") and not live.arms:
            print(f"warning: no look has measured {live.id} yet; ending it on your word", file=sys.stderr)
        exp = controller.finish(tenant, outcome, actor=actor, reason=args.reason)
    print(f"experiment {exp.id}: {exp.state}, treatment share {exp.share:.0%}")
    return 0
