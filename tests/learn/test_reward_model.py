"""Reward models: the MiniLM one ranks a separable set, the LoRA one trains and saves its score head."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from tests.learn.data import preference_rows, varied_preference_rows
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.jobs import run_job
from tuneloop.learn.reward_model import load_reward_model


def test_embedding_reward_model_ranks_held_out_pairs(tmp_path):
    spec = JobSpec(kind="reward_embedding", base_model="all-minilm-l6-v2", output_dir=tmp_path)
    result = run_job(spec, varied_preference_rows(60))
    assert result.metrics["test_accuracy"] >= 0.9
    assert result.metrics["test_pairs"] == 9 and result.metrics["val_pairs"] == 9
    assert 0.0 <= result.metrics["test_ece"] <= 1.0

    scorer = load_reward_model(result.artifact_dir)
    prompt = [{"role": "user", "content": "Please explain volcanoes to me."}]
    good = scorer.score(prompt, "Happy to help with volcanoes: here is a short, accurate summary.")
    bad = scorer.score(prompt, "Not my problem. Go away.")
    assert good > bad
    assert scorer.temperature == result.metrics["temperature"]


def test_lora_reward_model_trains_and_saves_its_score_head(tiny_model, tmp_path):
    args = {"max_steps": 4, "learning_rate": 5e-3, "max_length": 96, "save_strategy": "no"}
    spec = JobSpec(kind="reward", base_model=str(tiny_model), trainer_args=args, output_dir=tmp_path)
    result = run_job(spec, preference_rows(12))
    tensors = load_file(result.artifact_dir / "adapter_model.safetensors")
    assert any("score" in name for name in tensors)
    assert result.metrics["final_loss"] < result.metrics["first_loss"]
    assert {"test_accuracy", "test_ece", "temperature"} <= set(result.metrics)
    assert json.loads((result.artifact_dir / "reward_calibration.json").read_text())["temperature"] > 0

    scorer = load_reward_model(result.artifact_dir)
    row = preference_rows(1)[0]
    scores = scorer.score_batch([(row["prompt"], "Happy to help!"), (row["prompt"], "No.")])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
