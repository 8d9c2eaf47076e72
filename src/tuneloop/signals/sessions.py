"""Session-level implicit signals: time to resolution, time to first meaningful action, follow-up questions
and repeat contact about the same issue, from stored interactions and their feedback events.

A session is the interactions that share a session id (ids are compared as stored, so keyed hashes work),
joined with the answers that regenerated them; an interaction without a session id is a session of its
own. Durations run from the session's first answer to the moment the user acted on an answer: that
answer's offset in the session plus its client-measured `dwell_ms` when one was sent (no clock skew), else
the action event's own time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from statistics import median

from tuneloop.clock import utc
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.records import Record

# The user did something with the answer: used it, changed it, or ran it (a task outcome either way).
ACTIONS = ("accepted", "copied", "edit", "outcome")
# Whose events tell what the user did: theirs and their app's; a reviewer's or a judge's verdict does not.
BEHAVIOUR_SOURCES = ("user", "system")
REPEAT_WINDOW = timedelta(days=7)  # a return about the same issue later than this is a new contact
REPEAT_LOOKBACK = 20  # a user's latest sessions compared: bounds the cost of a heavy user's history
SAME_ISSUE = 0.6  # share of the shorter question's content words the other one repeats
_WORD = re.compile(r"[a-z0-9$€£%]+")
# Words that say nothing about which issue a question is about.
_STOPWORDS = """a an and are as at be by can could do does for from get got have how i if in is it me my
of on or our please should so that the their them there this to was we what when where which who why will
with would you your"""
_STOP = frozenset(_STOPWORDS.split())


@dataclass(frozen=True)
class Session:
    """One session's signals. `turns` are its questions (a regeneration stays in its turn)."""

    key: str
    user: str | None
    answers: tuple[str, ...]  # interaction ids in time order
    turns: tuple[tuple[str, ...], ...]  # per question, the interaction ids that answered it
    start: datetime
    question: str
    resolution_s: float | None  # None: not resolved (no resolving event, or escalated)
    first_action_s: float | None
    followed_up: tuple[bool, ...]  # per turn: a follow-up event, or a later question in the session
    repeat_of: str | None = None  # the earlier session of the same user about the same issue
    repeated: bool = False  # the same user came back about this session's issue


def sessions_of(
    interactions: Iterable[Record], events: Iterable[Record], policy: RewardPolicy | None = None
) -> list[Session]:
    """Every session among `interactions` (one tenant's), with its signals, by start time."""
    policy = policy or RewardPolicy()
    by_id = {r["id"]: r for r in interactions}
    grouped: dict[str, list[Record]] = {}
    for event in events:
        if event["interaction_id"] in by_id and event.get("source", "user") in BEHAVIOUR_SOURCES:
            grouped.setdefault(event["interaction_id"], []).append(event)
    replaces = {
        e["value"]["replaced_by"]: iid
        for iid, evs in grouped.items()
        for e in evs
        if e["kind"] == "regenerated" and e["value"] and e["value"]["replaced_by"] in by_id
    }
    members: dict[str, list[Record]] = {}
    for row in by_id.values():
        members.setdefault(_session_key(row, by_id, replaces), []).append(row)
    found = [_session(key, rows, grouped, replaces, policy) for key, rows in members.items()]
    found.sort(key=lambda s: (s.start, s.key))
    return _mark_repeats(found)


def _session_key(row: Record, by_id: Mapping[str, Record], replaces: Mapping[str, str]) -> str:
    """The session an interaction belongs to: its session id, else the session of what it regenerated."""
    seen = set()
    while not row.get("session") and row["id"] in replaces and row["id"] not in seen:
        seen.add(row["id"])
        row = by_id[replaces[row["id"]]]
    return f"s:{row['session']}" if row.get("session") else f"i:{row['id']}"


def _session(
    key: str,
    rows: list[Record],
    events: Mapping[str, list[Record]],
    replaces: Mapping[str, str],
    policy: RewardPolicy,
) -> Session:
    rows = sorted(rows, key=lambda r: (utc(r["created_at"]), r["id"]))
    start = utc(rows[0]["created_at"])
    turns: list[list[str]] = []
    for row in rows:
        if replaces.get(row["id"]) in {iid for turn in turns[-1:] for iid in turn}:
            turns[-1].append(row["id"])
        else:
            turns.append([row["id"]])
    offsets = {r["id"]: (utc(r["created_at"]) - start).total_seconds() for r in rows}
    dwell: dict[str, float] = {}
    for iid in offsets:
        for e in events.get(iid, ()):
            if e["kind"] == "dwell_ms":
                dwell[iid] = max(dwell.get(iid, 0.0), e["value"] / 1000)

    def elapsed(event: Record) -> float:
        iid = event["interaction_id"]
        if iid in dwell:
            return offsets[iid] + dwell[iid]
        return max(0.0, (utc(event["created_at"]) - start).total_seconds())

    mine = [e for r in rows for e in events.get(r["id"], ())]
    actions = [elapsed(e) for e in mine if e["kind"] in ACTIONS]
    escalated = any(e["kind"] == "escalated" for e in mine)
    resolving = [elapsed(e) for e in mine if _resolves(e, policy)]
    followed = tuple(
        i < len(turns) - 1 or any(e["kind"] == "followup" for iid in turn for e in events.get(iid, ()))
        for i, turn in enumerate(turns)
    )
    return Session(
        key=key,
        user=rows[0].get("user"),
        answers=tuple(r["id"] for r in rows),
        turns=tuple(tuple(t) for t in turns),
        start=start,
        question=_question(rows[0]),
        resolution_s=min(resolving) if resolving and not escalated else None,
        first_action_s=min(actions) if actions else None,
        followed_up=followed,
    )


