"""A DPO pair computes its shared prompt once, with TRL's log-probs, gradients and losses unchanged."""

from __future__ import annotations

import contextlib

import pytest
import torch

from tests.learn.data import preference_rows
from tuneloop.learn import adapter_trainer, reward_model, shared_prefix
from tuneloop.learn.adapter_trainer import train_dpo
from tuneloop.learn.job_config import DEFAULT_LORA, JobSpec
from tuneloop.learn.reward_model import train_reward_model
from tuneloop.learn.shared_prefix import pack_pairs, shared_prefix_pairs
from tuneloop.model_files import load_causal_lm

PAD = 0


def _pair_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TRL's layout: [chosen rows; rejected rows], right-padded, completion positions marked."""
    pairs = [  # (prompt, chosen, rejected)
        ([5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22], [30, 31, 32, 33, 34, 35]),
        ([5, 6, 7], [40, 41, 42, 43], [40, 41]),  # the rejected answer starts like the chosen one
        ([9, 8, 7, 6, 5], [50], [51, 52, 53, 54, 55, 56, 57, 58]),
    ]
    rows = [p + c for p, c, _ in pairs] + [p + r for p, _, r in pairs]
    completion = [[0] * len(p) + [1] * len(c) for p, c, _ in pairs] + [
        [0] * len(p) + [1] * len(r) for p, _, r in pairs
    ]
    width = max(map(len, rows))
    ids = torch.tensor([row + [PAD] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    completion_mask = torch.tensor([c + [0] * (width - len(c)) for c in completion])
    return ids, mask, completion_mask


@pytest.fixture(params=["sdpa", "eager"])
def lora_model(request, tiny_model):
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    model, _ = load_causal_lm(tiny_model)
    model.set_attn_implementation(request.param)
    add_fused_lm_head(model)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **DEFAULT_LORA))
    torch.manual_seed(1)
    for name, weight in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero, which would leave A's gradient zero too
            torch.nn.init.normal_(weight, std=0.05)
    return model, peft_model


def _log_probs_and_grads(peft_model, ids, mask, completion) -> tuple[torch.Tensor, torch.Tensor]:
    peft_model.zero_grad()
    labels = ids.masked_fill(completion == 0, -100)
    log_probs = peft_model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).log_probs
    per_row = log_probs.sum(dim=1)
    chosen, rejected = per_row.chunk(2)
    (chosen - rejected).sum().backward()
    grads = torch.cat([w.grad.flatten() for w in peft_model.parameters() if w.grad is not None])
    return per_row.detach(), grads


def test_a_packed_pair_batch_gives_trls_log_probs_and_gradients(lora_model):
    model, peft_model = lora_model
    batch = _pair_batch()
    separate, separate_grads = _log_probs_and_grads(peft_model, *batch)
    with shared_prefix_pairs(model):
        packed, packed_grads = _log_probs_and_grads(peft_model, *batch)
    assert torch.allclose(packed, separate, atol=1e-4)
    assert torch.allclose(packed_grads, separate_grads, atol=1e-5, rtol=1e-3)


def test_a_pair_shares_its_common_start_and_each_answer_keeps_its_positions():
    ids, mask, _ = _pair_batch()
    packed = pack_pairs(ids, mask)
    # prompt (8) + chosen (3) + rejected (6); prompt (3) + "40 41" shared + "42 43" + nothing; 5 + 1 + 8
    assert [int((row != PAD).sum()) for row in packed.input_ids] == [17, 7, 14]
    assert packed.position_ids[0, :17].tolist() == [*range(11), *range(8, 14)]
    rejected_rest, chosen_rest = slice(11, 17), slice(8, 11)
    assert not packed.attention_mask[0, 0, rejected_rest, chosen_rest].any()
    assert packed.attention_mask[0, 0, rejected_rest, :8].all()


def test_other_batches_run_unpacked_and_the_backbone_is_restored(lora_model):
    model, _ = lora_model
    odd = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        before = model.base_model(input_ids=odd, attention_mask=torch.ones_like(odd)).last_hidden_state
        with shared_prefix_pairs(model):
            inside = model.base_model(input_ids=odd, attention_mask=torch.ones_like(odd)).last_hidden_state
    assert torch.equal(inside, before)
    assert "forward" not in vars(model.base_model)


@pytest.mark.parametrize("kind", ["dpo", "reward"])
def test_training_on_shared_prompts_keeps_the_loss_curve(kind, tiny_model, tmp_path, monkeypatch):
    args = {"max_steps": 4, "learning_rate": 5e-3, "save_strategy": "no", "max_length": 96}
    spec = JobSpec(kind=kind, base_model=str(tiny_model), trainer_args=args, output_dir=tmp_path)
    train = train_dpo if kind == "dpo" else train_reward_model
    rows = preference_rows(12)
    batches = []
    monkeypatch.setattr(shared_prefix, "pack_pairs", lambda *a, **k: batches.append(a) or pack_pairs(*a, **k))
    packed = train(spec, rows, tmp_path / "packed")
    assert batches  # every step (and DPO's reference log-probs) ran packed
    for module in (adapter_trainer, reward_model):
        monkeypatch.setattr(module, "shared_prefix_pairs", lambda model, device: contextlib.nullcontext())
    separate = train(spec, rows, tmp_path / "separate")
    for loss in ("first_loss", "final_loss"):
        assert packed[loss] == pytest.approx(separate[loss], rel=1e-3, abs=1e-4)
