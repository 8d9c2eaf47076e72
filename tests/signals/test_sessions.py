"""Session-level signals: sessions from session ids and regenerations, time to resolution and to first
action (dwell-measured or event-timed), follow-ups, repeat contact, and their weight in the reward."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.signals.streams import NOW, event, interaction
from tuneloop.signals.policy import RewardPolicy, SessionWeights
from tuneloop.signals.rewards import compute_rewards
from tuneloop.signals.sessions import same_issue, session_kpis, sessions_of

T0 = NOW - timedelta(days=1)


def chat(iid, question="How do I reset my password?", *, session=None, user="u1", at=0.0, **kw):
    """An interaction `at` seconds after T0 in `session`."""
    return {
        **interaction(iid, question, user=user, **kw),
        "session": session,
        "created_at": T0 + timedelta(seconds=at),
    }


def ev(iid, kind, value=True, *, at=0.0, **kw):
    """An event `at` seconds after T0."""
    return {**event(iid, kind, value, **kw), "created_at": T0 + timedelta(seconds=at)}


def by_key(sessions):
    return {s.key: s for s in sessions}


def test_interactions_sharing_a_session_id_form_one_session_and_others_stand_alone() -> None:
    chats = [chat("a", session="s1"), chat("b", session="s1", at=30), chat("c", at=40)]
    found = by_key(sessions_of(chats, []))
    assert found["s:s1"].answers == ("a", "b") and len(found["s:s1"].turns) == 2
    assert found["i:c"].answers == ("c",)


def test_a_regeneration_stays_in_its_session_and_its_turn() -> None:
    chats = [chat("a"), chat("b", at=20)]
    found = sessions_of(chats, [ev("a", "regenerated", {"replaced_by": "b"}, at=10)])
    assert len(found) == 1 and found[0].turns == (("a", "b"),)
    assert found[0].followed_up == (False,) and found[0].repeat_of is None


def test_time_to_resolution_uses_the_dwell_the_client_measured() -> None:
    chats = [chat("a", session="s"), chat("b", session="s", at=60)]
    events = [ev("b", "dwell_ms", 15_000, at=200), ev("b", "accepted", at=200)]
    (s,) = sessions_of(chats, events)
    assert s.resolution_s == pytest.approx(75.0)  # b came 60 s in, then 15 s of reading
    assert s.first_action_s == pytest.approx(75.0)


def test_without_dwell_the_action_events_time_counts() -> None:
    (s,) = sessions_of([chat("a")], [ev("a", "copied", at=42)])
    assert s.resolution_s == pytest.approx(42.0)


def test_an_escalated_session_is_not_resolved_and_a_failed_outcome_is_an_action_only() -> None:
    (esc,) = sessions_of([chat("a")], [ev("a", "accepted", at=5), ev("a", "escalated", at=9)])
    assert esc.resolution_s is None and esc.first_action_s == pytest.approx(5.0)
    failed = {"name": "tests_passed", "value": False}
    (ci,) = sessions_of([chat("b")], [ev("b", "outcome", failed, at=30)])
    assert ci.resolution_s is None and ci.first_action_s == pytest.approx(30.0)
    passed = {"name": "tests_passed", "value": True}
    (ok,) = sessions_of([chat("c")], [ev("c", "outcome", passed, at=30)])
    assert ok.resolution_s == pytest.approx(30.0)
    unknown = {"name": "deployed", "value": True}  # not a good-news outcome in the policy
    (other,) = sessions_of([chat("d")], [ev("d", "outcome", unknown, at=30)])
    assert other.resolution_s is None


def test_a_reviewers_rewrite_is_not_the_users_action() -> None:
    events = [ev("a", "edit", "Better text.", at=30, source="labeler", rater="supervisor")]
    (s,) = sessions_of([chat("a")], events)
    assert s.first_action_s is None
    ci = {"name": "tests_passed", "value": True}
    (run,) = sessions_of([chat("b")], [ev("b", "outcome", ci, at=50, source="system")])
    assert run.resolution_s == pytest.approx(50.0)  # the team's CI posts as the app


def test_follow_ups_count_a_later_question_or_a_followup_event_once_per_turn() -> None:
    chats = [chat("a", session="s"), chat("b", session="s", at=30), chat("c", session="s", at=60)]
    events = [ev("a", "followup", "And then?", at=10), ev("c", "followup", at=70)]
    (s,) = sessions_of(chats, events)
    assert s.followed_up == (True, True, True)
    kpis = session_kpis(sessions_of([*chats, chat("d", at=90)], events))
    assert kpis.followup_rate == pytest.approx(3 / 4)


def test_same_issue_ignores_filler_words_and_needs_most_content_words() -> None:
    assert same_issue("How do I reset my Finly password?", "reset finly password please")
    assert same_issue("Why was my card declined at Zara?", "Why was my card declined at Zara?")
    assert not same_issue(
        "Where is my refund of $12 from Amazon?", "How long does a refund of $45 from Uber take?"
    )


def test_a_user_coming_back_about_the_same_issue_marks_the_earlier_session() -> None:
    q = "My card was declined at Zara, why?"
    chats = [
        chat("a", q, session="s1", user="u1"),
        chat("b", q, session="s2", user="u1", at=3600),
        chat("c", q, session="s3", user="u2", at=3700),  # another user: no repeat
        chat("d", q, session="s4", user="u1", at=8 * 86400),  # past the window of s2
    ]
    found = by_key(sessions_of(chats, []))
    assert found["s:s1"].repeated and found["s:s2"].repeat_of == "s:s1"
    assert not found["s:s2"].repeated and found["s:s3"].repeat_of is None
    assert found["s:s4"].repeat_of is None
    assert session_kpis(found.values()).repeat_contact_rate == pytest.approx(1 / 4)


def test_repeat_contact_lowers_the_earlier_answers_reward_by_default() -> None:
    q = "My card was declined at Zara, why?"
    chats = [chat("a", q, session="s1"), chat("b", q, session="s2", at=600)]
    events = [ev("a", "thumbs", 1, at=5), ev("b", "thumbs", 1, at=605)]
    got = compute_rewards(chats, events, RewardPolicy(half_life_days=None), NOW)
    assert got["a"].reward == pytest.approx((1 - 0.2) / 1.2) and got["b"].reward == 1.0
    assert got["a"].event_ids == (events[0]["id"],)  # lineage lists only real events
    off = RewardPolicy(half_life_days=None, sessions=SessionWeights(repeat_contact=0))
    assert compute_rewards(chats, events, off, NOW)["a"].reward == 1.0


def test_time_weights_reward_faster_sessions_when_a_team_turns_them_on() -> None:
    chats = [chat(i, f"question {i} about topic {i}", user=i, at=0) for i in ("fast", "mid", "slow")]
    events = [ev("fast", "dwell_ms", 2_000), ev("mid", "dwell_ms", 20_000), ev("slow", "dwell_ms", 90_000)]
    events += [ev(i, "accepted", at=100) for i in ("fast", "mid", "slow")]
    timed = RewardPolicy(half_life_days=None, sessions=SessionWeights(resolution_time=1.0))
    got = compute_rewards(chats, events, timed, NOW)
    assert got["fast"].reward > got["mid"].reward > got["slow"].reward
    default = compute_rewards(chats, events, RewardPolicy(half_life_days=None), NOW)
    assert {r.reward for r in default.values()} == {1.0}


def test_later_questions_count_against_the_answer_before_them_only_when_weighted() -> None:
    chats = [chat("a", session="s"), chat("b", session="s", at=30)]
    events = [ev("a", "thumbs", 1, at=5), ev("b", "thumbs", 1, at=35)]
    weighted = RewardPolicy(half_life_days=None, sessions=SessionWeights(followups=1.0))
    got = compute_rewards(chats, events, weighted, NOW)
    assert got["a"].reward == 0.0 and got["b"].reward == 1.0
    assert compute_rewards(chats, events, RewardPolicy(half_life_days=None), NOW)["a"].reward == 1.0


def test_tests_passed_outcomes_count_on_the_default_policy() -> None:
    chats = [chat("a"), chat("b", "Another question entirely here", at=10)]
    events = [
        ev("a", "outcome", {"name": "tests_passed", "value": True}, at=20),
        ev("b", "outcome", {"name": "tests_passed", "value": False}, at=20),
    ]
    got = compute_rewards(chats, events, RewardPolicy(half_life_days=None), NOW)
    assert got["a"].reward == 1.0 and got["b"].reward == -1.0