def _resolves(event: Record, policy: RewardPolicy) -> bool:
    """Accepted or copied, or a true task outcome the policy counts as good news."""
    if event["kind"] in ("accepted", "copied"):
        return True
    value = event["value"] if event["kind"] == "outcome" else None
    return bool(value and value["value"] and policy.outcomes.get(value["name"], 0) > 0)


def _question(row: Record) -> str:
    """The session's first question: the last user message its first interaction answered."""
    asked = [m["content"] for m in row["messages"] if m["role"] == "user"]
    return str(asked[-1]) if asked else ""


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def same_issue(first: str, second: str) -> bool:
    """Whether two questions are about the same issue: most content words of the shorter one recur."""
    return _same(first, _content_words(first), second, _content_words(second))


def _same(first: str, a: set[str], second: str, b: set[str]) -> bool:
    if min(len(a), len(b)) < 2:
        return first.strip().lower() == second.strip().lower()
    return len(a & b) / min(len(a), len(b)) >= SAME_ISSUE


def _mark_repeats(found: list[Session]) -> list[Session]:
    """Link each session to the latest earlier one of the same user, within the window, on the same issue."""
    out = list(found)
    words = [_content_words(s.question) for s in found]
    by_user: dict[str, list[int]] = {}
    for i, s in enumerate(found):
        if s.user is None:
            continue
        earlier = by_user.setdefault(str(s.user), [])
        for j in reversed(earlier[-REPEAT_LOOKBACK:]):  # latest first, as far back as the window reaches
            if s.start - found[j].start > REPEAT_WINDOW:
                break
            if _same(found[j].question, words[j], s.question, words[i]):
                out[i] = replace(out[i], repeat_of=found[j].key)
                out[j] = replace(out[j], repeated=True)
                break
        earlier.append(i)
    return out


def _ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Each key's value mapped to [-1, 1] by rank: the smallest +1, the largest -1, ties share a rank."""
    n = len(values)
    if n < 2:
        return dict.fromkeys(values, 0.0)
    first: dict[float, int] = {}
    last: dict[float, int] = {}
    for position, value in enumerate(sorted(values.values())):
        first.setdefault(value, position)
        last[value] = position
    return {key: 1.0 - (first[v] + last[v]) / (n - 1) for key, v in values.items()}


def session_contributions(sessions: list[Session], policy: RewardPolicy) -> list[tuple[str, float, float]]:
    """(interaction id, value in [-1, 1], weight) for each session signal the policy gives a weight."""
    w = policy.sessions
    parts: list[tuple[str, float, float]] = []
    for s in sessions:
        if w.repeat_contact and s.repeated:
            parts += [(iid, -1.0, w.repeat_contact) for iid in s.answers]
        if w.followups:
            # Only the implicit follow-up (a later question); a `followup` event already counts on its own.
            parts += [(turn[-1], -1.0, w.followups) for turn in s.turns[:-1]]
    by_key = {s.key: s for s in sessions}
    for weight, attr in ((w.resolution_time, "resolution_s"), (w.first_action_time, "first_action_s")):
        if weight:
            timed = {s.key: getattr(s, attr) for s in sessions if getattr(s, attr) is not None}
            for key, value in _ranks(timed).items():
                parts += [(iid, value, weight) for iid in by_key[key].answers]
    return parts


@dataclass(frozen=True)
class SessionKPIs:
    """Session KPIs over a set of sessions; None where no session qualifies."""

    sessions: int
    resolution_rate: float | None
    resolution_p50_s: float | None
    first_action_p50_s: float | None
    followup_rate: float | None  # follow-up questions per question asked
    repeat_contact_rate: float | None  # share of sessions the same user came back about


def session_kpis(sessions: Iterable[Session]) -> SessionKPIs:
    """The KPIs of `sessions`."""
    sessions = list(sessions)
    resolved = [s.resolution_s for s in sessions if s.resolution_s is not None]
    acted = [s.first_action_s for s in sessions if s.first_action_s is not None]
    turns = sum(len(s.turns) for s in sessions)
    named = [s for s in sessions if s.user is not None]  # anonymous sessions cannot be recognised again
    n = len(sessions)
    return SessionKPIs(
        sessions=n,
        resolution_rate=len(resolved) / n if n else None,
        resolution_p50_s=median(resolved) if resolved else None,
        first_action_p50_s=median(acted) if acted else None,
        followup_rate=sum(sum(s.followed_up) for s in sessions) / turns if turns else None,
        repeat_contact_rate=sum(s.repeated for s in named) / len(named) if named else None,
    )
