"""Dataset builders: preference pairs, unpaired (KTO) labels and SFT examples, each row with its lineage.

Rows use TRL's conversational shapes — pairs {"prompt", "chosen", "rejected"}, labels {"prompt", "completion",
"label"}, SFT {"messages"} — plus lineage columns (`event_ids`, `interaction_ids`, `origin`, `rater`,
`confidence`) that TRL's trainers drop (remove_unused_columns) and an exporter may drop too.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from tuneloop.capture.redact import PLACEHOLDER
from tuneloop.signals import canaries
from tuneloop.signals.code import edited_answer
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.records import (
    Record,
    as_of,
    canonical,
    choices_of,
    completion_text,
    one_tenant,
    owner,
    prompt_messages,
    prompt_text,
    rater_of,
)
from tuneloop.signals.rewards import Reward, confidence, event_weight

Row = dict[str, Any]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def teaches_placeholders(row: Row) -> bool:
    """Whether the answer a row teaches (a chosen, desirable or SFT one) holds a redaction placeholder: a
    model trained on it, or shown it as an example, says "<PERSON>" to users."""
    if "chosen" in row:
        target = row["chosen"]
    elif "completion" in row:
        target = row["completion"] if row["label"] else []
    else:
        target = row["messages"][-1:]
    text = target if isinstance(target, str) else " ".join(str(m.get("content", "")) for m in target)
    return PLACEHOLDER.search(text) is not None


class _Evidence:
    """Signed evidence for one row, summed over its events (a duplicate vote adds, a reversal cancels)."""

    def __init__(self) -> None:
        self.net = 0.0
        self.event_ids: set[str] = set()
        self.by_rater: dict[str | None, float] = {}

    def add(self, weight: float, event_id: str, rater: str | None) -> None:
        self.net += weight
        self.event_ids.add(event_id)
        self.by_rater[rater] = self.by_rater.get(rater, 0.0) + abs(weight)


def _explicit_pairs(
    interactions: Iterable[Record],
    events: Iterable[Record],
    policy: RewardPolicy,
    now: datetime,
    rater_weights: Mapping[str, float] | None,
    kind: str,
) -> list[Row]:
    interactions, events = list(interactions), list(events)
    one_tenant(interactions, events)
    by_id, seen = as_of(interactions, events, now)
    found: dict[str, tuple[_Evidence, list, str, str, dict[str, str]]] = {}
    for event in seen:
        if event["kind"] != kind:
            continue
        pair = _pair_of(event, by_id)
        if pair is None:
            continue
        prompt, chosen, rejected, iids = pair
        weight = event_weight(event, by_id, policy, now, rater_weights) * getattr(policy.weights, kind)
        # One key per unordered pair, so opposite votes on the same two answers cancel out.
        first, second = sorted((chosen, rejected))
        key = json.dumps([prompt, first, second])
        if key not in found:
            owners = dict(zip((chosen, rejected), iids, strict=True)) if len(iids) == 2 else {"": iids[0]}
            found[key] = (_Evidence(), prompt, first, second, owners)
        evidence = found[key][0]
        rater = rater_of(event, by_id.get(event["interaction_id"]))
        evidence.add(weight if chosen == first else -weight, event["id"], rater)
    rows = []
    for evidence, prompt, first, second, iid_of in found.values():
        conf = confidence(abs(evidence.net), policy)
        if conf < policy.min_confidence or evidence.net == 0:
            continue
        chosen, rejected = (first, second) if evidence.net > 0 else (second, first)
        rows.append(
            {
                "prompt": prompt,
                "chosen": _assistant(chosen),
                "rejected": _assistant(rejected),
                "origin": kind,
                "event_ids": sorted(evidence.event_ids),
                # Two-interaction pairs name the chosen answer's interaction first, as reward pairs do.
                "interaction_ids": [iid_of[""]] if "" in iid_of else [iid_of[chosen], iid_of[rejected]],
                "rater": owner(evidence.by_rater),
                "confidence": round(conf, 6),
            }
        )
    return canonical(rows)


def _pair_of(event: Record, by_id: Mapping[str, Record]) -> tuple[list, str, str, list[str]] | None:
    """(prompt, chosen text, rejected text, interaction ids) an event states, or None if it states no pair."""
    iid, value = event["interaction_id"], event["value"]
    if event["kind"] == "preference" and "chosen_interaction" in value:
        chosen, rejected = by_id.get(value["chosen_interaction"]), by_id.get(value["rejected_interaction"])
        if chosen is None or rejected is None:
            return None
        texts = (chosen["response"], rejected["response"])
        prompt, iids = chosen["messages"], [chosen["id"], rejected["id"]]
    elif event["kind"] == "regenerated":
        replaced = by_id.get(iid)
        kept = by_id.get((value or {}).get("replaced_by", ""))
        if replaced is None or kept is None:
            return None
        texts = (kept["response"], replaced["response"])
        prompt, iids = replaced["messages"], [kept["id"], replaced["id"]]
    elif iid in by_id:
        interaction = by_id[iid]
        prompt, iids = interaction["messages"], [iid]
        if event["kind"] == "edit":
            texts = (edited_answer(interaction["response"], value), interaction["response"])
        else:
            choices = choices_of(interaction)
            if not (value["chosen"] < len(choices) and value["rejected"] < len(choices)):
                return None
            texts = (choices[value["chosen"]], choices[value["rejected"]])
    else:
        return None
    if texts[0] == texts[1]:
        return None
    return prompt_messages(prompt), texts[0], texts[1], iids


def preference_pairs(interactions, events, policy, now, rater_weights=None) -> list[Row]:
    """Pairs from explicit `preference` events (between one interaction's choices, or two interactions)."""
    return _explicit_pairs(interactions, events, policy, now, rater_weights, "preference")


def edit_pairs(interactions, events, policy, now, rater_weights=None) -> list[Row]:
    """Pairs from `edit` events: the user's corrected text preferred to the original response."""
    return _explicit_pairs(interactions, events, policy, now, rater_weights, "edit")


def regenerated_pairs(interactions, events, policy, now, rater_weights=None) -> list[Row]:
    """Pairs from `regenerated` events that name the kept answer: kept preferred to the replaced one."""
    return _explicit_pairs(interactions, events, policy, now, rater_weights, "regenerated")


def _merged_lineage(*rewards: Reward) -> dict[str, Any]:
    owners = {r.rater for r in rewards}
    rater = owners.pop() if len(owners) == 1 else None  # a pair of two raters' answers is shared
    return {"event_ids": sorted({e for r in rewards for e in r.event_ids}), "rater": rater}


def reward_pairs(
    interactions: Iterable[Record],
    rewards: Mapping[str, Reward],
    policy: RewardPolicy,
    prompt_vectors: Mapping[str, np.ndarray] | None = None,
) -> list[Row]:
    """Pairs of answers to the same (or near-duplicate) prompt whose rewards differ by more than the margin.

    Without `prompt_vectors` (prompt text -> normalised embedding) only identical prompts are compared.
    """
    interactions = list(interactions)
    one_tenant(interactions, [])
    ready = sorted(
        (r for r in interactions if (rw := rewards.get(r["id"])) and rw.confidence >= policy.min_confidence),
        key=lambda r: r["id"],
    )
    keys = [json.dumps(prompt_messages(r["messages"])) for r in ready]
    texts = [prompt_text(r["messages"]) for r in ready]
    candidates = []
    for i, j in sorted(_same_prompts(keys, texts, prompt_vectors, policy.near_duplicate_threshold)):
        a, b = rewards[ready[i]["id"]], rewards[ready[j]["id"]]
        gap = round(abs(a.reward - b.reward), 6)
        if gap > policy.pair_margin and ready[i]["response"] != ready[j]["response"]:
            hi, lo = (i, j) if a.reward > b.reward else (j, i)
            candidates.append((-gap, ready[hi]["id"], ready[lo]["id"], hi, lo))
    used: dict[int, int] = {}
    rows = []
    for _, _, _, hi, lo in sorted(candidates):  # the widest margins claim an answer's pair budget first
        if used.get(hi, 0) >= policy.max_pairs_per_prompt or used.get(lo, 0) >= policy.max_pairs_per_prompt:
            continue
        used[hi], used[lo] = used.get(hi, 0) + 1, used.get(lo, 0) + 1
        chosen, rejected = ready[hi], ready[lo]
        good, bad = rewards[chosen["id"]], rewards[rejected["id"]]
        rows.append(
            {
                "prompt": prompt_messages(chosen["messages"]),
                "chosen": _assistant(chosen["response"]),
                "rejected": _assistant(rejected["response"]),
                "origin": "reward",
                "interaction_ids": [chosen["id"], rejected["id"]],
                **_merged_lineage(good, bad),
                "confidence": min(good.confidence, bad.confidence),
            }
        )
    return canonical(rows)


def _same_prompts(
    keys: list[str],
    texts: list[str],
    vectors: Mapping[str, np.ndarray] | None,
    threshold: float,
    block: int = 1024,
) -> set[tuple[int, int]]:
    """Index pairs (i < j) whose prompts are identical or, given vectors, at least `threshold` similar."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    found = {(a, b) for members in groups.values() for n, a in enumerate(members) for b in members[n + 1 :]}
    if vectors is not None and texts:
        matrix = np.stack([np.asarray(vectors[t], dtype=np.float32) for t in texts])
        for start in range(0, len(texts), block):  # blocks keep memory at block x n
            sims = matrix[start : start + block] @ matrix.T
            rows, cols = np.nonzero(sims >= threshold - 1e-6)
            found.update((start + int(a), int(b)) for a, b in zip(rows, cols, strict=True) if start + a < b)
    return found


def _edited_texts(
    interactions: list[Record],
    events: list[Record],
    policy: RewardPolicy,
    now: datetime,
    rater_weights: Mapping[str, float] | None,
) -> tuple[dict[str, Record], dict[str, Row]]:
    """The live interactions by id, and the users' confident edits: one example per (prompt, edited text)
    keyed by the conversation, with every event and interaction that produced it."""
    one_tenant(interactions, events)
    by_id, seen = as_of(interactions, events, now)
    rows: dict[str, Row] = {}
    for event in seen:
        interaction = by_id.get(event["interaction_id"])
        if event["kind"] != "edit" or interaction is None:
            continue
        weight = event_weight(event, by_id, policy, now, rater_weights) * policy.weights.edit
        conf = confidence(weight, policy)
        if conf < policy.min_confidence:
            continue
        prompt = prompt_messages(interaction["messages"])
        text = edited_answer(interaction["response"], event["value"])
        row = rows.setdefault(
            json.dumps([*prompt, *_assistant(text)]),
            {
                "prompt": prompt,
                "text": text,
                "event_ids": [],
                "interaction_ids": [],
                "rater": rater_of(event, interaction),
                "confidence": 0.0,
            },
        )
        row["event_ids"] = sorted({*row["event_ids"], event["id"]})
        row["interaction_ids"] = sorted({*row["interaction_ids"], interaction["id"]})
        row["confidence"] = max(row["confidence"], round(conf, 6))
    return by_id, rows


def _lineage(row: Row) -> Row:
    return {k: row[k] for k in ("interaction_ids", "event_ids", "rater", "confidence")}


def kto_rows(
    interactions: Iterable[Record],
    events: Iterable[Record],
    rewards: Mapping[str, Reward],
    policy: RewardPolicy,
    now: datetime,
    rater_weights: Mapping[str, float] | None = None,
) -> list[Row]:
    """Unpaired desirable/undesirable labels: confident rewards beyond +/- `label_threshold`, and users'
    edited texts (desirable: the only completions the policy did not write itself)."""
    by_id, edits = _edited_texts(list(interactions), list(events), policy, now, rater_weights)
    rows = [
        {
            "prompt": edit["prompt"],
            "completion": _assistant(edit["text"]),
            "label": True,
            "reward": None,
            "origin": "edit",
            **_lineage(edit),
        }
        for edit in edits.values()
    ]
    for iid, interaction in sorted(by_id.items()):
        reward = rewards.get(iid)
        if reward is None or reward.confidence < policy.min_confidence:
            continue
        if reward.reward > 0 and reward.reward >= policy.label_threshold:
            label = True
        elif reward.reward < 0 and reward.reward <= -policy.label_threshold:
            label = False
        else:
            continue
        rows.append(
            {
                "prompt": prompt_messages(interaction["messages"]),
                "completion": _assistant(interaction["response"]),
                "label": label,
                "reward": reward.reward,
                "origin": "reward",
                "interaction_ids": [iid],
                **_merged_lineage(reward),
                "confidence": reward.confidence,
            }
        )
    return canonical(rows)


def sft_rows(
    interactions: Iterable[Record],
    events: Iterable[Record],
    rewards: Mapping[str, Reward],
    policy: RewardPolicy,
    now: datetime,
    rater_weights: Mapping[str, float] | None = None,
) -> list[Row]:
    """Supervised examples: users' edited texts, and answers whose reward is at least `sft_min_reward`."""
    by_id, edits = _edited_texts(list(interactions), list(events), policy, now, rater_weights)
    rows: dict[str, Row] = {
        key: {"messages": [*edit["prompt"], *_assistant(edit["text"])], "origin": "edit", **_lineage(edit)}
        for key, edit in edits.items()
    }
    for iid, interaction in sorted(by_id.items()):
        reward = rewards.get(iid)
        if (
            reward is None
            or reward.confidence < policy.min_confidence
            or reward.reward < policy.sft_min_reward
        ):
            continue
        messages = [*prompt_messages(interaction["messages"]), *_assistant(interaction["response"])]
        key = json.dumps(messages)
        if key in rows:  # the same conversation already came from an edit; an edit is the stronger source
            row = rows[key]
            row["event_ids"] = sorted({*row["event_ids"], *reward.event_ids})
            row["interaction_ids"] = sorted({*row["interaction_ids"], iid})
            continue
        rows[key] = {
            "messages": messages,
            "origin": "reward",
            "interaction_ids": [iid],
            **_merged_lineage(reward),
            "confidence": reward.confidence,
        }
    return canonical(rows.values())


MATERIAL_ASK = 0.1  # chosen answers 10 % shorter (or longer) say what users want; less is noise
MIN_LENGTH_EVIDENCE = 8  # fewer pairs, or labels on either side, say too little about length


def _length_ratios(pairs: Sequence[Mapping[str, Any]]) -> list[float]:
    """log(chosen/rejected length) per pair; planted canary pairs are not users' words and do not count."""
    return [
        math.log(len(chosen) / len(rejected))
        for r in pairs
        if r.get("origin") != canaries.ORIGIN
        and (chosen := completion_text(r["chosen"]))
        and (rejected := completion_text(r["rejected"]))
    ]


@dataclass(frozen=True)
class LengthAsk:
    """What users' feedback says about answer length: the relative change it asks for, the answers users
    preferred where it was read (empty when the feedback says too little), and whether labels said it."""

    change: float = 0.0
    preferred: tuple[str, ...] = ()
    from_labels: bool = False


def length_ask(pairs: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]] = ()) -> LengthAsk:
    """The median chosen/rejected length ratio of MIN_LENGTH_EVIDENCE or more pairs, minus one, with their
    chosen answers. With fewer pairs, the ratio of the median lengths of the answers users labelled
    desirable and undesirable, each side as many, with the desirable ones: thumbs and implicit signals rate
    answers one at a time and make few pairs, and though these answers reply to different prompts, on every
    scenario's snapshots the two asks pointed the same way. Short of both, the few pairs' ratio (0 without
    any) and no preferred answers to act on."""
    users = [r for r in pairs if r.get("origin") != canaries.ORIGIN]
    ratios = _length_ratios(users)
    if len(ratios) >= MIN_LENGTH_EVIDENCE:
        return LengthAsk(
            math.exp(statistics.median(ratios)) - 1, tuple(completion_text(r["chosen"]) for r in users)
        )
    sides: tuple[list[str], list[str]] = ([], [])
    for r in labels:
        if r.get("origin") != canaries.ORIGIN and (text := completion_text(r["completion"])):
            sides[0 if r["label"] else 1].append(text)
    good, bad = sides
    if min(len(good), len(bad)) >= MIN_LENGTH_EVIDENCE:
        medians = [statistics.median(math.log(len(t)) for t in side) for side in sides]
        return LengthAsk(math.exp(medians[0] - medians[1]) - 1, tuple(good), from_labels=True)
    return LengthAsk(math.exp(statistics.median(ratios)) - 1 if ratios else 0.0)


def length_votes(pairs: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """How many pairs chose the shorter answer, and how many the longer (equal lengths count for neither)."""
    ratios = _length_ratios(pairs)
    return sum(r < 0 for r in ratios), sum(r > 0 for r in ratios)
