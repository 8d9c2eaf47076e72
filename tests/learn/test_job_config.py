"""Job settings: how many passes an adapter job makes follows the size of what it trains on, and KTO's class
weights follow its labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneloop.errors import ConfigError
from tuneloop.learn import job_config
from tuneloop.learn.job_config import (
    MAX_STEPS,
    MAX_TRAIN_TOKENS,
    TARGET_STEPS,
    JobSpec,
    class_weighted,
    fitted_length,
    paced,
    train_device,
)


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


def test_a_warm_start_on_a_large_snapshot_stops_at_the_target_steps() -> None:
    assert paced("dpo", rows(5_000), {}, {}, warm=True)["max_steps"] == TARGET_STEPS
    assert paced("dpo", rows(40), {}, {}, warm=True) == paced("dpo", rows(40), {}, {})


def test_repeated_edits_count_as_the_rows_the_trainer_sees() -> None:
    # 80 edits seen 3 times each (DPO's default) are 30 steps a pass, not 10.
    assert paced("dpo", rows(80, "edit"), {}, {})["num_train_epochs"] == 2
    assert paced("dpo", rows(80, "edit"), {}, {"edit": 1})["num_train_epochs"] == 4


def test_passes_the_caller_set_are_kept_and_reward_jobs_are_not_paced() -> None:
    assert paced("dpo", rows(40), {"num_train_epochs": 7}, {}) == {"num_train_epochs": 7}
    assert paced("kto", rows(40), {"max_steps": 3}, {}) == {"max_steps": 3}
    assert paced("reward_embedding", rows(40), {}, {}) == {}


def test_accumulated_micro_batches_count_as_one_step() -> None:
    args = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    assert paced("dpo", rows(128), args, {})["num_train_epochs"] == 2  # 16 steps of 8 a pass, as at batch 8


def conversation(system_words: int, answer_words: int, key: str = "chosen") -> dict:
    prompt = [{"role": "system", "content": "policy " * system_words}, {"role": "user", "content": "How?"}]
    answer = [{"role": "assistant", "content": "step " * answer_words}]
    return {"prompt": prompt, key: answer} | ({"rejected": answer} if key == "chosen" else {})


def test_max_length_holds_the_longest_row(tiny_model: Path) -> None:
    """A long system prompt had TRL cut a third of a tenant's answers at 256 tokens and its reward trainer
    drop most pairs."""
    short = [conversation(20, 40)]
    assert fitted_length("dpo", short, {}, tiny_model)["max_length"] == 256
    long = [*short, conversation(190, 120)]
    assert fitted_length("dpo", long, {}, tiny_model)["max_length"] == 384
    huge = [conversation(3000, 10, key="completion")]
    assert fitted_length("kto", huge, {}, tiny_model)["max_length"] == MAX_TRAIN_TOKENS
    set_by_caller = {"max_length": 128, "per_device_train_batch_size": 8}
    assert fitted_length("dpo", long, set_by_caller, tiny_model) == set_by_caller
    assert fitted_length("reward_embedding", long, {}, tiny_model) == {}


def test_a_cpu_trains_one_row_a_micro_batch_and_accumulates_to_the_same_batch(
    tiny_model: Path, monkeypatch
) -> None:
    """On 2 fp32 cores a micro-batch of one row trained in about a third less time and a quarter of the
    memory of eight; KTO keeps two rows a micro-batch for its KL estimate."""
    monkeypatch.setattr(job_config, "has_bf16_units", lambda device: False)
    rows = [conversation(20, 40)]
    dpo = fitted_length("dpo", rows, {}, tiny_model, "cpu")
    assert (dpo["per_device_train_batch_size"], dpo["gradient_accumulation_steps"]) == (1, 8)
    kto = fitted_length("kto", [conversation(20, 40, key="completion")], {}, tiny_model, "cpu")
    assert (kto["per_device_train_batch_size"], kto["gradient_accumulation_steps"]) == (2, 2)
    assert paced("dpo", rows * 64, dpo, {})["num_train_epochs"] == 4  # 8 steps a pass, as at batch 8


def test_a_bf16_cpu_micro_batch_holds_two_short_pairs_or_one_long(tiny_model: Path, monkeypatch) -> None:
    monkeypatch.setattr(job_config, "has_bf16_units", lambda device: True)
    short = [conversation(20, 40)]
    dpo = fitted_length("dpo", short, {}, tiny_model, "cpu")
    assert (dpo["per_device_train_batch_size"], dpo["gradient_accumulation_steps"]) == (2, 4)
    long = fitted_length("dpo", [*short, conversation(190, 120)], {}, tiny_model, "cpu")
    assert (long["per_device_train_batch_size"], long["gradient_accumulation_steps"]) == (1, 8)
    fp32 = fitted_length("dpo", short, {"bf16": False}, tiny_model, "cpu")  # a spec's own setting wins
    assert fp32["per_device_train_batch_size"] == 1


def test_a_gpu_micro_batch_shrinks_only_as_rows_grow(tiny_model: Path) -> None:
    short = [conversation(20, 40)]
    assert fitted_length("dpo", short, {}, tiny_model, "cuda") == {"max_length": 256}
    long = [*short, conversation(190, 120)]
    args = fitted_length("dpo", long, {}, tiny_model, "cuda")
    assert args == {"max_length": 384, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}


def labels(desirable: int, undesirable: int) -> list[dict]:
    return [{"label": True}] * desirable + [{"label": False}] * undesirable


def test_kto_weighs_the_rarer_label_up_to_the_other_and_leaves_what_the_caller_set() -> None:
    # Mostly rated down: the undesirable answers weigh as much in all as the desirable ones.
    assert class_weighted("kto", labels(27, 98), {}) == {"undesirable_weight": round(27 / 98, 4)}
    # Mostly rated up: desirable ones weigh at most 4/3 of the undesirable (TRL's range).
    assert class_weighted("kto", labels(90, 30), {}) == {"desirable_weight": round(40 / 90, 4)}
    assert class_weighted("kto", labels(36, 30), {}) == {}  # within the range already
    assert class_weighted("kto", labels(0, 30), {}) == {}  # one label only: nothing to weigh against
    assert class_weighted("kto", labels(27, 98), {"desirable_weight": 2.0}) == {"desirable_weight": 2.0}
    assert class_weighted("dpo", labels(27, 98), {}) == {}


def test_jobs_train_in_bf16_autocast_only_where_their_device_has_bf16_units(tmp_path, monkeypatch) -> None:
    def bf16(device="cpu", **trainer_args) -> bool:
        spec = JobSpec(
            kind="dpo", base_model="m", device=device, trainer_args=trainer_args, output_dir=tmp_path
        )
        return spec.trainer_args["bf16"]

    monkeypatch.setattr(job_config, "has_bf16_units", lambda device: device == "cpu")
    assert bf16() is True
    assert bf16(bf16=False) is False  # a spec's own setting wins
    assert bf16("cuda") is False and bf16(use_cpu=False) is False  # the GPU is asked, and it has none
    monkeypatch.setattr(job_config, "has_bf16_units", lambda device: device == "cuda")
    assert bf16() is False and bf16("cuda") is True
    # The resolved value is recorded, so a spec reloaded from job_spec.json elsewhere trains the same way.
    spec = JobSpec(kind="dpo", base_model="m", device="cuda", output_dir=tmp_path)
    monkeypatch.setattr(job_config, "has_bf16_units", lambda device: False)
    assert JobSpec.model_validate_json(spec.model_dump_json()).trainer_args["bf16"] is True


def test_a_gpu_job_keeps_the_measured_learning_settings_and_leaves_the_cpu(tmp_path) -> None:
    cpu, gpu = (JobSpec(kind="dpo", base_model="m", device=d, output_dir=tmp_path) for d in ("cpu", "cuda"))
    assert cpu.trainer_args["use_cpu"] is True and gpu.trainer_args["use_cpu"] is False
    changed = {k for k in cpu.trainer_args if cpu.trainer_args[k] != gpu.trainer_args[k]}
    assert changed <= {"use_cpu", "bf16"} and cpu.id != gpu.id


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks what a machine without a GPU answers")
def test_the_train_device_is_the_cpu_unless_a_gpu_is_seen() -> None:
    assert train_device("auto") == "cpu" and train_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="TUNELOOP_TRAIN_DEVICE=cuda"):
        train_device("cuda")


def test_trainer_arguments_are_read_as_the_types_trl_declares_and_bad_ones_refused() -> None:
    from tuneloop.errors import BadRequest

    # YAML 1.1 reads 5e-5 as a string; TRL's optimizer needs the float.
    args, lora = job_config.typed_args("dpo", {"learning_rate": "5e-5", "fsdp": True}, {"r": "8"})
    # fsdp is hinted `str | None` yet TRL takes True: only strings are read.
    assert args == {"learning_rate": 5e-5, "fsdp": True} and lora == {"r": 8}
    bad_ones = (
        ({"learning_rate": "fast"}, {}, "learning_rate='fast'"),
        ({"no_such_argument": 1}, {}, "not one KTOConfig takes"),
        ({"learning_rate": float("nan")}, {}, "finite"),
        ({}, {"bogus": 1}, "not one LoraConfig takes"),
        ({"dp": {"epsilon": 1}}, {}, "reward_embedding head only"),
        ({"push_to_hub": True}, {}, "never uploads"),
        ({"hub_model_id": "someone/adapter"}, {}, "never uploads"),
        ({"report_to": ["wandb"]}, {}, "never uploads"),
    )
    for trainer_args, lora_args, says in bad_ones:
        with pytest.raises(BadRequest, match=says) as exc:
            job_config.typed_args("kto", trainer_args, lora_args)
        # `--set max_steps=two` once printed pydantic's three-line report with its help URL.
        assert "\n" not in exc.value.message and "pydantic.dev" not in exc.value.message
