"""`make demo`: the closed loop on the embedded defaults, end to end, through the public API.

A real `tuneloop serve` process serves SmolLM2; simulated Finly users (tuneloop.sim) talk to it with the
official `openai` client and send feedback over HTTP; the tenant's loop turns that into light candidates
(in-context examples, a prompt) on a trial, a reward model, a DPO adapter, a gate decision and a canary.
Each turn prints what production scores on the users' hidden preference, which tuneloop never sees.
The run ends with an HTML report and a PNG plot.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from tuneloop.cli.output import Progress
from tuneloop.config import Settings, tenant_policy_file
from tuneloop.errors import BadRequest, Conflict, TuneloopError
from tuneloop.loop import Loop
from tuneloop.loop.turns import TRAFFIC_STAGES, Turn
from tuneloop.monitor.process import peak_memory_mb
from tuneloop.registry.versions import Registry
from tuneloop.retrieve.policy import RetrievalPolicy
from tuneloop.rollout.experiments import list_experiments
from tuneloop.serve.routing import PRODUCTION
from tuneloop.sim import Behaviour, Scenario, SimError, run_traffic, satisfaction, support
from tuneloop.store.repository import Store, TenantStore

TENANT = "finly"
# The simulated app's own settings (docs/demo.md): users 32 at a time, at the temperature a support bot asks
# for, and enough customers for the canary to randomise. The server runs on its defaults.
USERS_AT_ONCE = 32
TEMPERATURE = 0.3
USERS = 400


@dataclass
class TurnLine:
    turn: int
    events: int
    satisfaction: float
    positive_rate: float | None
    gate: str
    canary: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    # Production measured again whenever another version reached it during the turn: (feedback events into
    # the turn, satisfaction on the held-out prompts, the version).
    measured: list[tuple[int, float, str]] = field(default_factory=list)


class Promotions:
    """Between bursts of users, measures production on the held-out prompts whenever another version has
    reached it: a light candidate promoted minutes into a turn serves users from then on, and the turn's
    row, measured before it, would not show what they got until the next turn."""

    def __init__(self, tenant: TenantStore, measure: Callable[[], float], events_before: int) -> None:
        self.tenant = tenant
        self.measure = measure
        self.events_before = events_before
        self.seen = _production(tenant)
        self.measured: list[tuple[int, float, str]] = []

    def look(self) -> None:
        """Measure production if it changed since the last look."""
        now = _production(self.tenant)
        if now != self.seen:
            self.seen = now
            events = len(self.tenant.feedback()) - self.events_before
            self.measured.append((events, self.measure(), now))


def _production(tenant: TenantStore) -> str:
    version = Registry(tenant).production()
    return version.id if version else "the base model"


def start_server(home: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`tuneloop serve` as a child process with TUNELOOP_HOME=`home` (and `env`), once /healthz answers."""
    env = {**os.environ, "TUNELOOP_HOME": str(home), **(env or {})}
    _refuse_taken(port)  # else another server's /healthz on the port would pass for ours
    with (home / "server.log").open("w") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuneloop", "serve", "--port", str(port)],
            env=env,
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TuneloopError(f"the server exited; see {home / 'server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(1)
    proc.kill()
    raise TuneloopError(f"the server did not start in 10 minutes; see {home / 'server.log'}")


def _refuse_taken(port: int) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise Conflict(f"port {port} is in use; pass another with --port", param="port")


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (progress bars and trainer logs included) to `log`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with log.open("a") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def beside_traffic(tick: Callable[[], Turn | None], burst: Callable[[], None]) -> Turn | None:
    """`tick()` in a thread while `burst()` keeps users talking to the server, as they do in production: a
    turn's light trial gets its traffic while the adapter trains, and training shares the cores with
    serving."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneloop-demo-loop") as pool:
        ticking = pool.submit(tick)
        while not ticking.done():
            burst()
        return ticking.result()


def shipped(tenant: TenantStore, turn: Turn) -> list[str]:
    """What reached production during `turn`, one line each: what it was, the experiment's verdict, and the
    minutes and feedback events after the turn started that it took (a turn's time to improvement)."""
    light = turn.report.get("light", {}).get("candidates", [])
    reasons = {c["version"]: c["reason"] for c in light if "version" in c}
    received = [e["received_at"] for e in tenant.feedback(since=turn.started_at)]
    lines = []
    for exp in list_experiments(tenant):
        if exp.state != "promoted" or exp.started_at < turn.started_at or exp.ended_at is None:
            continue
        decision = exp.decision or {}
        arm = decision.get("winner")
        test = decision["tests"].get(arm, {}) if exp.arms and arm else decision.get("test", {})
        version = exp.version_of(arm) if exp.arms and arm else exp.treatment_version
        what = f"light candidate: {reasons[version]}" if version in reasons else "adapter"
        verdict = "by hand"
        if test:
            verdict = f"{test['effect']:+.2f} [{test['ci_low']:+.2f}, {test['ci_high']:+.2f}]"
        minutes = (exp.ended_at - turn.started_at).total_seconds() / 60
        events = sum(1 for at in received if at <= exp.ended_at)
        lines.append(
            f"{version} ({what}) promoted {verdict}, {minutes:.1f} min and {events} feedback events into "
            f"turn {turn.turn}"
        )
    return lines


def timed(turn: Turn) -> list[str]:
    """A finished loop turn's stages, each with the minutes and feedback events into the turn at its end."""
    if turn.stage != "done":
        return []
    stages = " → ".join(
        f"{t['stage']} {t['minutes']:.1f} min/{t['events']}" for t in turn.report.get("timeline", [])
    )
    return [f"loop turn {turn.turn} ({turn.outcome}), each stage's end in minutes/events: {stages}"]


def finly(seed: int = 0) -> Scenario:
    """The demo's application: the `support` scenario as Finly runs it (its users, its temperature)."""
    return replace(support(seed=seed), behaviour=Behaviour(users=USERS), temperature=TEMPERATURE)


def run_demo(
    home: Path,
    *,
    scenario: Scenario | None = None,
    tenant_name: str = TENANT,
    turns: int = 2,
    first_traffic: int = 300,
    traffic: int = 24,
    canary_burst: int = 48,
    max_bursts: int = 10,
    port: int = 8765,
    seed: int = 0,
) -> list[TurnLine]:
    """Run `turns` turns of the loop on `scenario` (default: Finly's support bot) for a new tenant with no
    policy files; print a line per turn; write the report.

    The first turn collects `first_traffic` user turns; later turns add `traffic` to what the previous
    canary's traffic already brought in (a canary's answers and feedback are the next turn's data). While
    the loop works, users keep coming in bursts of `canary_burst`; after it, up to `max_bursts` bursts
    each end with a look at the live trial or canary."""
    from tuneloop.model_files import ensure_base_model

    if turns < 1:
        raise BadRequest(f"turns must be at least 1, got {turns}", param="turns")
    _refuse_taken(port)  # before anything is wiped or started
    for old in home.glob("*") if home.exists() else []:  # a fresh run, but keep the converted model
        if old.name != "models":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home)
    progress = Progress()  # stage lines on stderr: a turn runs for minutes with no table line
    with progress.stage("the embedded model (converted once)"):
        ensure_base_model(home / "models")
    store = Store(settings.database_url)
    tenant, key = store.create_tenant(tenant_name)
    scoped = store.for_tenant(tenant)
    loop = Loop(scoped, settings)
    scenario = scenario or finly(seed)
    if scenario.documents:  # the app answers from its help centre: retrieval on in the gateway
        retrieval = tenant_policy_file(home, tenant_name, RetrievalPolicy.filename)
        retrieval.parent.mkdir(parents=True, exist_ok=True)
        retrieval.write_text("enabled: true\n")
    held_out = scenario.eval_prompts(32)  # the same held-out prompts score production every turn
    url = f"http://127.0.0.1:{port}"
    with progress.stage(f"tuneloop serve on {url}"):
        server = start_server(home, port)
    if scenario.documents:
        with progress.stage(f"the app's {len(scenario.documents)} documents"):
            add_documents(url, key, scenario.documents)
    lines: list[TurnLine] = []
    printed: set[str] = set()  # what shipped, said once however many demo turns a loop turn spans
    log = home / "loop.log"
    began = time.monotonic()
    print(f"tuneloop demo: tenant '{tenant_name}' on {url}, scenario '{scenario.name}', {turns} turns")
    print(f"(training and evaluation output goes to {log}, the server's to {home / 'server.log'})")
    header = ("turn", 4), ("events", 7), ("satisfaction", 12), ("positive", 9), ("gate", 8), ("canary", 12)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'time':>6}")
    try:
        for number in range(1, turns + 1):
            started = time.monotonic()
            before = len(scoped.feedback())
            with progress.stage(f"turn {number}: production on {len(held_out)} held-out prompts"):
                sat = satisfaction(url, key, scenario, held_out, USERS_AT_ONCE, model=PRODUCTION)
            size = first_traffic if number == 1 else traffic
            with progress.stage(f"turn {number}: {size} simulated conversations with feedback"):
                report = run_traffic(url, key, scenario, size, USERS_AT_ONCE, seed=seed * 1000 + number)
            seeds = itertools.count(seed * 1000 + 100 * number)
            promotions = Promotions(
                scoped,
                partial(satisfaction, url, key, scenario, held_out, USERS_AT_ONCE, model=PRODUCTION),
                before,
            )

            def burst(seeds: Iterator[int] = seeds, promotions: Promotions = promotions) -> None:
                run_traffic(url, key, scenario, canary_burst, USERS_AT_ONCE, seed=next(seeds))
                promotions.look()

            loop_stage = (
                f"turn {number}: light candidates → snapshot → reward model → adapter → gate → canary "
                "(users keep talking meanwhile)"
            )
            with progress.stage(loop_stage), _output_to(log):
                turn = beside_traffic(lambda: loop.tick(force=True), burst)
            bursts = 0
            while turn is not None and turn.stage in TRAFFIC_STAGES and bursts < max_bursts:
                look = f"turn {number}: {turn.stage} traffic {bursts + 1}/{max_bursts}, then a look"
                with progress.stage(look):
                    burst()
                    with _output_to(log):
                        turn = loop.tick()
                bursts += 1
            result = turn.report if turn else {}
            line = TurnLine(
                turn=number,
                events=len(scoped.feedback()) - before,
                satisfaction=sat,
                positive_rate=report.positive_rate,
                gate=(result.get("gate") or {}).get("decision", "-"),
                canary=(turn.outcome if turn and turn.stage == "done" else "undecided") or "-",
                seconds=time.monotonic() - started,
                details=result,
                measured=promotions.measured,
            )
            lines.append(line)
            rate = f"{line.positive_rate:.0%}" if line.positive_rate is not None else "n/a"
            print(
                f"{number:>4} {line.events:>7} {sat:>12.3f} {rate:>9} {line.gate:>8} {line.canary:>12} "
                f"{line.seconds:>5.0f}s",
                flush=True,
            )
            if turn is not None and turn.turn < number and turn.stage != "done":
                waits = f"the loop's turn {turn.turn} still waits on its {turn.stage}"
                print(f"     ({waits}: no turn starts beside it)", flush=True)
            for events, measured, version in line.measured:
                print(
                    f"     production measured {measured:.3f} once {version} served, {events} feedback "
                    f"events into turn {number}",
                    flush=True,
                )
            for text in [*shipped(scoped, turn), *timed(turn)] if turn else []:
                if text not in printed:
                    printed.add(text)
                    print(f"     {text}", flush=True)
        with progress.stage(f"production after {turns} turns on the held-out prompts"):
            final = satisfaction(url, key, scenario, held_out, USERS_AT_ONCE, model=PRODUCTION)
        start = lines[0].satisfaction
        print(f"production satisfaction after {turns} turns: {final:.3f} (started at {start:.3f})")
        minutes = (time.monotonic() - began) / 60
        print(
            f"{turns} turns in {minutes:.1f} min; peak memory: this process (the loop) "
            f"{peak_memory_mb() / 1024:.2f} GB, the server {peak_memory_mb(server.pid) / 1024:.2f} GB"
        )
    except SimError as exc:
        log_path = home / "server.log"
        raise TuneloopError(f"the simulated users could not use the server ({exc}); see {log_path}") from exc
    finally:
        server.terminate()
        server.wait(timeout=60)
    write_report(home / "demo", lines, final, scenario.name)
    print(f"report: {home / 'demo' / 'report.html'} and {home / 'demo' / 'satisfaction.png'}")
    return lines


