"""Code-aware signals: fenced blocks, how much of a suggestion survives an edit, code-only edit pairs."""

from __future__ import annotations

from tests.signals.streams import NOW, event, interaction
from tuneloop.signals import pairs
from tuneloop.signals.code import code_blocks, code_of, survival
from tuneloop.signals.policy import RewardPolicy

ANSWER = (
    "Sure! Here is a function that sums the prices:\n"
    "```python\ndef total(records):\n    result = 0\n    for r in records:\n        result += r['price']\n"
    "    return result\n```\nIt loops over every record."
)


def test_fenced_blocks_are_found_with_any_fence_and_an_unclosed_one_runs_to_the_end() -> None:
    text = "a\n```py\nx = 1\n```\nb\n~~~\ny = 2\n~~~\n```\n\n```\nlast\n```python\nz = 3"
    assert code_blocks(text) == ["x = 1", "y = 2", "z = 3"]
    assert code_of("Just prose, with `inline` code.") is None


def test_survival_is_the_share_of_the_suggested_code_lines_kept_by_the_edit() -> None:
    assert survival(ANSWER, ANSWER) == 1.0
    typed = ANSWER.replace("def total(records):", "def total(records: list[dict]) -> float:")
    assert survival(ANSWER, typed) == 0.8  # 4 of 5 code lines kept; the prose is not counted
    assert survival(ANSWER, "def total(records):\n    return sum(r['price'] for r in records)") == 0.2
    assert survival("No code here.", "def f(): pass") is None


def test_a_bare_code_edit_of_a_code_answer_makes_a_pair_that_differs_only_in_code() -> None:
    chat = interaction("a", "Sum the prices of a list of records", ANSWER)
    fixed = "def total(records: list[dict]) -> float:\n    return sum(r['price'] for r in records)"
    [row] = pairs.edit_pairs([chat], [event("a", "edit", fixed)], RewardPolicy(half_life_days=None), NOW)
    chosen = row["chosen"][0]["content"]
    assert code_of(chosen) == fixed
    assert chosen.startswith("Sure! Here is") and chosen.endswith("It loops over every record.")


def test_prose_edits_and_fenced_edits_are_paired_as_written() -> None:
    policy = RewardPolicy(half_life_days=None)
    chat = interaction("a", "Sum the prices", ANSWER)
    for edit in ("Use the built-in sum over a generator instead.", "```python\nsum(prices)\n```"):
        [row] = pairs.edit_pairs([chat], [event("a", "edit", edit)], policy, NOW)
        assert row["chosen"][0]["content"] == edit
