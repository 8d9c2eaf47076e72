"""The gate's model runner: each version under test is an "arm" (base model, adapter, prompt, decoding).

Arms that share a base model share one copy of it in memory, with their adapters resident side by side. Each
arm answers as its version is served (registry/composition.py): its system prompt, its in-context examples
(serve/examples.OfflineExamples), its max-tokens cap and repetition penalty, and its temperature and top-p
when it sets them (sampled under a fixed seed, so a gate re-run sees the same answers). A version that sets
no temperature is run greedily: its most likely answer.
Batched with left padding; generations and log-probabilities are cached per what the arm is, so an
evaluator shared by several gates (`gate.run_gates`) answers and scores as production once. An arm whose
base model has a GGUF file generates through llama.cpp (serve/backends/llamacpp.py), as the gateway serves
it and several times faster; log-probabilities and KL always come from transformers, the trainer's own
numerics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import BadRequest, NotFound
from tuneloop.learn.light_changes import word_limit
from tuneloop.learn.shared_prefix import PACKABLE_ATTENTION, pack_pairs, unpack_states
from tuneloop.model_files import load_causal_lm
from tuneloop.registry.composition import Decoding, with_system_prompt
from tuneloop.registry.versions import Version
from tuneloop.serve.backends.cores import IdleCores, torch_threads
from tuneloop.serve.examples import OfflineExamples

Messages = list[dict[str, str]]
SAMPLING_SEED = 0  # arms that sample draw from the same fixed seed on every gate run
# Scoring's logits are vocabulary-wide per completion token (16 answers of 256 tokens under a 49k vocabulary
# are 0.8 GB, and their log-softmax as much again): a pass takes only as many answers as keep them under this.
LOGITS_BUDGET = 64 * 2**20


@dataclass(frozen=True)
class Arm:
    """One version under evaluation: its base model directory, adapter (None = base), prompt and decoding."""

    name: str
    base_dir: Path
    adapter: Path | None = None
    system_prompt: str | None = None
    decoding: Decoding = field(default_factory=Decoding)
    gguf: Path | None = None  # the base model's weights for llama.cpp; None: generate with transformers
    examples: OfflineExamples | None = field(default=None, compare=False)  # shown under an example policy

    @classmethod
    def of(
        cls,
        name: str,
        base_dir: Path,
        version: Version | None,
        gguf: Path | None = None,
        examples: OfflineExamples | None = None,
    ) -> Arm:
        """The arm that answers as `version` is served (None: the bare base model)."""
        if version is None:
            return cls(name, base_dir, gguf=gguf)
        adapter = Path(version.artifact_path) if version.artifact_path else None
        decoding = Decoding.parse(version.decoding)
        return cls(name, base_dir, adapter, version.system_prompt, decoding, gguf, examples)

    def messages(self, prompt: Sequence[dict]) -> Messages:
        """The conversation as the arm's version serves it: its system prompt, then its examples."""
        messages = with_system_prompt(prompt, self.system_prompt)
        policy = self.decoding.examples
        if not (policy and self.examples):
            return messages
        return self.examples.show(messages, policy, word_limit(self.system_prompt))

    def shown(self, sources: list[Any]) -> list[Any]:
        """The retrieved sources (in rank order) the arm's version shows with a question."""
        return sources[: self.decoding.sources]

    @property
    def signature(self) -> str:
        """What the arm is, whatever it is called: two arms with one signature answer alike."""
        decoding = self.decoding.model_dump(mode="json")
        parts = [self.base_dir, self.adapter, self.system_prompt, decoding, self.gguf]
        return json.dumps(parts, sort_keys=True, default=str)

    @property
    def adapter_name(self) -> str:
        """The adapter's name where it is loaded: named by its directory, not by the arm, so an arm name
        used again for another version (the next gate's candidate) never finds the last one's weights."""
        return "a-" + hashlib.sha256(str(self.adapter).encode()).hexdigest()[:16]

    def generate_kwargs(self, max_new_tokens: int) -> dict[str, Any]:
        """transformers `generate` settings for this arm, within the suite's token limit."""
        d = self.decoding
        kwargs: dict[str, Any] = {
            "max_new_tokens": min(max_new_tokens, d.max_tokens or max_new_tokens),
            "repetition_penalty": d.repetition_penalty,
        }
        if d.temperature:  # top_k 0: nucleus sampling alone, as the gateway samples
            return {
                **kwargs,
                "do_sample": True,
                "temperature": d.temperature,
                "top_p": d.top_p or 1.0,
                "top_k": 0,
            }
        return {**kwargs, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}


