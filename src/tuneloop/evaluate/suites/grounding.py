"""The grounding suite: does the candidate say only what its sources say, at least as often as production?

For a tenant whose answers are grounded in its documents (retrieval policy on), both versions answer the
held-out questions with the sources the gateway would show them. Each answer is split into claims (its
sentences of a few words or more, citation marks removed), and a claim is supported when some shown chunk
is close to it in MiniLM space (cosine similarity at least `min_similarity`) and every number it states is
in the shown chunks: restating or paraphrasing a source passes, a fact from nowhere does not, and neither
does a changed figure (embeddings alone rate "refunds take 30 days" close to "refunds take five days").
An answer is grounded when every claim is supported (an answer with no claims, "the sources do not say",
is grounded). The candidate fails when it is surely grounded less often than production: a one-sided exact
McNemar test on the questions whose verdict changed, as the golden and execution suites do. Tenants without
retrieval, or whose held-out questions find no source, skip the suite.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np

from tuneloop.evaluate.policy import GroundingConfig
from tuneloop.evaluate.stats import paired_change_p
from tuneloop.evaluate.suites.base import (
    CANDIDATE,
    MAX_ROWS,
    PRODUCTION,
    GateContext,
    Verdict,
    prompt_preview,
)
from tuneloop.retrieve.policy import retrieval_policy
from tuneloop.retrieve.prompting import question_of, with_sources
from tuneloop.retrieve.search import Hit, search
from tuneloop.retrieve.serving import production_reranker
from tuneloop.signals import embeddings

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CITATION = re.compile(r"\s*\[\d{1,2}\]")
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Saying the sources do not answer is what the gateway's instruction asks for, not a claim to check.
_ABSTAINS = re.compile(
    r"\b(?:do|does|did|can|could)(?:n't| not|not)\s+(?:say|know|answer|find|mention|cover|tell)\b",
    re.IGNORECASE,
)
MIN_CLAIM_WORDS = 4  # shorter sentences ("Yes.", "Here is how:") state no checkable fact


def claims(answer: str) -> list[str]:
    """The sentences of `answer` that state something: citation marks removed, at least MIN_CLAIM_WORDS, and
    not a statement that the sources do not answer."""
    parts = (_CITATION.sub("", part).strip() for part in _SENTENCE.split(answer))
    return [p for p in parts if len(_WORD.findall(p)) >= MIN_CLAIM_WORDS and not _ABSTAINS.search(p)]


def numbers(text: str) -> set[str]:
    """The figures in `text`, thousands separators dropped ("1,500" and "1500" are one figure)."""
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def support(
    answers: list[str], sources: list[list[Hit]], shown: list[np.ndarray], min_similarity: float
) -> list[tuple[int, int]]:
    """(supported claims, claims) per answer, against the chunks shown with its question (`shown`: their
    vectors, one row per chunk)."""
    said = [claims(a) for a in answers]
    flat = [c for cs in said for c in cs]
    claim_vectors = embeddings.embed(flat) if flat else np.zeros((0, embeddings.DIMENSIONS))
    out, at = [], 0
    for cs, hits, vectors in zip(said, sources, shown, strict=True):
        best = (claim_vectors[at : at + len(cs)] @ vectors.T).max(axis=1) if cs else np.zeros(0)
        figures = set().union(*(numbers(h.text) for h in hits))
        ok = [bool(b >= min_similarity) and numbers(c) <= figures for c, b in zip(cs, best, strict=True)]
        out.append((sum(ok), len(cs)))
        at += len(cs)
    return out


def _shown_vectors(sources: list[list[Hit]]) -> list[np.ndarray]:
    """Each question's shown chunks as vectors, every distinct chunk embedded once."""
    texts = sorted({h.text for hits in sources for h in hits})
    by_text = dict(zip(texts, embeddings.embed(texts), strict=True)) if texts else {}
    return [np.stack([by_text[h.text] for h in hits]) for hits in sources]


class Answered(NamedTuple):
    """One version's answers to the questions, and the sources it was shown with each."""

    answers: list[str]
    sources: list[list[Hit]]


