"""Tenant isolation at learning time: does each tenant improve while the other's KPI holds?

    .venv/bin/python benchmarks/two_tenants.py --model tiny --budget 60   # smoke run, a few minutes
    .venv/bin/python benchmarks/two_tenants.py                            # smollm2, 250 events a tenant

One real `tuneloop serve` process serves the base model to two tenants whose simulated users want opposite
things (`two-tenants`: concise against detailed). Each tenant's traffic runs until it has stored `budget`
feedback events; each then gets a tuneloop DPO adapter from its own snapshot. The adapters are promoted one
at a time, and after every promotion both tenants' production is scored through the server (temperature 0,
the scenario's held-out prompts, the users' hidden preference). The goal: each tenant's satisfaction rises
with its own adapter, and moves by at most 2 points when the other tenant's adapter is promoted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

GOAL_OTHER_POINTS = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("tiny", "smollm2"), default="smollm2")
    p.add_argument("--budget", type=int, default=250, help="feedback events per tenant")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tuneloop-two-tenants"))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from _learning_support import Traffic, fresh_home, stop_server, traffic_to_budget

    from tests.postgres import free_port
    from tuneloop.config import tenant_policy
    from tuneloop.demo import USERS_AT_ONCE, start_server
    from tuneloop.learn.runs import train_version
    from tuneloop.registry.versions import Registry
    from tuneloop.serve.routing import STATE_TTL_SECONDS
    from tuneloop.signals.policy import RewardPolicy
    from tuneloop.signals.snapshots import create_snapshot
    from tuneloop.sim import satisfaction, two_tenants

    model_dir, settings, store = fresh_home(args.workdir, args.model)
    home = settings.home
    scenarios = two_tenants(seed=args.seed)
    tenants = {name: store.create_tenant(name) for name in scenarios}
    scoped = {name: store.for_tenant(row) for name, (row, _) in tenants.items()}
    started = time.monotonic()
    print(f"two-tenants benchmark: model {args.model}, {args.budget} feedback events a tenant", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(home, port, {"TUNELOOP_MODEL": str(model_dir)})
    kpis: list[dict[str, Any]] = []

    def measure(stage: str) -> None:
        time.sleep(STATE_TTL_SECONDS + 0.5)  # past the gateway's cache of the tenant's production version
        row = {"stage": stage}
        for name, scenario in scenarios.items():
            key = tenants[name][1]
            row[name] = satisfaction(url, key, scenario, concurrency=USERS_AT_ONCE)
        kpis.append(row)
        print(f"  {stage:<28} " + "  ".join(f"{n} {row[n]:.3f}" for n in scenarios), flush=True)

    try:
        measure("base (both tenants)")
        adapters = {}
        for name, scenario in scenarios.items():
            key = tenants[name][1]
            events = traffic_to_budget(
                url, key, scenario, scoped[name], args.budget, Traffic(), concurrency=USERS_AT_ONCE
            )
            snap = create_snapshot(scoped[name], home, tenant_policy(home, name, RewardPolicy), actor="bench")
            version = train_version(scoped[name], settings, snap.hash, "dpo", seed=args.seed)
            adapters[name] = version
            print(
                f"{name}: {events} events, {snap.counts.get('pairs_train')} train pairs, "
                f"adapter {version.id} (final loss {version.metrics.get('final_loss', float('nan')):.3g})",
                flush=True,
            )
        for name, version in adapters.items():
            registry = Registry(scoped[name])
            registry.move(version.id, "gated", actor="bench", reason="two-tenants benchmark")
            registry.move(version.id, "production", actor="bench", reason="two-tenants benchmark")
            measure(f"after promoting {name}")
    finally:
        stop_server(server)

    print_goals(kpis, list(scenarios))
    out = args.workdir / f"results-{args.model}.json"
    out.write_text(json.dumps({"args": vars(args) | {"workdir": str(args.workdir)}, "kpis": kpis}, indent=2))
    print(f"total {time.monotonic() - started:.0f}s; details in {out}")
    return 0


def print_goals(kpis: list[dict[str, Any]], names: list[str]) -> None:
    """Own gain at each tenant's promotion, and the other tenant's move at that same promotion."""
    for before, after in itertools.pairwise(kpis):
        promoted = after["stage"].removeprefix("after promoting ")
        (other,) = [n for n in names if n != promoted]
        gain = (after[promoted] - before[promoted]) * 100
        moved = (after[other] - before[other]) * 100
        verdict = "PASS" if gain > 0 and abs(moved) <= GOAL_OTHER_POINTS else "FAIL"
        print(
            f"{promoted}: {gain:+.1f} points with its own adapter; {other} moved {moved:+.1f} points "
            f"(goal: a gain, and the other within ±{GOAL_OTHER_POINTS:.0f}): {verdict}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
