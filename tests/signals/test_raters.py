import pytest

from tests.signals.streams import NOW, event, interaction
from tuneloop.signals import build_signals
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.raters import cap_limit, cap_rows, estimate_raters
from tuneloop.signals.rewards import compute_rewards

POLICY = RewardPolicy(half_life_days=None, near_duplicate_threshold=1.0, heldout_fraction=0.0)
HONEST = [f"h{k}" for k in range(5)]


def crowd_with_a_troll():
    """30 answers voted on by five honest raters (each wrong once) and a troll who always votes the opposite,
    plus 5 answers only one honest rater and the troll (thumbs and rating, twice the votes) saw."""
    truth = {f"i{n}": 1 if n % 2 == 0 else -1 for n in range(35)}
    chats = [interaction(iid, f"question {iid}", f"answer {iid}") for iid in truth]
    events = []
    for n, (iid, good) in enumerate(truth.items()):
        voters = HONEST if n < 30 else ["h0"]
        for k, rater in enumerate(voters):
            events.append(event(iid, "thumbs", -good if k == n else good, rater=rater, source="labeler"))
        events.append(event(iid, "thumbs", -good, rater="troll", source="labeler"))
        if n >= 30:
            events.append(event(iid, "rating", 1 if good > 0 else 5, rater="troll", source="labeler"))
    return truth, chats, events


def test_adversarial_rater_gets_weight_near_zero_and_is_flagged() -> None:
    _, chats, events = crowd_with_a_troll()
    report = estimate_raters(chats, events, POLICY, NOW)
    assert report.weights["troll"] < 0.05
    assert report.flagged == ("troll",)
    assert all(report.weights[h] > 0.8 for h in HONEST)
    assert report.overlap["troll"] == 35


def test_adversarial_votes_do_not_flip_the_dataset() -> None:
    truth, chats, events = crowd_with_a_troll()
    signals = build_signals(chats, events, POLICY, NOW)
    labels = {row["interaction_ids"][0]: row["label"] for row in signals.kto}
    assert labels == {iid: good > 0 for iid, good in truth.items()}
    # Without rater weights the troll outvotes the lone honest rater on the last five answers.
    unweighted = compute_rewards(chats, events, POLICY, NOW)
    assert all(unweighted[f"i{n}"].reward * truth[f"i{n}"] < 0 for n in range(30, 35))


def test_adversarial_preferences_are_outweighed() -> None:
    chats = [interaction(f"q{n}", f"q{n}", "good", choices=["good", "bad"]) for n in range(12)]
    events = []
    for n in range(12):
        for rater in HONEST[:3]:
            events.append(event(f"q{n}", "preference", {"chosen": 0, "rejected": 1}, rater=rater))
        events.append(event(f"q{n}", "preference", {"chosen": 1, "rejected": 0}, rater="troll"))
        events.append(event(f"q{n}", "preference", {"chosen": 1, "rejected": 0}, rater="troll2"))
    signals = build_signals(chats, events, POLICY, NOW)
    assert set(signals.raters.flagged) == {"troll", "troll2"}
    assert len(signals.pairs) == 12
    assert all(row["chosen"][0]["content"] == "good" for row in signals.pairs)


def test_unseen_raters_keep_full_weight() -> None:
    chats = [interaction("a"), interaction("b")]
    events = [event("a", "thumbs", 1, rater="solo"), event("b", "accepted", rater="quiet")]
    report = estimate_raters(chats, events, POLICY, NOW)
    assert report.weights == {"quiet": 1.0, "solo": 1.0}
    assert report.flagged == ()


@pytest.mark.parametrize(
    ("counts", "cap"),
    [
        ({"a": 100, "b": 10, "c": 10, "d": 5, None: 3}, 0.25),
        ({"a": 50, "b": 40, "c": 1, "d": 1, "e": 1}, 0.2),
    ],
)
def test_row_cap_holds_for_every_rater(counts, cap) -> None:
    rows = [{"rater": r, "n": i} for r, n in counts.items() for i in range(n)]
    kept = cap_rows(rows, cap)
    share = {r: sum(row["rater"] == r for row in kept) / len(kept) for r in counts if r is not None}
    assert max(share.values()) <= cap + 1e-9
    assert sum(row["rater"] is None for row in kept) == counts.get(None, 0)  # anonymous rows are never capped
    # The fewest rows go: one more row for the top rater would break the cap.
    top = max(share, key=share.get)
    assert (share[top] * len(kept) + 1) / (len(kept) + 1) > cap


def test_row_cap_keeps_the_same_rows_whatever_the_input_order() -> None:
    rows = [{"rater": "a", "n": i} for i in range(20)] + [{"rater": r, "n": 0} for r in "bcd"]
    forward, backward = cap_rows(rows, 0.25), cap_rows(rows[::-1], 0.25)
    assert len(forward) == 4
    assert sorted(map(str, forward)) == sorted(map(str, backward))


def test_small_team_is_balanced_rather_than_erased() -> None:
    rows = [{"rater": "a"}] * 30 + [{"rater": "b"}] * 10
    kept = cap_rows(rows, 0.1)
    assert [sum(r["rater"] == x for r in kept) for x in "ab"] == [10, 10]
    assert cap_limit({"a": 5.0}, 0.25) == float("inf")
