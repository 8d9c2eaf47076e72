"""The golden regression set: a tenant's own prompts with expectations every version must keep meeting.

A golden file (YAML) holds `items`, each a prompt (a string or chat messages) and any of: must_contain and
must_not_contain (substrings, case ignored), regex (patterns that must match; write (?i) to ignore case),
must_refuse (true: must decline, false: must not decline, per `evaluate.refusal`), max_length (characters).
See configs/golden_example.yaml.

A tenant without a golden set gets a starter one at its first gate, written where its own would live for
the team to review: prompts whose answers its users rated best (the snapshot's SFT rows), each expecting the
candidate to keep answering — or keep declining — as that answer did. Only items production meets are kept,
so the starter set guards against regressions and never blocks on behaviour production lacks too.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.config import load_yaml_model
from tuneloop.errors import BadRequest
from tuneloop.evaluate.generation import Messages
from tuneloop.evaluate.patterns import compiled, matches
from tuneloop.evaluate.policy import GoldenConfig
from tuneloop.evaluate.refusal import is_refusal
from tuneloop.evaluate.stats import paired_change_p
from tuneloop.evaluate.suites.base import (
    CANDIDATE,
    PRODUCTION,
    GateContext,
    MissingInput,
    Verdict,
    prompt_preview,
)


class GoldenItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="A name for the item in reports.")
    prompt: str | list[dict[str, str]] = Field(description="A user message, or chat messages.")
    must_contain: list[str] = Field(default_factory=list, description="Substrings the answer must hold.")
    must_not_contain: list[str] = Field(
        default_factory=list, description="Substrings the answer must not hold."
    )
    regex: list[str] = Field(
        default_factory=list, description="Patterns the answer must match (searched, at most 2 s each)."
    )
    must_refuse: bool | None = Field(default=None, description="true: must decline; false: must not decline.")
    max_length: int | None = Field(default=None, ge=1, description="Most characters the answer may have.")

    def messages(self) -> Messages:
        """The prompt as chat messages."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return self.prompt


class GoldenSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reviewed: bool = Field(
        default=True,
        description="false on a starter set tuneloop wrote: its items are guesses from ratings, so the "
        "candidate's regressions are tested on their counts (alpha) until a person reviews it.",
    )
    items: list[GoldenItem] = Field(default_factory=list)


def load_golden(path: Path) -> GoldenSet:
    """A golden set from YAML; BadRequest names the file and the problem."""
    golden = load_yaml_model(path, GoldenSet, "golden set")  # bounded: the file is the operator's to point at
    for item in golden.items:
        for pattern in item.regex:
            try:
                compiled(pattern)
            except ValueError as exc:
                raise BadRequest(f"golden set {path}: regex {exc}") from None
    return golden


def failures(item: GoldenItem, answer: str) -> list[str]:
    """Every expectation of `item` that `answer` misses, as short phrases (empty: the item passes)."""
    low = answer.lower()
    missed = [f"lacks {s!r}" for s in item.must_contain if s.lower() not in low]
    missed += [f"contains {s!r}" for s in item.must_not_contain if s.lower() in low]
    missed += [f"no match for /{p}/" for p in item.regex if next(matches(compiled(p), answer), None) is None]
    if item.must_refuse is not None and is_refusal(answer) != item.must_refuse:
        missed.append("did not refuse" if item.must_refuse else "refused")
    if item.max_length is not None and len(answer) > item.max_length:
        missed.append(f"{len(answer)} chars > {item.max_length}")
    return missed


STARTER_ITEMS = 12
STARTER_HEADER = """\
# Starter golden set, written by tuneloop's gate from the answers this tenant's users rated best.
# Review it: keep the items that matter, add expectations (must_contain, regex, max_length), add your own
# prompts, then set `reviewed: true` so every item must pass. Until then a regression fails the gate only
# when the items that changed are surely worse. See configs/golden_example.yaml.
"""


def golden_path(ctx: GateContext, cfg: GoldenConfig) -> Path:
    return cfg.path or ctx.home / "policies" / ctx.tenant.tenant.name / "golden.yaml"


