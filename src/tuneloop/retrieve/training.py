"""Train a tenant's re-ranker from logged retrievals and the feedback on their sources, gate it offline
against the ranking users were shown, register it as a version (kind `reranker`) with its lineage, and
put it on an interleaved canary (retrieve/interleave.py) that promotes it or rolls it back."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.capture.events import SOURCE_KINDS
from tuneloop.clock import utc
from tuneloop.config import tenant_policy
from tuneloop.errors import BadRequest, Conflict
from tuneloop.private_files import private_dir
from tuneloop.registry.artifacts import checksums
from tuneloop.registry.versions import Registry, Version
from tuneloop.retrieve.clicks import ClickModel, Impression, fit_click_model
from tuneloop.retrieve.interleave import Tally, preference
from tuneloop.retrieve.reranker import (
    Example,
    Reranker,
    dcg,
    distrusted_chunks,
    fit_reranker,
    relevance_key,
    trust_scores,
)
from tuneloop.retrieve.serving import INTERLEAVED, KIND, load_reranker
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.store.repository import TenantStore
from tuneloop.store.schema import feedback, retrievals

ENCODER = "all-MiniLM-L6-v2"
HOLDOUT_SHARE = 0.25  # the newest quarter of retrievals with feedback judges the candidate
MIN_HELDOUT = 20  # fewer held-out retrievals with feedback cannot tell two rankings apart: blocked


@dataclass
class Logged:
    """One logged retrieval: what was shown, in order, and which sources the user opened or marked."""

    id: str
    results: list[dict[str, Any]]
    clicked: set[str] = field(default_factory=set)
    helpful: set[str] = field(default_factory=set)
    wrong: set[str] = field(default_factory=set)
    ranker: str = "embedding"

    @property
    def has_feedback(self) -> bool:
        return bool(self.clicked or self.helpful or self.wrong)

    def vote(self, chunk: str) -> int:
        """−1 for a source marked wrong, +1 for one opened or marked helpful, else 0."""
        return -1 if chunk in self.wrong else int(chunk in self.clicked or chunk in self.helpful)

    def impressions(self) -> list[Impression]:
        """Opened or marked helpful counts as a click; a source marked wrong does not, whatever its clicks."""
        return [
            Impression(
                relevance_key(r["anchor"], r["chunk_id"]),
                r["rank"],
                r["chunk_id"] in (self.clicked | self.helpful) - self.wrong,
            )
            for r in self.results
        ]


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    metrics: dict[str, Any]


def logged_retrievals(
    tenant: TenantStore, *, ranker: str | None = None, since: datetime | None = None
) -> list[Logged]:
    """The tenant's retrievals tied to an interaction (by `ranker`, logged `since`, when given), oldest
    first, with the source feedback on them."""
    where = [retrievals.c.interaction_id.is_not(None)]
    marked = [feedback.c.kind.in_(SOURCE_KINDS)]
    if ranker is not None:
        where.append(retrievals.c.ranker == ranker)
    if since is not None:  # compared in UTC: SQLite keeps times without an offset
        where.append(retrievals.c.created_at >= utc(since))
        marked.append(feedback.c.received_at >= utc(since))
    with tenant.reading() as tx:
        rows = tx.all(retrievals, *where, order_by=(retrievals.c.created_at, retrievals.c.id))
        events = tx.all(
            feedback, *marked, columns=(feedback.c.interaction_id, feedback.c.kind, feedback.c.value)
        )
    marks: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for e in events:
        marks[e.interaction_id][e.kind].add(e.value["chunk_id"])
    out = []
    for r in rows:
        got = marks.get(r.interaction_id, {})
        out.append(
            Logged(
                r.id,
                list(r.results),
                set(got.get("source_clicked", ())),
                set(got.get("source_helpful", ())),
                set(got.get("source_wrong", ())),
                r.ranker,
            )
        )
    return out


def train(logs: list[Logged], version: str) -> tuple[Reranker, ClickModel]:
    """Fit the click model on every impression, then the re-ranker on its debiased labels."""
    model = fit_click_model([imp for log in logs for imp in log.impressions()])
    marks: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # (document, chunk): helpful, wrong
    examples = []
    for log in logs:
        for r, imp in zip(log.results, log.impressions(), strict=True):
            counts = marks[r["document_id"], r["chunk_id"]]
            counts[0] += r["chunk_id"] in log.helpful
            counts[1] += r["chunk_id"] in log.wrong
            label = 0.0 if r["chunk_id"] in log.wrong else model.posterior(imp)
            examples.append(
                Example(r["chunk_id"], r["document_id"], r["score"], r["lexical"], r["anchor"], label)
            )
    by_document: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (doc, _), (h, w) in marks.items():
        by_document[doc][0] += h
        by_document[doc][1] += w
    reranker = fit_reranker(
        examples,
        version=version,
        trust=trust_scores({doc: (h, w) for doc, (h, w) in by_document.items()}),
        relevance=model.relevance,
        distrusted=distrusted_chunks({chunk: (h, w) for (_, chunk), (h, w) in marks.items()}),
    )
    return reranker, model


def evaluate(
    candidate: Reranker, held_out: list[Logged], model: ClickModel, production: Reranker | None, k: int = 5
) -> dict[str, float]:
    """NDCG@k and recall@3 on held-out feedback, of production's order (its re-ranker's, or the
    embedding's) and of the candidate's, over the same results: what users were shown, interleaved or not.

    Gains are inverse-propensity weighted (a click where few users look counts more) and summed over all
    held-out retrievals before normalising (ratio of sums): an IPS-weighted DCG is unbiased, but one
    normalised per retrieval cancels the weight of a lone click and would favour the order shown.
    """
    dcg_production = dcg_candidate = ideal = 0.0
    top_production = top_candidate = total = 0.0
    for log in held_out:
        gain = {
            r["chunk_id"]: _gain(log, r["chunk_id"]) * model.propensity_weight(r["rank"]) for r in log.results
        }
        rows = [_Row(r) for r in log.results]
        embedding = sorted(rows, key=lambda row: (-row.score, row.chunk_id))
        ours = [h.chunk_id for h in (production.rank(rows) if production else embedding)]
        theirs = [h.chunk_id for h in candidate.rank(rows)]
        dcg_production += dcg([gain[c] for c in ours], k)
        dcg_candidate += dcg([gain[c] for c in theirs], k)
        ideal += dcg(sorted(gain.values(), reverse=True), k)
        top_production += sum(gain[c] for c in ours[:3])
        top_candidate += sum(gain[c] for c in theirs[:3])
        total += sum(gain.values())
    return {
        "heldout_retrievals": len(held_out),
        "ndcg@5_production": _ratio(dcg_production, ideal),
        "ndcg@5_candidate": _ratio(dcg_candidate, ideal),
        "recall@3_production": _ratio(top_production, total),
        "recall@3_candidate": _ratio(top_candidate, total),
    }


def retrain(tenant: TenantStore, home: Path, *, actor: str) -> dict[str, Any]:
    """The re-ranker's turn: decide a live canary if its test is sure, else (with none live) train and
    gate a candidate when retrievals or source feedback came since the last one; what it did."""
    report: dict[str, Any] = {}
    canary = review_canary(tenant, home, actor=actor)
    if canary is not None:
        report["canary"] = canary
        if canary["state"] == "canary":
            return report
    logs = logged_retrievals(tenant)
    if not any(log.has_feedback for log in logs):
        return {**report, "skipped": "no feedback on sources"}
    trained = Registry(tenant).list(KIND)  # oldest first
    if trained and trained[-1].snapshot_hash == lineage(logs):
        return {**report, "skipped": f"no new retrievals or source feedback since {trained[-1].id}"}
    version, result = train_and_gate(tenant, home, actor=actor, logs=logs)
    return {**report, "version": version.id, "state": version.state, "reason": result.reason}


def retrain_when_due(
    tenant: TenantStore, home: Path, min_events: int, *, actor: str
) -> dict[str, Any] | None:
    """Between turns: with no re-ranker on canary, `retrain` once `min_events` source feedback events came
    since the last re-ranker was trained (or ever); what it did, or None when it is not due."""
    trained = Registry(tenant).list(KIND)  # oldest first
    if (
        any(v.state == "canary" for v in trained)
        or tenant.first(retrievals, columns=(retrievals.c.id,)) is None
    ):
        return None  # one canary at a time; a tenant that never retrieved costs one indexed read a tick
    where = [feedback.c.kind.in_(SOURCE_KINDS)]
    if trained:
        where.append(feedback.c.received_at > utc(trained[-1].created_at))
    [count] = tenant.first(feedback, *where, columns=(sa.func.count(),)) or [0]
    return retrain(tenant, home, actor=actor) if count >= min_events else None


def review_canary(tenant: TenantStore, home: Path, *, actor: str) -> dict[str, Any] | None:
    """Judge the re-ranker on canary, if any, by its interleaved retrievals: promote it or roll it back
    once the test is sure (or no winner shows within MAX_DECISIVE); its state and tally."""
    live = Registry(tenant).list(KIND, "canary")
    if not live:
        return None
    canary = live[0]
    logs = logged_retrievals(tenant, ranker=INTERLEAVED + canary.id, since=canary.updated_at)
    prefs = [
        preference([r.get("side") for r in log.results], [log.vote(r["chunk_id"]) for r in log.results])
        for log in logs
    ]
    tally = Tally(wins=prefs.count(1), decisive=len(prefs) - prefs.count(0))
    verdict = tally.verdict(tenant_policy(home, tenant.tenant.name, RolloutPolicy).alpha)
    state = {"promote": "production", "continue": "canary"}.get(verdict, "rolled_back")
    reason = {
        "promote": f"interleaved canary: users preferred it ({tally.describe()})",
        "rollback": f"interleaved canary: users preferred production ({tally.describe()})",
        "inconclusive": f"interleaved canary: no preference after {tally.decisive} retrievals",
    }.get(verdict)
    if reason is not None:
        Registry(tenant).move(canary.id, state, actor=actor, reason=reason, details={"tally": asdict(tally)})
    return {"version": canary.id, "state": state, "wins": tally.wins, "decisive": tally.decisive}


def lineage(logs: list[Logged]) -> str:
    """SHA-256 of what a re-ranker learns from: each retrieval's results and the feedback on them."""
    data = [[log.id, log.results, *map(sorted, (log.clicked, log.helpful, log.wrong))] for log in logs]
    return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()