def add_documents(url: str, key: str, documents: dict[str, str]) -> None:
    """Put the app's documents (Markdown) into the tenant's collection, as the app would."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        for doc, text in documents.items():
            http.put(f"/v1/documents/{doc}", json={"text": text, "format": "markdown"}).raise_for_status()


def write_report(out: Path, lines: list[TurnLine], final: float, title: str = "support") -> None:
    """The run's report in `out`: report.html (a row per turn), satisfaction.png and turns.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    ys = [line.satisfaction for line in lines] + [final]  # each turn's line holds production at its start
    xs = list(range(len(ys)))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, marker="o")
    ax.set_ylabel("production's hidden-preference\nsatisfaction")
    ax.set_ylim(0, 1)
    ax.set_xticks(xs, ["start"] + [f"after turn {line.turn}" for line in lines])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "satisfaction.png", dpi=120)
    plt.close(fig)
    rows = "".join(
        f"<tr><td>{x.turn}</td><td>{x.events}</td><td>{x.satisfaction:.3f}</td>"
        f"<td>{'n/a' if x.positive_rate is None else f'{x.positive_rate:.0%}'}</td><td>{x.gate}</td>"
        f"<td>{x.canary}</td><td>{x.seconds:.0f}s</td></tr>"
        for x in lines
    )
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>tuneloop demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}"
        "td,th{padding:4px 10px;border-bottom:1px solid #ddd}</style>"
        f"<h1>tuneloop demo: {title}</h1><p>Satisfaction is the simulated users' hidden preference, "
        f"scored on held-out prompts at temperature 0. Final: <b>{final:.3f}</b>.</p>"
        "<img src=satisfaction.png>"
        "<table><tr><th>turn</th><th>events</th><th>satisfaction</th><th>positive feedback</th><th>gate</th>"
        f"<th>canary</th><th>time</th></tr>{rows}</table>"
    )
    (out / "turns.json").write_text(json.dumps([asdict(x) for x in lines], indent=2, default=str))