class Evaluator:
    """Generates, scores log-probabilities and measures KL to the base for any registered arm."""

    def __init__(
        self, *, batch_size: int = 16, max_prompt_tokens: int = 512, max_answer_tokens: int = 256
    ) -> None:
        """`max_answer_tokens`: the longest answer any caller asks for (it sizes llama.cpp's KV slots)."""
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self.max_answer_tokens = max_answer_tokens
        self.arms: dict[str, Arm] = {}
        self._models: dict[Path, tuple[Any, Any]] = {}  # base dir -> (model, tokenizer)
        self._llama: dict[Path, Any] = {}  # GGUF file -> LlamaCppBatch
        self._cache: dict[tuple[str, str, int], str] = {}
        self._logprobs: dict[tuple[str, str, str], float] = {}
        self._cores = IdleCores()

    def add_arm(self, arm: Arm) -> None:
        """Register an arm; its base model and adapter load on first use."""
        if arm.adapter is not None and not (Path(arm.adapter) / "adapter_config.json").is_file():
            raise NotFound(f"{arm.name}: no PEFT adapter at {arm.adapter} (adapter_config.json missing)")
        self.arms[arm.name] = arm

    # -- loading -------------------------------------------------------------------------------------------

    def _load(self, arm: Arm) -> tuple[Any, Any]:
        base = Path(arm.base_dir)
        if base not in self._models:
            model, tokenizer = load_causal_lm(base)
            tokenizer.truncation_side = "left"  # keep the end of a long conversation
            self._models[base] = (model, tokenizer)
        model, tokenizer = self._models[base]
        if arm.adapter is not None and arm.adapter_name not in getattr(model, "peft_config", {}):
            from peft import PeftModel

            if hasattr(model, "peft_config"):
                model.load_adapter(str(arm.adapter), adapter_name=arm.adapter_name)
            else:
                model = PeftModel.from_pretrained(
                    model, str(arm.adapter), adapter_name=arm.adapter_name
                ).eval()
                self._models[base] = (model, tokenizer)
        return model, tokenizer

    @contextmanager
    def _active(self, arm_name: str, base: bool = False) -> Iterator[tuple[Any, Any]]:
        """The model switched to the arm's adapter (or to the bare base), and its tokenizer."""
        arm = self.arms[arm_name]
        model, tokenizer = self._load(arm)
        peft = hasattr(model, "peft_config")
        if base or arm.adapter is None:
            with model.disable_adapter() if peft else nullcontext():
                yield model, tokenizer
        else:
            model.set_adapter(arm.adapter_name)
            yield model, tokenizer

    def _prompt_ids(self, tokenizer: Any, arm: Arm, prompt: Sequence[dict]) -> list[int]:
        text = tokenizer.apply_chat_template(arm.messages(prompt), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-self.max_prompt_tokens :]

    # -- generation ----------------------------------------------------------------------------------------

    def generate(self, arm_name: str, prompts: Sequence[Sequence[dict]], max_new_tokens: int) -> list[str]:
        """Greedy answers of one arm to chat prompts (cached, so suites sharing prompts pay once)."""
        signature = self.arms[arm_name].signature
        keys = [(signature, json.dumps(list(p), sort_keys=True), max_new_tokens) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            answers = self._generate_batch(arm_name, [json.loads(k[1]) for k in chunk], max_new_tokens)
            self._cache.update(zip(chunk, answers, strict=True))
        return [self._cache[k] for k in keys]

    def outputs(self, arm_name: str) -> list[str]:
        """Every answer the arm has generated so far (for scans across suites)."""
        signature = self.arms[arm_name].signature
        return [answer for (arm, _, _), answer in self._cache.items() if arm == signature]

    def _generate_batch(self, arm_name: str, prompts: list[Messages], max_new_tokens: int) -> list[str]:
        import torch

        arm = self.arms[arm_name]
        if arm.gguf is not None:
            return self._generate_llamacpp(arm, prompts, max_new_tokens)
        with self._active(arm_name) as (model, tokenizer):
            ids = [self._prompt_ids(tokenizer, arm, p) for p in prompts]
            batch = tokenizer.pad({"input_ids": ids}, padding=True, padding_side="left", return_tensors="pt")
            with torch.no_grad(), torch.random.fork_rng(), torch_threads(self._cores.threads()):
                torch.manual_seed(SAMPLING_SEED)
                out = model.generate(
                    **batch, pad_token_id=tokenizer.pad_token_id, **arm.generate_kwargs(max_new_tokens)
                )
        new = out[:, batch["input_ids"].shape[1] :]
        return [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]

    def _generate_llamacpp(self, arm: Arm, prompts: list[Messages], max_new_tokens: int) -> list[str]:
        """The same answers through llama.cpp, each prompt a sequence seeded by its index."""
        import torch

        from tuneloop.serve.backends.base import BASE
        from tuneloop.serve.backends.batching import Sequence as Row
        from tuneloop.serve.backends.batching import run_to_end
        from tuneloop.serve.backends.llamacpp import SLOT_CONTEXT, LlamaCppBatch

        # llama.cpp on a CPU gains little past 8 rows at once, and each slot holds its KV cache up front:
        # one as long as a prompt and an answer can be, not the server's (which leaves room for retrieval).
        slots = min(self.batch_size, 8)
        if arm.gguf not in self._llama:
            context = self.max_prompt_tokens + self.max_answer_tokens + 1
            self._llama[arm.gguf] = LlamaCppBatch.for_model(
                arm.base_dir, arm.gguf, slots=slots, context=min(context, SLOT_CONTEXT)
            )
        batch = self._llama[arm.gguf]
        if arm.adapter is not None and arm.adapter_name not in batch.adapters:
            batch.load_adapter(arm.adapter_name, arm.adapter)
        d, answers = arm.decoding, [""] * len(prompts)
        max_tokens = min(max_new_tokens, d.max_tokens or max_new_tokens, batch.max_positions // 2)
        room = batch.max_positions - 1 - max_tokens  # a slot holds the prompt's end and the whole answer

        def collect(i: int):
            def emit(item: tuple) -> None:
                if item[0] == "done":
                    answers[i] = item[1].strip()

            return emit

        seqs = [
            Row(
                prompt_ids=self._prompt_ids(batch.tokenizer, arm, prompt)[-room:],
                adapter=arm.adapter_name if arm.adapter is not None else BASE,
                max_tokens=max_tokens,
                temperature=d.temperature or 0.0,
                top_p=d.top_p or 1.0,
                repetition_penalty=d.repetition_penalty or 1.0,
                generator=torch.Generator().manual_seed(SAMPLING_SEED + i),
                emit=collect(i),
            )
            for i, prompt in enumerate(prompts)
        ]
        run_to_end(batch, seqs, slots)
        return answers

    # -- scoring -------------------------------------------------------------------------------------------

    def _pairs_ids(self, tokenizer: Any, arm: Arm, items: Sequence[tuple[Sequence[dict], str]]) -> list:
        """(prompt ids, completion ids) per item; the completion includes the end-of-turn tokens."""
        out = []
        for prompt, completion in items:
            messages = arm.messages(prompt)
            head = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": completion}], tokenize=False
            )
            # Chat templates render the prompt as a prefix of the whole conversation, so split the text there.
            if not full.startswith(head):
                raise BadRequest(
                    f"{arm.name}: the model's chat template does not render a prompt as a prefix"
                )
            prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"][-self.max_prompt_tokens :]
            completion_ids = tokenizer(full[len(head) :], add_special_tokens=False)["input_ids"]
            out.append((prompt_ids, completion_ids))
        return out

    def _passes(self, model: Any, encoded: list) -> Iterator[list]:
        """`encoded` in runs of rows whose scored logits fit LOGITS_BUDGET (at most batch_size rows each)."""
        per_position = 4 * model.config.vocab_size  # bytes of fp32 logits
        run: list = []
        widest = 0  # positions the run's logits keep: its longest completion, plus one
        for item in encoded:
            wider = max(widest, len(item[1]) + 1)
            if run and (len(run) == self.batch_size or (len(run) + 1) * wider * per_position > LOGITS_BUDGET):
                yield run
                run, wider = [], len(item[1]) + 1
            run.append(item)
            widest = wider
        if run:
            yield run

    def _completion_logprobs(self, model: Any, tokenizer: Any, chunk: list) -> list[Any]:
        """Log-softmax at the positions that predict each completion token: one [len(c), vocab] per item.

        Left padding puts every completion at the end of its row, so the LM head runs only over the last
        positions (`logits_to_keep`), not whole prompts: with a 49k vocabulary that is most of the cost.
        Each item's rows are normalised apart, so none holds on to the padded logits of the whole chunk.
        """
        import torch

        seqs = [p + c for p, c in chunk]
        batch = tokenizer.pad({"input_ids": seqs}, padding=True, padding_side="left", return_tensors="pt")
        mask = batch["attention_mask"]
        keep = max(len(c) for _, c in chunk) + 1
        # The server's users may hold a core: threads that wait on a busy one stall every layer.
        with torch.no_grad(), torch_threads(self._cores.threads()):
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),  # positions count real tokens only
                logits_to_keep=keep,
            ).logits
        # Column i of logits is sequence index width - keep + i; the token at index j is predicted at j - 1.
        return [
            torch.log_softmax(logits[row, keep - 1 - len(c) : keep - 1].float(), dim=-1)
            for row, (_, c) in enumerate(chunk)
        ]

    def logprobs(self, arm_name: str, items: Sequence[tuple[Sequence[dict], str]]) -> list[float]:
        """Sum of log p(completion | prompt) under the arm, per (prompt, completion text) item."""
        import torch

        arm = self.arms[arm_name]
        keys = [(arm.signature, json.dumps(list(p), sort_keys=True), c) for p, c in items]
        todo = list(dict.fromkeys(k for k in keys if k not in self._logprobs))
        with self._active(arm_name) as (model, tokenizer):
            encoded = self._pairs_ids(tokenizer, arm, [(json.loads(p), c) for _, p, c in todo])
            done = 0
            for chunk in self._passes(model, encoded):
                logps = self._completion_logprobs(model, tokenizer, chunk)
                for key, logp, (_, c) in zip(todo[done : done + len(chunk)], logps, chunk, strict=True):
                    self._logprobs[key] = float(logp.gather(1, torch.tensor(c)[:, None]).sum())
                done += len(chunk)
        return [self._logprobs[k] for k in keys]

    def margins(self, arm_name: str, pairs: Sequence[tuple[Sequence[dict], str, str]]) -> list[float]:
        """log p(chosen) - log p(rejected) under the arm, per (prompt, chosen, rejected): the prompt is run
        once for both answers (learn/shared_prefix.py's packed rows), where `logprobs` would run it twice."""
        arm = self.arms[arm_name]
        model, _ = self._load(arm)
        if model.config._attn_implementation not in PACKABLE_ATTENTION:  # one that would not read the mask
            chosen = self.logprobs(arm_name, [(p, c) for p, c, _ in pairs])
            rejected = self.logprobs(arm_name, [(p, r) for p, _, r in pairs])
            return [c - r for c, r in zip(chosen, rejected, strict=True)]
        keys = [
            ((arm.signature, prompt, c), (arm.signature, prompt, r))
            for prompt, c, r in ((json.dumps(list(p), sort_keys=True), c, r) for p, c, r in pairs)
        ]
        todo = [i for i, both in enumerate(keys) if not all(k in self._logprobs for k in both)]
        per_pass = max(1, self.batch_size // 2)
        with self._active(arm_name) as (model, tokenizer):
            for start in range(0, len(todo), per_pass):
                chunk = todo[start : start + per_pass]
                items = [(pairs[i][0], answer) for i in chunk for answer in pairs[i][1:]]
                sums = self._packed_logprobs(model, self._pairs_ids(tokenizer, arm, items))
                for key, logp in zip([k for i in chunk for k in keys[i]], sums, strict=True):
                    self._logprobs[key] = logp
        return [self._logprobs[c] - self._logprobs[r] for c, r in keys]

    def _packed_logprobs(self, model: Any, encoded: list) -> list[float]:
        """Sum of log p(completion | prompt) per item of `encoded`, (prompt ids, completion ids) in pairs of
        one prompt's two answers, each pair run as one packed row."""
        import torch

        rows = [p + c for p, c in encoded[0::2]] + [p + c for p, c in encoded[1::2]]  # [chosen; rejected]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        implementation = model.config._attn_implementation
        packed = pack_pairs(ids, mask, additive=implementation == "eager")
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT's layers stay in
        with torch.no_grad(), torch_threads(self._cores.threads()):
            hidden = lm.base_model(
                input_ids=packed.input_ids,
                attention_mask=packed.attention_mask,
                position_ids=packed.position_ids,
            ).last_hidden_state
            states = unpack_states(hidden, packed, len(rows), width)
            head = lm.get_output_embeddings()
            order = encoded[0::2] + encoded[1::2]
            sums = []
            for row, (prompt, completion) in enumerate(order):
                # The token at index j is predicted at j - 1: only those positions go through the 49k head.
                at = states[row, len(prompt) - 1 : len(prompt) + len(completion) - 1]
                logp = torch.log_softmax(head(at).float(), dim=-1)
                sums.append(float(logp.gather(1, torch.tensor(completion)[:, None]).sum()))
        half = len(sums) // 2
        return [x for pair in zip(sums[:half], sums[half:], strict=True) for x in pair]

    def kl_from_base(self, arm_name: str, items: Sequence[tuple[Sequence[dict], str]]) -> list[float]:
        """Mean per-token KL(arm || base) in nats over each completion's positions, teacher-forced."""
        arm = self.arms[arm_name]
        if arm.adapter is None:  # the base itself
            return [0.0] * len(items)
        model, tokenizer = self._load(arm)
        result: list[float] = []
        for chunk in self._passes(model, self._pairs_ids(tokenizer, arm, items)):
            with self._active(arm_name) as (m, tok):
                arm_logp = self._completion_logprobs(m, tok, chunk)
            with self._active(arm_name, base=True) as (m, tok):
                base_logp = self._completion_logprobs(m, tok, chunk)
            for a, b in zip(arm_logp, base_logp, strict=True):
                result.append(float((a.exp() * (a - b)).sum(-1).mean()))
        return result