def train_and_gate(
    tenant: TenantStore, home: Path, *, actor: str = "cli", logs: list[Logged] | None = None
) -> tuple[Version, GateResult]:
    """Train on all but the newest feedback, gate on it, register the candidate; a passing one goes on the
    interleaved canary (one at a time: Conflict while another is live)."""
    logs = logged_retrievals(tenant) if logs is None else logs
    with_feedback = [log for log in logs if log.has_feedback]
    if not with_feedback:
        raise BadRequest(
            "no feedback on sources yet: send source_clicked / source_helpful / source_wrong events on "
            "interactions whose retrievals were logged"
        )
    registry = Registry(tenant)
    if registry.list(KIND, "canary"):
        raise Conflict("a re-ranker is on canary; it must be promoted or rolled back before the next one")
    parent = registry.production(KIND)
    cut_id = with_feedback[-max(1, int(len(with_feedback) * HOLDOUT_SHARE))].id
    cut = next(i for i, log in enumerate(logs) if log.id == cut_id)
    version_id = f"rr-{uuid.uuid4().hex[:10]}"
    reranker, _ = train(logs[:cut], version_id)
    # The judge's click model sees every log: position bias is a property of the interface, not of rankers.
    judge = fit_click_model([imp for log in logs for imp in log.impressions()])
    # Production may have learned from some held-out retrievals already: the comparison leans its way.
    held_out = [log for log in logs[cut:] if log.has_feedback]
    metrics = evaluate(reranker, held_out, judge, load_reranker(parent))
    result = _gate(metrics)
    final, _ = train(logs, version_id)  # what serves learns from all the feedback the gate judged
    folder = home / "rerankers" / tenant.tenant.name / version_id
    private_dir(folder)
    final.save(folder / "reranker.json")
    version = registry.register(
        kind=KIND,
        base_model=ENCODER,
        actor=actor,
        version_id=version_id,
        artifact_path=str(folder),
        artifact_checksums=checksums(folder),
        snapshot_hash=lineage(logs),
        metrics={**metrics, "weights": {f: round(w, 3) for f, w in final.weights.items()}},
        job_spec={
            "retrievals": len(logs),
            "with_feedback": len(with_feedback),
            "holdout_share": HOLDOUT_SHARE,
        },
        parent_id=parent.id if parent else None,
    )
    registry.move(version.id, "gated" if result.passed else "blocked", actor=actor, reason=result.reason)
    if result.passed:
        registry.move(version.id, "canary", actor=actor, reason="interleaved with production's ranking")
    return registry.get(version.id), result


