"""`tuneloop train reward|adapter`: learn from snapshots (`tuneloop versions` shows the results)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from tuneloop.cli.admin import open_store
from tuneloop.cli.output import EXIT_INTERRUPTED, Progress
from tuneloop.config import Settings, read_yaml
from tuneloop.errors import BadRequest
from tuneloop.learn.privacy import budget_from, budget_text, dp_trainer_args
from tuneloop.store.repository import TenantStore


def register(commands: Any) -> None:
    train = commands.add_parser("train", help="train a reward model or an adapter from a snapshot")
    actions = train.add_subparsers(dest="action", required=True, metavar="WHAT")
    p = actions.add_parser(
        "reward", help="a Bradley–Terry reward model (LoRA + score head, or --fast MiniLM)"
    )
    _common(p)
    p.add_argument(
        "--fast", action="store_true", help="MiniLM embeddings + logistic head: seconds, not minutes"
    )
    p.add_argument(
        "--dp-epsilon",
        type=float,
        metavar="EPS",
        help="train by DP-SGD within this privacy budget ε per preference pair (with --fast)",
    )
    p.add_argument(
        "--dp-delta", type=float, metavar="DELTA", help="δ of the budget (default min(1e-5, 1/(10·pairs)))"
    )
    p.add_argument(
        "--dp-max-grad-norm", type=float, metavar="C", help="per-pair gradient clipping bound (default 1.0)"
    )
    p.set_defaults(run=cmd_train_reward)
    p = actions.add_parser("adapter", help="a LoRA adapter with DPO or KTO (base weights frozen)")
    _common(p)
    p.add_argument("--method", choices=["dpo", "kto"], default="dpo")
    p.add_argument(
        "--amplify",
        type=int,
        default=0,
        metavar="K",
        help="also sample K answers per prompt and add best-vs-worst pairs judged by the reward model",
    )
    p.add_argument("--system-prompt", help="serve this version with this system prompt")
    p.set_defaults(run=cmd_train_adapter)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", required=True)
    p.add_argument("--snapshot", required=True, help="snapshot hash (or a unique prefix of 6+ characters)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a TRL trainer argument, e.g. --set learning_rate=5e-5 (repeatable)",
    )
    p.add_argument(
        "--lora", action="append", default=[], metavar="KEY=VALUE", help="a peft.LoraConfig argument"
    )


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadRequest(f"{flag} {item!r}: use KEY=VALUE")
        try:  # read as a settings file is: a value is untrusted like any file's
            out[key] = read_yaml(value.encode())
        except ValueError as exc:
            raise BadRequest(f"{flag} {key}: {exc}") from None
    return out


def _tenant(name: str) -> TenantStore:
    store = open_store()
    return store.for_tenant(store.tenant_by_name(name))


def _privacy(args: argparse.Namespace) -> dict[str, Any]:
    """The --dp-* flags as the trainer_args of a DP-SGD job; none given: no privacy."""
    flags = {"epsilon": args.dp_epsilon, "delta": args.dp_delta, "max_grad_norm": args.dp_max_grad_norm}
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return {}
    if args.dp_epsilon is None:
        raise BadRequest("--dp-delta and --dp-max-grad-norm refine a budget: add --dp-epsilon")
    if not args.fast:
        raise BadRequest("differential privacy trains the fast reward model only: add --fast")
    return dp_trainer_args(budget_from({"dp": given}))


def _run(
    args: argparse.Namespace, method: str, trainer_args: dict[str, Any] | None = None, **extra: Any
) -> int:
    from tuneloop.learn.runs import train_version

    cancel = threading.Event()
    started = time.monotonic()

    def progress(step: int, total: int, eta: float | None) -> None:
        eta_text = f"{eta:.0f}s" if eta is not None else "?"
        print(
            f"\r{method}: step {step}/{total}, eta {eta_text}, elapsed {time.monotonic() - started:.0f}s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    tenant, settings = _tenant(args.tenant), Settings()
    given, lora = {**_pairs(args.set, "--set"), **(trainer_args or {})}, _pairs(args.lora, "--lora")
    try:
        with Progress().stage(f"{method} on snapshot {args.snapshot[:12]}"):
            # Step 1 can be minutes away (loading the model; scoring every pair with the frozen reference).
            first = "reference log-probs of every pair, then step 1" if method in ("dpo", "kto") else "step 1"
            print(f"{method}: loading the model and the pairs; {first} follows", file=sys.stderr)
            version = train_version(
                tenant,
                settings,
                args.snapshot,
                method,  # type: ignore[arg-type]
                trainer_args=given,
                lora=lora,
                seed=args.seed,
                progress=progress,
                cancel=cancel,
                **extra,
            )
            print(file=sys.stderr)  # ends the step line
    except KeyboardInterrupt:
        cancel.set()
        print("cancelled; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    if version is None:
        print("cancelled; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    verdict = None
    if version.kind == "reward_model" and version.state == "candidate":
        from tuneloop.evaluate.judge import appoint_judge
        from tuneloop.registry.versions import Registry

        # The same rule the loop applies: a fit reward model judges the gate's reward-model suite next.
        verdict = appoint_judge(tenant, settings, version, actor="cli")
        version = Registry(tenant).get(version.id)  # production or blocked now
    print(f"registered {version.kind} {version.id} ({version.state})", file=sys.stderr)
    if budget := budget_text(version.metrics):
        print(f"privacy budget spent: {budget}", file=sys.stderr)
    if verdict is not None:
        print(f"reward model {version.id} {verdict['verdict']}; judge: {verdict['judge']}", file=sys.stderr)
        if verdict["judge"] == version.id and verdict["accuracy"] <= 0.5:
            print(
                f"warning: it orders {verdict['accuracy']:.0%} of {verdict['measured_on']} as the humans "
                "did, no better than chance: the gate's reward-model suite says little until more pairs come",
                file=sys.stderr,
            )
    print(version.id)
    return 0


def cmd_train_reward(args: argparse.Namespace) -> int:
    trainer_args = _privacy(args)  # before anything is loaded: a bad budget fails fast
    return _run(args, "reward_embedding" if args.fast else "reward", trainer_args)


def cmd_train_adapter(args: argparse.Namespace) -> int:
    from tuneloop.registry.composition import check_system_prompt

    if args.amplify < 0:
        raise BadRequest(f"--amplify {args.amplify}: give 0 (human pairs only) or more samples per prompt")
    prompt = args.system_prompt
    return _run(
        args,
        args.method,
        amplify_k=args.amplify,
        system_prompt=check_system_prompt(prompt) if prompt is not None else None,
    )
