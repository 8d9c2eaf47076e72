"""The fast loop: how soon do users get a better production from light candidates, adapters, or both?

    .venv/bin/python benchmarks/fast_loop.py                                   # every scenario and mode
    .venv/bin/python benchmarks/fast_loop.py --scenario support --mode light-only --turns 2
    .venv/bin/python benchmarks/fast_loop.py --scenario support --first-traffic 40 --traffic 8  # smoke

Each (scenario, mode) runs in a fresh home on a fresh port: a real `tuneloop serve` process, simulated users
talking to it only through the public API (tuneloop.sim), and the tenant's loop, as `make demo` does (users
keep talking while the loop works). The modes differ only in the tenant's policy files:

- `adapter-only`: `light_policy.yaml` disabled, the rest default;
- `light-only`: `loop_policy.yaml` asks for more training rows than any run has, so turns try light
  candidates and never train;
- `both`: no policy file, every default (light candidates, then an adapter).

After each turn (its canary or multi-arm trial decided, or out of bursts) production's hidden satisfaction is
measured on the scenario's held-out prompts. Per run it prints the satisfaction before and after, and the time
to first improvement: the feedback events and wall minutes until production's satisfaction first stood
`IMPROVEMENT` above where it started (`-` if it never did). The anchor beside them is `adapter-only`, the
loop as shipped before light candidates were on by default. Long: a run is a turn or more of the demo
(about 10 minutes a turn on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

MODES = ("adapter-only", "light-only", "both")
SCENARIOS = ("support", "code-assistant", "policy-tone")
IMPROVEMENT = 0.05  # satisfaction on 32 held-out prompts moves a few points between identical versions
NEVER_TRAIN = {"min_rows": 10**9}


@dataclass
class Result:
    scenario: str
    mode: str
    before: float
    after: float
    events: int
    first_events: int | None  # feedback events until production first improved
    first_minutes: float | None
    outcomes: list[str]
    minutes: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all")
    p.add_argument("--mode", action="append", choices=MODES, help="repeatable; default: all")
    p.add_argument("--turns", type=int, default=2, help="loop turns per run")
    p.add_argument("--first-traffic", type=int, default=300, help="user turns before the first loop turn")
    p.add_argument("--traffic", type=int, default=24, help="user turns before each later loop turn")
    p.add_argument("--burst", type=int, default=48, help="user turns between looks at a live experiment")
    p.add_argument("--max-bursts", type=int, default=10, help="looks at a live experiment per turn")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/tuneloop-fast-loop"))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def write_policies(home: Path, tenant: str, mode: str) -> None:
    """The mode's policy files (none for both: the defaults)."""
    files: dict[str, dict[str, Any]] = {}
    if mode == "adapter-only":
        files["light_policy.yaml"] = {"enabled": False}
    if mode == "light-only":
        files["loop_policy.yaml"] = NEVER_TRAIN
    folder = home / "policies" / tenant
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_text(yaml.safe_dump(data))


def run_one(scenario_name: str, mode: str, args: argparse.Namespace, models: Path) -> Result:
    """One scenario under one mode, in a fresh home (sharing the converted model) on a fresh port."""
    from _learning_support import stop_server
    from scenarios import scenario_for

    from tests.postgres import free_port
    from tuneloop.config import Settings, tenant_policy
    from tuneloop.demo import USERS_AT_ONCE, beside_traffic, shipped, start_server
    from tuneloop.loop import Loop, LoopPolicy
    from tuneloop.loop.turns import TRAFFIC_STAGES
    from tuneloop.registry.versions import Registry
    from tuneloop.sim import run_traffic, satisfaction
    from tuneloop.store.repository import Store

    scenario, tenant_name = scenario_for(scenario_name, args.seed)
    home = args.workdir / f"{scenario_name}-{mode}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "models").symlink_to(models, target_is_directory=True)
    settings = Settings(home=home)
    store = Store(settings.database_url)
    row, key = store.create_tenant(tenant_name)
    tenant = store.for_tenant(row)
    write_policies(home, tenant_name, mode)
    loop = Loop(tenant, settings, tenant_policy(home, tenant_name, LoopPolicy))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(home, port)
    held_out = scenario.eval_prompts(32)

    def production_satisfaction() -> float:
        production = Registry(tenant).production()
        model = production.id if production else "tuneloop"
        return satisfaction(url, key, scenario, held_out, USERS_AT_ONCE, model=model)

    started = time.monotonic()
    print(f"\n== {scenario_name} / {mode} (home {home})", flush=True)
    try:
        before = current = production_satisfaction()
        first: tuple[int, float] | None = None
        outcomes = []
        for number in range(1, args.turns + 1):
            size = args.first_traffic if number == 1 else args.traffic
            run_traffic(url, key, scenario, size, USERS_AT_ONCE, seed=args.seed * 1000 + number)
            seeds = itertools.count(args.seed * 1000 + 100 * number)

            def burst(seeds: Iterator[int] = seeds) -> None:
                run_traffic(url, key, scenario, args.burst, USERS_AT_ONCE, seed=next(seeds))

            turn = beside_traffic(lambda: loop.tick(force=True), burst)  # users keep talking, as in the demo
            for _ in range(args.max_bursts):
                if turn is None or turn.stage not in TRAFFIC_STAGES:
                    break
                burst()
                turn = loop.tick()
            report = turn.report if turn else {}
            light = (report.get("light_trial") or {}).get("outcome", "-")
            if turn is not None and turn.stage in TRAFFIC_STAGES:
                # Still live after the bursts: the held-out users are split across its arms, so the
                # satisfaction below is the experiment's mix, not production's alone.
                light = f"{turn.stage} still live (satisfaction below mixes its arms)"
            outcomes.append(f"light {light}, adapter {turn.outcome if turn else '-'}")
            current = production_satisfaction()
            minutes = (time.monotonic() - started) / 60
            print(f"turn {number}: satisfaction {current:.3f} ({outcomes[-1]}), {minutes:.1f} min")
            for text in shipped(tenant, turn) if turn else []:
                print(f"    {text}", flush=True)
            if first is None and current >= before + IMPROVEMENT:
                first = (len(tenant.feedback()), minutes)
        events = len(tenant.feedback())
    finally:
        stop_server(server)
        store.close()
    return Result(
        scenario=scenario_name,
        mode=mode,
        before=before,
        after=current,
        events=events,
        first_events=first[0] if first else None,
        first_minutes=round(first[1], 1) if first else None,
        outcomes=outcomes,
        minutes=round((time.monotonic() - started) / 60, 1),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tuneloop.model_files import ensure_base_model

    args.workdir.mkdir(parents=True, exist_ok=True)
    models = (args.workdir / "models").resolve()
    ensure_base_model(models)
    runs = [(s, m) for s in args.scenario or SCENARIOS for m in args.mode or MODES]
    results = [run_one(s, m, args, models) for s, m in runs]
    print(f"\nfast loop, {args.turns} turns per run; first improvement: +{IMPROVEMENT} satisfaction")
    print(f"{'scenario':<16} {'mode':<13} {'before':>6} {'after':>6} {'events':>6} {'first at':>16}  time")
    for r in results:
        first = f"{r.first_events} ev/{r.first_minutes} min" if r.first_events is not None else "-"
        print(
            f"{r.scenario:<16} {r.mode:<13} {r.before:>6.3f} {r.after:>6.3f} {r.events:>6} {first:>16}  "
            f"{r.minutes} min"
        )
    out = args.workdir / "results.json"
    out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
