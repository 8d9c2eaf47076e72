"""The re-ranker's interleaved canary: team-draft lists and the always-valid test on users' preferences."""

from __future__ import annotations

import random

from tuneloop.retrieve.interleave import CANDIDATE, MAX_DECISIVE, PRODUCTION, Tally, preference, team_draft


def test_team_draft_shares_the_list_between_both_rankings_without_repeats() -> None:
    rng = random.Random(0)
    for _ in range(200):
        items = [f"c{i}" for i in range(8)]
        production, candidate = rng.sample(items, 8), rng.sample(items, 8)
        k = rng.randint(1, 8)

        picked = team_draft(production, candidate, k, rng)

        shown = [item for item, _ in picked]
        sides = [side for _, side in picked]
        assert len(shown) == len(set(shown)) == k
        assert abs(sides.count(CANDIDATE) - sides.count(PRODUCTION)) <= 1
        # Each side's best result is in the first two places: users examining from the top see both.
        if k >= 2:
            assert {production[0], candidate[0]} <= set(shown[:2])


def test_team_draft_stops_when_both_rankings_are_used_up() -> None:
    assert [item for item, _ in team_draft(["a", "b"], ["b", "a"], 4, random.Random(1))] in (
        ["a", "b"],
        ["b", "a"],
    )


def test_a_retrieval_favours_the_side_whose_results_users_opened_and_did_not_mark_wrong() -> None:
    sides = [PRODUCTION, CANDIDATE, PRODUCTION, CANDIDATE]
    assert preference(sides, [0, 1, 0, 0]) == 1
    assert preference(sides, [1, 1, 0, -1]) == -1  # a source of the candidate marked wrong cancels its click
    assert preference(sides, [1, 1, 0, 0]) == 0
    assert preference([None, None], [1, 0]) == 0  # not interleaved


def _simulate(p_win: float, runs: int, alpha: float, seed: int) -> dict[str, int]:
    """Canaries whose decisive retrievals favour the candidate with probability `p_win`, looked at after
    every one of them: how each ended."""
    rng = random.Random(seed)
    ended = {"promote": 0, "rollback": 0, "inconclusive": 0}
    for _ in range(runs):
        wins = 0
        for n in range(1, MAX_DECISIVE + 1):
            wins += rng.random() < p_win
            verdict = Tally(wins, n).verdict(alpha)
            if verdict != "continue":
                ended[verdict] += 1
                break
    return ended


def test_an_aa_canary_watched_continuously_picks_a_winner_at_most_alpha_of_the_time() -> None:
    ended = _simulate(0.5, runs=400, alpha=0.05, seed=0)
    assert ended["promote"] + ended["rollback"] <= 0.05 * 400, ended


def test_a_candidate_users_clearly_prefer_is_promoted_and_a_worse_one_rolled_back() -> None:
    assert _simulate(0.7, runs=100, alpha=0.05, seed=1)["promote"] >= 95
    assert _simulate(0.3, runs=100, alpha=0.05, seed=2)["rollback"] >= 95