def _gain(log: Logged, chunk: str) -> float:
    """2^label − 1 of a held-out result: marked helpful 2, opened 1, otherwise (or marked wrong) 0."""
    if chunk in log.wrong:
        return 0.0
    return 3.0 if chunk in log.helpful else 1.0 if chunk in log.clicked else 0.0


def _gate(metrics: dict[str, Any]) -> GateResult:
    n = metrics["heldout_retrievals"]
    if n < MIN_HELDOUT:
        reason = f"only {n} held-out retrievals with feedback; {MIN_HELDOUT} are needed"
        return GateResult(False, reason, metrics)
    before, after = metrics["ndcg@5_production"], metrics["ndcg@5_candidate"]
    if after <= before:  # a re-ranker that only ties production's order has nothing to show on a canary
        reason = f"held-out NDCG@5 {after:.3f} is not above production's {before:.3f}"
        return GateResult(False, reason, metrics)
    return GateResult(True, f"held-out NDCG@5 {after:.3f} vs production's {before:.3f}", metrics)


@dataclass(frozen=True)
class _Row:
    """A logged result seen as something the re-ranker can order."""

    chunk_id: str
    document_id: str
    score: float
    lexical: float
    anchor: str

    def __init__(self, result: dict[str, Any]) -> None:
        for name in ("chunk_id", "document_id", "score", "lexical", "anchor"):
            object.__setattr__(self, name, result[name])


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0
