"""The gate: evaluate a candidate against production, keep the report, move the version to gated or blocked.

It fails closed: a required suite that errors, lacks input or cannot even start counts as failed, and the
reason is written to the report and to the audit log with the decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneloop.config import tenant_policy
from tuneloop.errors import BadRequest, Conflict, NotFound, TuneloopError
from tuneloop.evaluate.generation import Arm, Evaluator
from tuneloop.evaluate.policy import GatePolicy
from tuneloop.evaluate.report import report_dir, write_report
from tuneloop.evaluate.suites import SUITES, GateContext, MissingInput, Verdict
from tuneloop.evaluate.suites.base import CANDIDATE, PRODUCTION
from tuneloop.model_files import llamacpp_gguf, resolve_model
from tuneloop.registry.versions import ENDED, Registry, Version
from tuneloop.serve.examples import OfflineExamples
from tuneloop.store.repository import TenantStore


@dataclass
class SuiteResult:
    """One suite's verdict as the report keeps it."""

    name: str
    required: bool
    status: str  # pass | fail | error
    reason: str
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class GateResult:
    """The decision, the suites behind it and where the report lies."""

    version_id: str
    decision: str  # gated | blocked
    reasons: list[str]
    suites: list[SuiteResult]
    report_json: Path
    report_html: Path

    @property
    def passed(self) -> bool:
        return self.decision == "gated"


def run_gate(
    tenant: TenantStore,
    version_id: str,
    *,
    home: Path,
    policy: GatePolicy | None = None,
    actor: str = "gate",
    record: bool = True,
    engine: str = "auto",
    evaluator: Evaluator | None = None,
) -> GateResult:
    """Run every suite on `version_id`, write the report, and (when `record`) move it to gated or blocked.
    `engine` (Settings.engine) chooses what generates the answers; `evaluator`, one shared with other gates
    of the same policy (`run_gates`)."""
    registry = Registry(tenant)
    candidate = registry.get(version_id)
    if candidate.kind != "adapter":
        raise BadRequest(f"version {version_id} is a {candidate.kind}; the gate evaluates adapter versions")
    if record and candidate.state != "candidate":
        again = (
            f": `tuneloop versions create --tenant {tenant.tenant.name} --from {version_id}` registers a new "
            "candidate with its parts, or --dry-run evaluates it without recording a verdict"
            if candidate.state in ENDED
            else " (try --dry-run)"
        )
        raise Conflict(f"version {version_id} is {candidate.state}; only candidates are gated{again}")
    policy = policy or tenant_policy(home, tenant.tenant.name, GatePolicy)
    production = registry.production("adapter")
    started = datetime.now(UTC)
    clock = time.perf_counter()

    ctx, setup_problem = build_context(tenant, home, policy, candidate, production, engine, evaluator)
    results = []
    for name, suite in SUITES.items():
        cfg = getattr(policy.suites, name)
        t0 = time.perf_counter()
        if ctx is None:
            verdict, status = Verdict(False, f"gate could not start: {setup_problem}"), "error"
        else:
            verdict, status = _run_suite(suite, ctx, cfg)
        results.append(
            SuiteResult(
                name,
                cfg.required,
                status,
                verdict.reason,
                verdict.metrics,
                verdict.rows,
                time.perf_counter() - t0,
            )
        )

    failed = [r for r in results if r.required and not r.passed]
    decision = "blocked" if failed else "gated"
    reasons = [f"{r.name}: {r.reason}" for r in failed]
    report = {
        "tenant": tenant.tenant.name,
        "tenant_id": tenant.tenant_id,
        "version": candidate.id,
        "production": production.id if production else None,
        "snapshot": candidate.snapshot_hash,
        "decision": decision,
        "reasons": reasons,
        "started_at": started.isoformat(),
        "seconds": round(time.perf_counter() - clock, 2),
        "policy": policy.model_dump(mode="json"),
        "suites": [
            {
                "name": r.name,
                "required": r.required,
                "status": r.status,
                "passed": r.passed,
                "reason": r.reason,
                "metrics": r.metrics,
                "rows": r.rows,
                "seconds": round(r.seconds, 2),
            }
            for r in results
        ],
    }
    json_path, html_path = write_report(report, report_dir(home, tenant.tenant_id, candidate.id))
    if record:
        summary = {r.name: r.status for r in results}
        registry.move(
            candidate.id,
            decision,
            actor=actor,
            reason="; ".join(reasons) if reasons else "all required gate suites passed",
            details={"report": str(json_path), "suites": summary},
            gate_report=str(json_path),
            metrics={**candidate.metrics, "gate": {"decision": decision, "suites": summary}},
        )
    return GateResult(candidate.id, decision, reasons, results, json_path, html_path)


