"""Continuous batching for the in-process backends: sequences join and leave the running batch between steps.

Everything here runs on the backend's single worker thread, which owns the model.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import BadRequest

Emit = Callable[[tuple], None]
Observer = Callable[["Sequence", float], None]  # a finished sequence and when it finished (monotonic)


@dataclass(eq=False)
class Sequence:
    """One choice being generated, plus the channel (`emit`) its deltas go back through."""

    prompt_ids: list[int]
    adapter: str
    max_tokens: int
    emit: Emit
    owner: str = ""
    # Sampling: greedy with no stop strings, penalties or bias unless set.
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    generator: Any = None  # torch.Generator, per sequence so a seed reproduces the text; greedy needs none
    # JSON mode (json_mode.py): the token ids that may come next after `tokens`; None allows any.
    allowed: Callable[[list[int]], list[int] | None] | None = None
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    completion_tokens: int = 0
    emitted: int = 0  # characters already sent as deltas
    pos: int = 0  # position id of the pending token
    pending: int = -1  # sampled token not yet fed through the model
    done: bool = False
    queued_at: float = field(default_factory=time.monotonic)  # made just before it is queued
    first_token_at: float | None = None

    @property
    def context(self) -> list[int]:
        """The ids to prefill on admission: the prompt, and the tokens generated so far by a sequence that
        was preempted (so it goes on where it stopped)."""
        return self.prompt_ids + self.tokens

    @property
    def holdback(self) -> int:
        """Characters kept unsent so a stop string that is still forming never leaks into the stream."""
        return max((len(s) for s in self.stop), default=1) - 1


# Below this, logits divided by the temperature overflow to inf; such a request is greedy anyway.
MIN_TEMPERATURE = 1e-4


def sample(logits: Any, seqs: list[Sequence]) -> list[int]:
    """Next token per row: argmax at temperature 0, else nucleus sampling with the row's own generator."""
    import torch

    out = []
    for row, s in zip(logits, seqs, strict=True):
        if s.repetition_penalty != 1.0:
            row = penalize_repetition(row, s)
        if (s.presence_penalty or s.frequency_penalty) and s.tokens:
            row = penalize_presence_and_frequency(row, s)
        if s.logit_bias:
            ids = torch.tensor(list(s.logit_bias), dtype=torch.long)
            row = row.index_add(0, ids, torch.tensor(list(s.logit_bias.values()), dtype=row.dtype))
        if s.allowed is not None and (keep := s.allowed(s.tokens)):
            mask = torch.full_like(row, float("-inf"))
            mask[torch.tensor(keep, dtype=torch.long)] = 0
            row = row + mask
        if s.temperature < MIN_TEMPERATURE:
            out.append(int(row.argmax()))
            continue
        probs = torch.softmax(row.float() / s.temperature, dim=-1)
        if s.top_p < 1.0:
            sorted_p, idx = probs.sort(descending=True)
            keep = (sorted_p.cumsum(0) - sorted_p) < s.top_p  # the smallest prefix reaching top_p
            keep[0] = True  # a top_p that underflows float32 still keeps the likeliest token
            pick = torch.multinomial(sorted_p * keep, 1, generator=s.generator)
            out.append(int(idx[pick]))
        else:
            out.append(int(torch.multinomial(probs, 1, generator=s.generator)))
    return out


def penalize_repetition(row: Any, s: Sequence) -> Any:
    """The row's logits with every token already in the context made less (penalty > 1) likely.

    As transformers' RepetitionPenaltyLogitsProcessor: positive logits are divided, negative multiplied.
    """
    import torch

    seen = torch.tensor(sorted(set(s.prompt_ids) | set(s.tokens)), dtype=torch.long)
    row = row.clone()
    scores = row[seen]
    row[seen] = torch.where(scores < 0, scores * s.repetition_penalty, scores / s.repetition_penalty)
    return row


def penalize_presence_and_frequency(row: Any, s: Sequence) -> Any:
    """The row's logits less OpenAI's penalties: `frequency` per earlier occurrence in the generated text,
    `presence` once for any (the prompt is not counted, as in OpenAI's and vLLM's definition)."""
    import torch

    counts = torch.bincount(torch.tensor(s.tokens, dtype=torch.long), minlength=row.shape[-1])
    counts = counts[: row.shape[-1]].to(row.dtype)
    return row - counts * s.frequency_penalty - (counts > 0).to(row.dtype) * s.presence_penalty


