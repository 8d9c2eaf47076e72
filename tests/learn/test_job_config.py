"""Job settings: how many passes an adapter job makes follows the size of what it trains on."""

from __future__ import annotations

from tuneloop.learn.job_config import MAX_STEPS, TARGET_STEPS, paced


def rows(n: int, origin: str = "preference") -> list[dict]:
    return [{"origin": origin} for _ in range(n)]


def test_a_small_snapshot_gets_more_passes_up_to_the_target_steps() -> None:
    assert paced("dpo", rows(40), {}, {})["num_train_epochs"] == 4  # 5 steps a pass at batch 8
    assert paced("dpo", rows(128), {}, {})["num_train_epochs"] == 2  # 16 steps a pass -> 32


def test_a_snapshot_of_the_target_size_gets_one_pass() -> None:
    args = paced("dpo", rows(TARGET_STEPS * 8), {}, {})
    assert args == {"num_train_epochs": 1}


def test_a_large_snapshot_stops_at_max_steps() -> None:
    args = paced("dpo", rows(5_000), {}, {})
    assert args["num_train_epochs"] == 1 and args["max_steps"] == MAX_STEPS


def test_repeated_edits_count_as_the_rows_the_trainer_sees() -> None:
    # 80 edits seen 3 times each (DPO's default) are 30 steps a pass, not 10.
    assert paced("dpo", rows(80, "edit"), {}, {})["num_train_epochs"] == 2
    assert paced("dpo", rows(80, "edit"), {}, {"edit": 1})["num_train_epochs"] == 4


def test_passes_the_caller_set_are_kept_and_reward_jobs_are_not_paced() -> None:
    assert paced("dpo", rows(40), {"num_train_epochs": 7}, {}) == {"num_train_epochs": 7}
    assert paced("kto", rows(40), {"max_steps": 3}, {}) == {"max_steps": 3}
    assert paced("reward_embedding", rows(40), {}, {}) == {}