def run_gates(tenant: TenantStore, version_ids: list[str], *, home: Path, **options: Any) -> list[GateResult]:
    """Gate several candidates of one turn (`run_gate` each, same options) on one evaluator: production's
    answers and the loaded models are paid for once, not once per candidate."""
    policy = options.pop("policy", None) or tenant_policy(home, tenant.tenant.name, GatePolicy)
    evaluator = _evaluator(policy)
    return [
        run_gate(tenant, version_id, home=home, policy=policy, evaluator=evaluator, **options)
        for version_id in version_ids
    ]


def _evaluator(policy: GatePolicy) -> Evaluator:
    gen = policy.generation
    suites = [getattr(policy.suites, name) for name in SUITES]
    longest = max([gen.max_new_tokens] + [getattr(s, "max_new_tokens", 0) for s in suites])
    return Evaluator(
        batch_size=gen.batch_size, max_prompt_tokens=gen.max_prompt_tokens, max_answer_tokens=longest
    )


def build_context(
    tenant: TenantStore,
    home: Path,
    policy: GatePolicy,
    candidate: Version,
    production: Version | None,
    engine: str = "auto",
    evaluator: Evaluator | None = None,
) -> tuple[GateContext | None, str | None]:
    """Load the snapshot and register both arms; a problem here fails every suite (closed), not the call."""
    from tuneloop.signals.snapshots import get_snapshot

    snapshot, snapshot_problem = None, None
    if candidate.snapshot_hash:
        try:
            snapshot = get_snapshot(tenant, candidate.snapshot_hash)
        except NotFound as exc:
            snapshot_problem = exc.message
    evaluator = evaluator or _evaluator(policy)
    examples = OfflineExamples(tenant, home)
    try:
        cand_base = resolve_model(candidate.base_model, home)
        cand_gguf = llamacpp_gguf(candidate.base_model, engine)
        evaluator.add_arm(Arm.of(CANDIDATE, cand_base, candidate, cand_gguf, examples))
        prod_base = resolve_model(production.base_model, home) if production else cand_base
        prod_gguf = llamacpp_gguf(production.base_model, engine) if production else cand_gguf
        production_arm = Arm.of(PRODUCTION, prod_base, production, prod_gguf, examples)
        evaluator.add_arm(production_arm)  # no production version: the base model serves
    except TuneloopError as exc:
        return None, exc.message
    ctx = GateContext(tenant, home, policy, candidate, production, snapshot, evaluator, snapshot_problem)
    return ctx, None


def _run_suite(suite: Any, ctx: GateContext, cfg: Any) -> tuple[Verdict, str]:
    """Run one suite; anything it raises becomes a failed verdict with the reason (the gate fails closed)."""
    try:
        verdict = suite(ctx, cfg)
    except MissingInput as exc:
        return Verdict(False, f"missing input: {exc.message}"), "error"
    except TuneloopError as exc:
        return Verdict(False, f"error: {exc.message}"), "error"
    except Exception as exc:  # deliberately broad: an unexpected failure must block, never approve
        return Verdict(False, f"error: {type(exc).__name__}: {exc}"), "error"
    return verdict, "pass" if verdict.passed else "fail"