def default_threads() -> int:
    """Threads for a model's forward pass: half the cores. On a small shared machine, OpenMP threads that lose
    their core to another process stall each other (measured 20-40x slower decode with 2 threads on 2 busy
    cores)."""
    return max(1, (os.cpu_count() or 2) // 2)


def run_to_end(batch: Batch, seqs: list[Sequence], slots: int) -> None:
    """Generate `seqs` to the end on this thread, at most `slots` at once (offline generation, no server)."""
    pending = list(seqs)
    while pending or batch.active:
        room = slots - len(batch.active)
        if pending and room > 0:
            batch.admit(pending[:room])
            pending = pending[room:]
        else:
            batch.step()
        batch.drop_finished()


def _left_pad(x: Any, length: int, dim: int) -> Any:
    import torch.nn.functional as F

    missing = length - x.shape[dim]
    if missing == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim % x.dim()) + [missing, 0]
    return F.pad(x, pad)


class Batch(ABC):
    """The rows decoding together and their per-row state; subclasses own the model and its KV cache."""

    def __init__(self, tokenizer: Any, eos_ids: set[int], max_positions: int) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.max_positions = max_positions
        self.rows: list[Sequence] = []
        # Admitted, holding a slot, their prompts prefilled a chunk a step beside the rows' decoding.
        self.filling: list[Sequence] = []
        self.observer: Observer | None = None  # told of every finished sequence (serving metrics)

    @property
    def active(self) -> list[Sequence]:
        """The sequences holding a place in the batch: running rows and prompts still being prefilled."""
        return [*self.rows, *self.filling]

    @abstractmethod
    def admit(self, seqs: list[Sequence]) -> None:
        """Take `seqs` in: prefill them and take their first token now (they join the rows), or hold them in
        `filling` for the next steps to prefill."""

    @abstractmethod
    def step(self) -> None:
        """Feed every row its pending token and take the next one."""

    @abstractmethod
    def load_adapter(self, name: str, path: Path) -> None:
        """Make the PEFT LoRA adapter at `path` selectable as `name`; BadRequest if it cannot be loaded."""

    @abstractmethod
    def unload_adapter(self, name: str) -> None:
        """Drop adapter `name`; no running row uses it any more."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free what the garbage collector cannot (memory held by a C library)."""

    @abstractmethod
    def _release(self, keep: list[int], gone: list[Sequence]) -> None:
        """Free the cache of `gone` rows; `keep` indexes the rows (before removal) that stay."""

    def drop_finished(self) -> None:
        """Remove finished and cancelled rows (and cancelled prompts still filling), freeing their slots."""
        self._remove(lambda s: s.done or s.cancelled)

    def preempt(self, seqs: list[Sequence]) -> None:
        """Take the unfinished `seqs` out, freeing their slots; admitted again, they prefill their `context`
        and go on."""
        out = set(seqs)
        self._remove(out.__contains__)

    def _remove(self, leaving: Callable[[Sequence], bool]) -> None:
        gone = [s for s in self.active if leaving(s)]
        if not gone:
            return
        keep = [i for i, s in enumerate(self.rows) if not leaving(s)]
        self.filling = [s for s in self.filling if not leaving(s)]
        self._release(keep, gone)
        self.rows = [self.rows[i] for i in keep]

    def fail_all(self, error: Exception) -> None:
        """Send `error` to every sequence in the batch and empty it (after a model failure or at shutdown)."""
        active = self.active
        for s in active:
            s.emit(("error", error))
        self._release([], active)
        self.rows, self.filling = [], []

    def _take(self, seqs: list[Sequence], tokens: list[int]) -> None:
        for s, token in zip(seqs, tokens, strict=True):
            if not s.cancelled:
                self._push(s, token)

    def _push(self, s: Sequence, token: int) -> None:
        s.completion_tokens += 1
        if s.first_token_at is None:
            s.first_token_at = time.monotonic()
        if token in self.eos_ids:
            self._finish(s, self._decode(s), "stop")
            return
        s.tokens.append(token)
        s.pending = token
        text = self._decode(s)
        hits = [i for i in (text.find(stop) for stop in s.stop) if i >= 0]
        if hits:
            self._finish(s, text[: min(hits)], "stop")
        elif len(s.tokens) >= s.max_tokens or s.pos + 1 >= self.max_positions:
            self._finish(s, text, "length")
        else:
            safe = len(text) - s.holdback
            # A trailing U+FFFD is half of a multi-byte character: wait for the rest.
            while safe > 0 and text[safe - 1] == "\ufffd":
                safe -= 1
            if safe > s.emitted:
                s.emit(("delta", text[s.emitted : safe]))
                s.emitted = safe

    def _finish(self, s: Sequence, text: str, reason: str) -> None:
        # A multi-byte character cut off by the end (max_tokens, EOS, a stop string) decodes as one U+FFFD,
        # which the stream held back: the answer ends before it rather than in a replacement character.
        text = text.removesuffix("\ufffd")
        if len(text) > s.emitted:
            s.emit(("delta", text[s.emitted :]))
        s.emitted = len(text)
        s.done = True
        s.emit(("done", text, reason, s.completion_tokens))
        if self.observer is not None:
            self.observer(s, time.monotonic())

    def _decode(self, s: Sequence) -> str:
        return self.tokenizer.decode(s.tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class TorchBatch(Batch):
    """Rows of a transformers model (PEFT adapters named per row) in one shared, left-padded KV cache."""

    def __init__(
        self, model: Any, tokenizer: Any, eos_ids: set[int], pad_id: int, max_positions: int
    ) -> None:
        super().__init__(tokenizer, eos_ids, max_positions)
        self.model = model
        self.peft = False  # whether `model` is a PeftModel, so rows must name their adapters
        self.pad_id = pad_id
        self.cache: Any = None
        self.mask: Any = None  # (rows, cached tokens), 0 where left padding

    def _forward(self, seqs: list[Sequence], **kwargs: Any) -> Any:
        if self.peft:  # always name adapters: a PeftModel otherwise applies its "active" adapter to every row
            kwargs["adapter_names"] = [s.adapter for s in seqs]
        return self.model(use_cache=True, **kwargs)

    def admit(self, seqs: list[Sequence]) -> None:
        """Prefill `seqs` together, merge their cache into the batch and take their first token."""
        import torch

        contexts = [s.context for s in seqs]
        width = max(len(c) for c in contexts)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, context) in enumerate(zip(seqs, contexts, strict=True)):
            ids[i, width - len(context) :] = torch.tensor(context)
            mask[i, width - len(context) :] = 1
            s.pos = len(context)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(
            seqs, input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
        )
        self._merge(out.cache, mask)
        self.rows.extend(seqs)
        self._take(seqs, sample(out.logits[:, -1, :], seqs))

    def step(self) -> None:
        """Feed every row its pending token and take the next one."""
        import torch

        ids = torch.tensor([[s.pending] for s in self.rows], dtype=torch.long)
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=torch.long)], dim=1)
        positions = torch.tensor([[s.pos] for s in self.rows], dtype=torch.long)
        out = self._forward(
            self.rows, input_ids=ids, attention_mask=self.mask, position_ids=positions, cache=self.cache
        )
        self.cache = out.cache
        for s in self.rows:
            s.pos += 1
        self._take(self.rows, sample(out.logits[:, -1, :], self.rows))

    def load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        try:
            if not self.peft:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
                self.peft = True
            else:
                self.model.load_adapter(path, adapter_name=name, is_trainable=False)
        except Exception as exc:
            raise BadRequest(f"could not load adapter {name!r} from {path}: {exc}") from exc

    def unload_adapter(self, name: str) -> None:
        if len(self.model.peft_config) == 1:  # the last one: go back to the plain model
            self.model = self.model.unload()
            self.peft = False
        else:
            self.model.delete_adapter(name)

    def _release(self, keep: list[int], gone: list[Sequence]) -> None:
        """Select the kept rows' cache and trim the left padding no kept row needs any more."""
        import torch

        if not keep:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, dtype=torch.long)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        first = int((self.mask.sum(0) > 0).nonzero()[0])
        if first > 0:
            for layer in self.cache.layers:
                layer.keys = layer.keys[..., first:, :]
                layer.values = layer.values[..., first:, :]
            self.mask = self.mask[:, first:]

    def _merge(self, cache: Any, mask: Any) -> None:
        import torch

        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width, -2), _left_pad(new.keys, width, -2)], dim=0)
            old.values = torch.cat(
                [_left_pad(old.values, width, -2), _left_pad(new.values, width, -2)], dim=0
            )
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)], dim=0)