def starter_items(ctx: GateContext) -> list[GoldenItem]:
    """Items from the snapshot's best-rated answers (SFT rows, held-out first): keep answering, or keep
    declining, as the rated answer did."""
    rows = [r for r in ctx.training_rows() if "messages" in r and r.get("origin") in ("reward", "edit")]
    rows.sort(key=lambda r: (r.get("split") != "heldout", -(r.get("confidence") or 0.0)))
    items: list[GoldenItem] = []
    seen: set[str] = set()
    for row in rows:
        prompt = [{"role": m["role"], "content": m["content"]} for m in row["messages"][:-1]]
        # One item per prompt: a prompt rated twice (or edited and rated) would count twice in the test.
        if (key := json.dumps(prompt, sort_keys=True)) in seen:
            continue
        seen.add(key)
        answer = row["messages"][-1]["content"]
        items.append(GoldenItem(id=f"rated-{len(items) + 1}", prompt=prompt, must_refuse=is_refusal(answer)))
        if len(items) == STARTER_ITEMS:
            break
    return items


def write_starter(ctx: GateContext, path: Path) -> int:
    """Write the starter golden set (items production meets) to `path`; returns how many items it holds."""
    items = starter_items(ctx)
    answers = ctx.evaluator.generate(
        PRODUCTION, [item.messages() for item in items], ctx.policy.generation.max_new_tokens
    )
    kept = [item for item, answer in zip(items, answers, strict=True) if not failures(item, answer)]
    if kept:
        body = {"reviewed": False, **GoldenSet(items=kept).model_dump(mode="json", exclude_defaults=True)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STARTER_HEADER + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return len(kept)


def run(ctx: GateContext, cfg: GoldenConfig) -> Verdict:
    """Both versions answer every golden prompt; the candidate must pass enough items and regress on none."""
    path = golden_path(ctx, cfg)
    if not path.exists() and not write_starter(ctx, path):
        raise MissingInput(
            f"no golden set at {path}, and no best-rated answers in the snapshot to start one from — write "
            "one (see configs/golden_example.yaml) or set suites.golden.required: false in the gate policy"
        )
    golden = load_golden(path)
    items = golden.items
    if len(items) < cfg.min_items:
        raise MissingInput(
            f"golden set {path} has {len(items)} items; the suite needs at least {cfg.min_items}"
        )
    prompts = [item.messages() for item in items]
    limit = ctx.policy.generation.max_new_tokens
    cand = ctx.evaluator.generate(CANDIDATE, prompts, limit)
    prod = ctx.evaluator.generate(PRODUCTION, prompts, limit)
    rows = []
    for i, (item, a, b) in enumerate(zip(items, cand, prod, strict=True)):
        cand_missed, prod_missed = failures(item, a), failures(item, b)
        rows.append(
            {
                "item": item.id or str(i + 1),
                "prompt": prompt_preview(item.messages()),
                "candidate": "pass" if not cand_missed else "; ".join(cand_missed),
                "production": "pass" if not prod_missed else "; ".join(prod_missed),
                "regression": bool(cand_missed and not prod_missed),
                "answer": a[:100],
            }
        )
    passed_items = sum(r["candidate"] == "pass" for r in rows)
    regressions = sum(r["regression"] for r in rows)
    fixed = sum(r["candidate"] == "pass" and r["production"] != "pass" for r in rows)
    pass_rate = passed_items / len(rows)
    metrics = {
        "items": len(rows),
        "candidate_pass_rate": round(pass_rate, 4),
        "production_pass_rate": round(sum(r["production"] == "pass" for r in rows) / len(rows), 4),
        "regressions": regressions,
        "fixed": fixed,
        "reviewed": golden.reviewed,
        "path": str(path),
    }
    if not golden.reviewed:
        p = paired_change_p(regressions, fixed)
        metrics["regression_p"] = round(p, 4)
        reason = (
            f"starter set (not reviewed): candidate regresses on {regressions} and fixes {fixed} of "
            f"{len(rows)} items (one-sided McNemar p {p:.2f}; fails below alpha {cfg.alpha})"
        )
        return Verdict(p >= cfg.alpha, reason, metrics, rows)
    passed = pass_rate >= cfg.min_pass_rate and regressions <= cfg.max_regressions
    reason = (
        f"candidate meets {passed_items}/{len(rows)} golden items "
        f"({pass_rate:.0%}; needs ≥ {cfg.min_pass_rate:.0%}) "
        f"with {regressions} regression(s) vs production (allowed {cfg.max_regressions})"
    )
    return Verdict(passed, reason, metrics, rows)
