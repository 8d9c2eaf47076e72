"""Amplification: sample k answers per logged prompt from the current model, score them, keep best-vs-worst
pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneloop.learn.reward_model import RewardModel
from tuneloop.model_files import load_causal_lm

# Origin of amplified rows, so a job's `repeat` can weigh them (or leave them out) like any other origin.
AMPLIFIED = "amplified"


@dataclass
class Generator:
    """A causal LM (base, or base + adapter) and its tokenizer, ready to sample answers."""

    model: Any
    tokenizer: Any


@dataclass
class AmplifyResult:
    """Amplified pairs next to the human ones, with the counts a report needs."""

    pairs: list[dict]
    human_pairs: list[dict] = field(default_factory=list)
    generated: int = 0  # completions sampled in total

    @property
    def rows(self) -> list[dict]:
        """Human pairs first, then amplified ones: the training rows."""
        return [*self.human_pairs, *self.pairs]

    @property
    def counts(self) -> dict[str, int]:
        """How much of the training set is human and how much generated."""
        return {"human": len(self.human_pairs), "amplified": len(self.pairs), "generated": self.generated}


def load_generator(base_model: str, adapter_dir: str | None = None) -> Generator:
    """Load the base model, with a PEFT adapter on top when `adapter_dir` is given."""
    model, tokenizer = load_causal_lm(base_model)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    return Generator(model, tokenizer)


def sample_answers(
    generator: Generator, prompt: list[dict], k: int, max_new_tokens: int = 48, temperature: float = 0.9
) -> list[str]:
    """k sampled assistant answers to one chat prompt."""
    import torch

    inputs = generator.tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = generator.model.generate(
            **inputs,
            do_sample=True,
            temperature=temperature,
            top_p=0.95,
            num_return_sequences=k,
            max_new_tokens=max_new_tokens,
            pad_token_id=generator.tokenizer.pad_token_id,
        )
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in generator.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def amplify(
    prompts: Sequence[list[dict]],
    generator: Generator,
    reward_model: RewardModel,
    k: int = 4,
    max_new_tokens: int = 48,
    min_margin: float = 0.0,
    human_pairs: Sequence[dict] = (),
    seed: int = 0,
) -> AmplifyResult:
    """Per prompt: sample k answers, score them, pair the best with the worst (`origin: amplified`)."""
    import torch

    torch.manual_seed(seed)
    result = AmplifyResult(pairs=[], human_pairs=list(human_pairs))
    for prompt in prompts:
        answers = list(dict.fromkeys(a for a in sample_answers(generator, prompt, k, max_new_tokens) if a))
        result.generated += k
        if len(answers) < 2:  # nothing to contrast
            continue
        scores = reward_model.score_batch([(prompt, a) for a in answers])
        best = max(range(len(answers)), key=scores.__getitem__)
        worst = min(range(len(answers)), key=scores.__getitem__)
        margin = scores[best] - scores[worst]
        if margin <= min_margin:
            continue
        result.pairs.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": answers[best]}],
                "rejected": [{"role": "assistant", "content": answers[worst]}],
                "origin": AMPLIFIED,
                "margin": margin,
            }
        )
    return result
