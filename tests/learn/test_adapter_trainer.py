"""DPO and KTO adapters: the loss falls, only LoRA weights move, and the adapter loads with PEFT."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tests.learn.data import kto_rows, preference_rows
from tuneloop.errors import BadRequest
from tuneloop.learn.adapter_trainer import _score_completions_only, steps_take, train_dpo, train_kto
from tuneloop.learn.job_config import JobSpec
from tuneloop.model_files import load_causal_lm, model_hash

FAST = {"max_steps": 8, "learning_rate": 5e-3, "save_strategy": "no", "max_length": 96}


class BaseWeightsWatch(TrainerCallback):
    """Snapshots the non-LoRA weights when training starts and compares them when it ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        after = dict(model.named_parameters())
        self.changed = [n for n, w in self.before.items() if not torch.equal(w, after[n].detach())]


@pytest.fixture(scope="module", params=["dpo", "kto"])
def trained(request, tiny_model, tmp_path_factory):
    """Train each policy kind once: (kind, metrics, weights watch, adapter dir, base hashes)."""
    kind = request.param
    out = tmp_path_factory.mktemp(kind)
    spec = JobSpec(kind=kind, base_model=str(tiny_model), trainer_args=FAST, output_dir=out)
    hash_before = model_hash(tiny_model)
    watch = BaseWeightsWatch()
    if kind == "dpo":
        metrics = train_dpo(spec, preference_rows(16), out / "adapter", callbacks=[watch])
    else:
        metrics = train_kto(spec, kto_rows(16), out / "adapter", callbacks=[watch])
    return kind, metrics, watch, out / "adapter", (hash_before, model_hash(tiny_model))


def test_policy_training_lowers_the_loss(trained):
    _, metrics, _, _, _ = trained
    assert metrics["steps"] == 8
    assert metrics["final_loss"] < metrics["first_loss"]


def test_policy_training_leaves_base_weights_unchanged(trained):
    _, _, watch, _, (hash_before, hash_after) = trained
    assert watch.before and watch.changed == []
    assert hash_after == hash_before


def test_policy_training_moves_the_lora_weights(trained):
    _, _, _, adapter, _ = trained
    tensors = load_file(adapter / "adapter_model.safetensors")
    assert tensors and all("lora_" in name for name in tensors)  # the artifact holds the adapter only
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero: non-zero means trained


def test_saved_adapter_loads_with_peft_and_changes_the_output(trained, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, _, _, adapter, _ = trained
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert not torch.allclose(tuned, base)


def test_a_warm_start_continues_from_the_given_adapter(trained, tiny_model, tmp_path):
    kind, metrics, _, adapter, _ = trained
    spec = JobSpec(
        kind=kind,
        base_model=str(tiny_model),
        trainer_args=FAST,
        init_adapter=str(adapter),
        output_dir=tmp_path,
    )
    train = train_dpo if kind == "dpo" else train_kto
    rows = preference_rows(16) if kind == "dpo" else kto_rows(16)
    watch = BaseWeightsWatch()
    warm = train(spec, rows, tmp_path / "adapter", callbacks=[watch])
    assert warm["first_loss"] < metrics["first_loss"]  # it starts where the first adapter ended
    assert watch.changed == []


def test_a_warm_start_from_an_adapter_of_another_rank_is_refused(trained, tiny_model, tmp_path):
    kind, _, _, adapter, _ = trained
    spec = JobSpec(
        kind=kind, base_model=str(tiny_model), lora={"r": 4}, init_adapter=str(adapter), output_dir=tmp_path
    )
    with pytest.raises(BadRequest, match="has rank 16; this job trains rank 4"):
        if kind == "dpo":
            train_dpo(spec, preference_rows(2), tmp_path / "adapter")
        else:
            train_kto(spec, kto_rows(2), tmp_path / "adapter")


def test_scoring_only_the_completions_on_a_cpu_keeps_trls_log_probs(tiny_model):
    from trl.trainer import utils

    model, _ = load_causal_lm(tiny_model)
    utils.add_fused_lm_head(model)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 12, 13, 0, 0]])
    completion = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]])
    labels = ids.masked_fill(completion == 0, -100)
    with torch.no_grad():
        every_position = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
        with _score_completions_only():
            assert utils._use_triton(torch.device("cpu"))  # TRL's switch for projecting scored positions only
            completions_only = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs
    assert not utils._use_triton(torch.device("cpu"))
    assert torch.allclose(completions_only, every_position, atol=1e-6)
    assert (completions_only[completion[:, 1:] == 0] == 0).all()


def test_a_job_whose_steps_end_within_a_pass_computes_only_the_rows_they_reach(tiny_model, tmp_path):
    args = {**FAST, "max_steps": 2, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 2}
    spec = JobSpec(kind="dpo", base_model=str(tiny_model), trainer_args=args, output_dir=tmp_path)
    metrics = train_dpo(spec, preference_rows(16), tmp_path / "adapter")
    assert (metrics["rows"], metrics["rows_trained"], metrics["steps"]) == (16, 4, 2)


def test_the_rows_a_job_reaches_are_a_seeded_sample_and_all_when_the_steps_pass_over_them():
    from transformers import TrainingArguments

    rows = [{"i": i} for i in range(40)]
    few = TrainingArguments(output_dir="unused", max_steps=3, per_device_train_batch_size=2, use_cpu=True)
    picked = steps_take(rows, few, seed=7)
    assert len(picked) == 6 and picked == steps_take(rows, few, seed=7) != steps_take(rows, few, seed=8)
    assert picked == sorted(picked, key=lambda r: r["i"])
    many = TrainingArguments(output_dir="unused", max_steps=30, per_device_train_batch_size=2, use_cpu=True)
    assert steps_take(rows, many, seed=7) == rows
    epochs = TrainingArguments(output_dir="unused", num_train_epochs=1, use_cpu=True)
    assert steps_take(rows, epochs, seed=7) == rows
