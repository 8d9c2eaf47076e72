"""Which sequences join the running batch next and which leave it early: tenants take turns, and while
another waits none holds more than its fair share of the slots.

Pure functions over the waiting queue and the running rows, called on the backend's worker thread.
"""

from __future__ import annotations

import collections
import itertools

from tuneloop.serve.backends.batching import Sequence

# Prompt tokens admitted between two decode steps of the running rows (a row longer than this still goes
# in alone): one request of 8 long prompts held every other tenant's answer for its whole prefill. The
# transformers batch prefills what it admits at once; llama.cpp's a chunk a step anyway.
PREFILL_BUDGET = 1024


def fair_share(slots: int, owners: int) -> int:
    """The most of `slots` one of `owners` may hold while another waits: an equal part, rounded up."""
    return -(-slots // max(1, owners))


def preemptible(pending: collections.deque[Sequence], active: list[Sequence], slots: int) -> list[Sequence]:
    """The running rows to take out so that owners waiting below their fair share get slots now: rows of
    the owners holding the most above theirs, those that fed the model least (the least work to redo)."""
    held = collections.Counter(s.owner for s in active)
    waiting = collections.Counter(s.owner for s in pending if not s.cancelled)
    share = fair_share(slots, len(held.keys() | waiting.keys()))
    wanted = sum(min(n, share - held[owner]) for owner, n in waiting.items() if held[owner] < share)
    short = wanted - (slots - len(active))
    rows = sorted(active, key=lambda s: s.pos)
    taken: list[Sequence] = []
    for _ in range(short):
        owner, most = max(held.items(), key=lambda item: item[1], default=("", 0))
        if most <= share:
            break
        victim = next(s for s in rows if s.owner == owner)
        rows.remove(victim)
        taken.append(victim)
        held[owner] -= 1
    return taken


def admissible(
    pending: collections.deque[Sequence],
    room: int,
    served: collections.Counter[str],
    held: collections.Counter[str],
) -> list[Sequence]:
    """Take from `pending` the rows to prefill next, owners (tenants) in turn, those `served` least first:
    at most `room`, and no more prompt tokens than PREFILL_BUDGET (the first row always goes). An owner
    already `held` at its fair share of the slots gets more only once no other owner waits below its own;
    cancelled rows are dropped unprefilled."""
    waiting: dict[str, list[Sequence]] = {}
    for seq in pending:
        if not seq.cancelled:
            waiting.setdefault(seq.owner, []).append(seq)
    share = fair_share(room + held.total(), len(held.keys() | waiting.keys()))
    owners = sorted(waiting.values(), key=lambda rows: served[rows[0].owner])  # stable: arrival order next
    within = [rows[: max(0, share - held[rows[0].owner])] for rows in owners]
    beyond = [rows[len(first) :] for rows, first in zip(owners, within, strict=True)]
    taken: list[Sequence] = []
    tokens = 0
    # Rows past their owner's share go last: room left after every other owner's turn is still used.
    for seq in [*_in_turn(within), *_in_turn(beyond)]:
        if len(taken) >= room or (taken and tokens + len(seq.context) > PREFILL_BUDGET):
            break
        taken.append(seq)
        tokens += len(seq.context)
    chosen = {id(s) for s in taken}
    kept = [s for s in pending if not s.cancelled and id(s) not in chosen]
    pending.clear()
    pending.extend(kept)
    return taken


def _in_turn(queues: list[list[Sequence]]) -> list[Sequence]:
    """The queues' rows taken one from each in turn."""
    return [s for turn in itertools.zip_longest(*queues) for s in turn if s is not None]