def compare(prompts: list[Any], candidate: Answered, production: Answered, cfg: GroundingConfig) -> Verdict:
    """Score both versions' answers against the sources each was shown and apply the non-inferiority
    rule."""
    vectors = _shown_vectors(candidate.sources + production.sources)
    n = len(prompts)
    scored = {
        CANDIDATE: support(candidate.answers, candidate.sources, vectors[:n], cfg.min_similarity),
        PRODUCTION: support(production.answers, production.sources, vectors[n:], cfg.min_similarity),
    }
    rows = []
    for i, prompt in enumerate(prompts):
        (c_ok, c_all), (p_ok, p_all) = scored[CANDIDATE][i], scored[PRODUCTION][i]
        c_grounded, p_grounded = c_ok == c_all, p_ok == p_all
        rows.append(
            {
                "prompt": prompt_preview(prompt),
                "candidate": candidate.answers[i][:200],
                "candidate_supported": f"{c_ok}/{c_all}",
                "production_supported": f"{p_ok}/{p_all}",
                "regression": p_grounded and not c_grounded,
                "fixed": c_grounded and not p_grounded,
            }
        )
    regressions = sum(r["regression"] for r in rows)
    fixed = sum(r["fixed"] for r in rows)
    p = paired_change_p(regressions, fixed)

    def rate(arm: str) -> float:
        return round(sum(ok == total for ok, total in scored[arm]) / n, 4)

    def claim_share(arm: str) -> float:
        total = sum(t for _, t in scored[arm])
        return round(sum(ok for ok, _ in scored[arm]) / total, 4) if total else 1.0

    metrics = {
        "questions": n,
        "candidate_grounded_rate": rate(CANDIDATE),
        "production_grounded_rate": rate(PRODUCTION),
        "candidate_supported_claims": claim_share(CANDIDATE),
        "production_supported_claims": claim_share(PRODUCTION),
        "regressions": regressions,
        "fixed": fixed,
        "regression_p": round(p, 4),
        "min_similarity": cfg.min_similarity,
    }
    shown_rows = sorted(rows, key=lambda r: not r["regression"])[:MAX_ROWS]
    if p < cfg.alpha:
        reason = (
            f"grounded in its sources on {rate(CANDIDATE):.0%} of {n} questions against production's "
            f"{rate(PRODUCTION):.0%}: {regressions} lost, {fixed} gained (McNemar p {p:.3f} < {cfg.alpha})"
        )
        return Verdict(False, reason, metrics, shown_rows)
    reason = (
        f"grounded on {rate(CANDIDATE):.0%} of {n} questions (production {rate(PRODUCTION):.0%}); "
        f"{regressions} lost, {fixed} gained, not surely worse (p {p:.3f})"
    )
    return Verdict(True, reason, metrics, shown_rows)


def run(ctx: GateContext, cfg: GroundingConfig) -> Verdict:
    """Both versions answer held-out questions with their retrieved sources; skipped (passed) for a tenant
    without retrieval or whose questions find no source."""
    policy = retrieval_policy(ctx.home, ctx.tenant.tenant.name)
    if not policy.enabled:
        return Verdict(True, "skipped: retrieval is off for this tenant", {"skipped": True})
    reranker = production_reranker(ctx.tenant) if policy.rerank else None
    prompts, sources = [], []
    for prompt in ctx.heldout_prompts(cfg.max_prompts):
        query = question_of(prompt)
        if query is None:
            continue
        hits = search(ctx.tenant, query, policy.k, min_score=policy.min_score, reranker=reranker)
        if hits:
            prompts.append(prompt)
            sources.append(hits)
    if not prompts:
        return Verdict(True, "skipped: no held-out question finds a source", {"skipped": True})
    answered = {}
    for arm in (CANDIDATE, PRODUCTION):  # each with as many of the sources as its version shows
        shown = [ctx.evaluator.arms[arm].shown(hits) for hits in sources]
        sourced = [with_sources(p, hits) for p, hits in zip(prompts, shown, strict=True)]
        answered[arm] = Answered(ctx.evaluator.generate(arm, sourced, cfg.max_new_tokens), shown)
    return compare(prompts, answered[CANDIDATE], answered[PRODUCTION], cfg)
