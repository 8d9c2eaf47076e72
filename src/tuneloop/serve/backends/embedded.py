"""The in-process backend: transformers + PEFT on CPU, many LoRA adapters resident, requests batched.

One worker thread owns the model. The event loop only tokenizes, enqueues and waits, so generation never
blocks it. Sequences join the running batch as slots free up (continuous batching) and each row names its
own adapter, so a batch can mix tenants without reloading anything.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.errors import BadRequest, Conflict, NotFound, Overloaded, TuneloopError
from tuneloop.model_files import BASE_MODEL_NAME, load_causal_lm, resolve_model
from tuneloop.serve.backends.base import (
    BASE,
    Backend,
    Choice,
    Completion,
    GenerationRequest,
    TextStream,
    system_roles,
)
from tuneloop.serve.backends.batching import Batch, Observer, Sequence, TorchBatch, default_threads
from tuneloop.serve.backends.json_mode import JsonMode
from tuneloop.serve.backends.scheduling import admissible, preemptible

OTHERS_SHARE = 4  # a quarter of the waiting queue stays open to tenants other than the one filling it

if TYPE_CHECKING:
    from tuneloop.config import Settings


def stop_token_ids(eos: int | list[int] | None, tokenizer: Any) -> set[int]:
    """The tokens that end an answer: the generation config's EOS (one or several) and the tokenizer's."""
    ids = {eos} if isinstance(eos, int) else set(eos or ())
    return ids | {tokenizer.eos_token_id}


def _sender(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Callable[[tuple], None]:
    def send(item: tuple) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return send


class EmbeddedBackend(Backend):
    """Serve a local Hugging Face model directory, with LoRA adapters switched per request."""

    def __init__(
        self,
        model_dir: Path | Callable[[], Path],
        *,
        model_id: str | None = None,
        max_queue: int = 64,
        max_batch_size: int = 8,
        max_adapters: int = 8,
        threads: int | None = None,
    ) -> None:
        self._model_dir = model_dir
        self._threads = threads  # None: the llama.cpp backend follows the idle cores (cores.py)
        self._torch_threads = threads or default_threads()
        self.model_id = model_id or (Path(model_dir).name if isinstance(model_dir, Path) else "model")
        self._max_queue = max_queue
        self._max_batch_size = max_batch_size
        self._cond = threading.Condition()
        self._pending: collections.deque[Sequence] = collections.deque()
        self._controls: list[tuple[str, str, Path | None, concurrent.futures.Future]] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._adapters: dict[str, Path] = {}  # least recently used first
        self._max_adapters = max_adapters
        self._adapter_lock = asyncio.Lock()
        self._batch: Batch | None = None
        self._vocab_size = 0  # the logits' width: the token ids logit_bias may name
        self._json: JsonMode | None = None
        self.tokenizer: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedBackend:
        """The backend `settings` describe; the model is resolved (and converted if needed) in `start()`."""
        return cls(lambda: resolve_model(settings.model, settings.home), **cls._options(settings))

    @staticmethod
    def _options(settings: Settings) -> dict[str, Any]:
        model_id = settings.model if settings.model == BASE_MODEL_NAME else Path(settings.model).name
        return {
            "model_id": model_id,
            "max_queue": settings.max_queue,
            "max_batch_size": settings.max_batch_size,
            "max_adapters": settings.max_adapters,
        }

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker thread and wait while it loads tokenizer and model."""
        if self._thread is not None:
            return
        loaded: concurrent.futures.Future = concurrent.futures.Future()
        # The worker loads the model itself: torch work from a second thread would start a second OpenMP
        # pool whose idle spinning halves decode speed on a small machine.
        self._thread = threading.Thread(
            target=self._run, args=(loaded,), name=f"tuneloop-embedded-{self.model_id}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wrap_future(loaded)
        except BaseException:
            self._thread = None
            raise

    async def close(self) -> None:
        """Stop the worker; queued and running requests fail with Overloaded."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def _load(self) -> None:
        model_dir = self._model_dir if isinstance(self._model_dir, Path) else self._model_dir()
        print(f"tuneloop: loading model {self.model_id} from {model_dir}", file=sys.stderr, flush=True)
        self._batch, self._vocab_size = self._open(model_dir)
        self.tokenizer = self._batch.tokenizer
        self._json = JsonMode(self.tokenizer, self._batch.eos_ids, self._vocab_size)

    def _open(self, model_dir: Path) -> tuple[Batch, int]:
        """Load the model in `model_dir`; return the batch that runs it and the logits' width."""
        model, tokenizer = load_causal_lm(model_dir)
        eos_ids = stop_token_ids(model.generation_config.eos_token_id, tokenizer)
        max_positions = getattr(model.config, "max_position_embeddings", 2048)
        batch = TorchBatch(model, tokenizer, eos_ids, tokenizer.pad_token_id, max_positions)
        return batch, model.config.vocab_size

    # -- requests --------------------------------------------------------------------------------------------

    async def generate(self, req: GenerationRequest) -> Completion:
        """Complete all `n` choices of `req`; cancelling the caller cancels the generation."""
        seqs, queues, prompt_tokens = await self._submit(req, req.n)
        try:
            choices, used = [], 0
            for i, queue in enumerate(queues):
                while True:
                    item = await queue.get()
                    if item[0] == "done":
                        choices.append(Choice(item[1], item[2], i))
                        used += item[3]
                        break
                    if item[0] == "error":
                        raise item[1]
            return Completion(choices, prompt_tokens, used)
        finally:
            for s in seqs:
                s.cancelled = True  # harmless once done; frees the slot if the caller went away

    async def stream(self, req: GenerationRequest) -> TextStream:
        """Admit `req` now (raising Overloaded/BadRequest/NotFound here) and return its delta stream."""
        if req.n != 1:
            raise BadRequest("streaming supports n=1 only; send n separate requests", param="n")
        [seq], [queue], prompt_tokens = await self._submit(req, 1)

        def cancel() -> None:
            seq.cancelled = True

        async def deltas(stream: TextStream) -> AsyncIterator[str]:
            try:
                while True:
                    item = await queue.get()
                    if item[0] == "delta":
                        yield item[1]
                    elif item[0] == "done":
                        stream.completion = Completion([Choice(item[1], item[2])], prompt_tokens, item[3])
                        return
                    else:
                        raise item[1]
            finally:
                cancel()

        return TextStream(deltas, on_close=cancel)

    async def _submit(
        self, req: GenerationRequest, n: int
    ) -> tuple[list[Sequence], list[asyncio.Queue], int]:
        import torch

        if self._thread is None:
            raise TuneloopError("the embedded backend is not started; call `await backend.start()` first")
        self._validate(req)
        vocab = self._vocab_size
        if unknown := [t for t in req.logit_bias if not 0 <= t < vocab]:
            raise BadRequest(
                f"logit_bias: token id {unknown[0]} is not in the model's vocabulary (0 to {vocab - 1})",
                param="logit_bias",
            )
        prompt = self._encode(req)
        room = self._batch.max_positions - len(prompt)
        if room < 1:
            # OpenAI's wording and code, which SDKs and frameworks (LangChain's trimming) recognise.
            what = "messages" if req.prompt is None else "prompt"
            raise BadRequest(
                f"This model's maximum context length is {self._batch.max_positions - 1} tokens. However, "
                f"your {what} resulted in {len(prompt)} tokens. Please reduce the length of the {what}.",
                param=what,
                code="context_length_exceeded",
            )
        allowed = await self._json.allowed(req.response_format, prompt) if req.response_format else None
        # After the last wait: an adapter unloaded meanwhile must not reach the batch.
        adapter = self._adapter(req)
        loop = asyncio.get_running_loop()
        seqs, queues = [], []
        for i in range(n):
            generator = torch.Generator().manual_seed(
                req.seed + i if req.seed is not None else secrets.randbits(62)
            )
            queue: asyncio.Queue = asyncio.Queue()
            seqs.append(
                Sequence(
                    prompt_ids=prompt,
                    adapter=adapter,
                    owner=req.owner,
                    max_tokens=min(req.max_tokens or room, room),
                    temperature=req.temperature,
                    top_p=req.top_p,
                    stop=list(req.stop),
                    repetition_penalty=req.repetition_penalty,
                    presence_penalty=req.presence_penalty,
                    frequency_penalty=req.frequency_penalty,
                    logit_bias=dict(req.logit_bias),
                    generator=generator,
                    emit=_sender(loop, queue),
                    allowed=allowed,
                )
            )
            queues.append(queue)
        with self._cond:
            retry_after = max(1, len(self._pending) // max(1, self._max_batch_size))
            if len(self._pending) + n > self._max_queue:
                raise Overloaded(
                    f"{len(self._pending)} requests are already waiting for the model; retry shortly",
                    retry_after=retry_after,
                )
            # Per-tenant admission caps requests, not the choices (`n`) each asks for: one tenant's n=8
            # requests could otherwise fill the queue and turn every other tenant away.
            share = self._max_queue - self._max_queue // OTHERS_SHARE
            mine = sum(s.owner == req.owner for s in self._pending) if req.owner else 0
            if req.owner and mine + n > share:
                raise Overloaded(
                    f"this tenant has {mine} choices waiting for the model, its most at once is {share}; "
                    "retry shortly",
                    retry_after=retry_after,
                )
            self._pending.extend(seqs)
            self._cond.notify()
        return seqs, queues, len(prompt)

    def _adapter(self, req: GenerationRequest) -> str:
        adapter = req.adapter or BASE
        if adapter != BASE:
            if adapter not in self._adapters:
                raise NotFound(
                    f"unknown adapter {adapter!r}; loaded: {self.adapters or 'none'}", param="model"
                )
            self._adapters[adapter] = self._adapters.pop(adapter)  # now the most recently used
        return adapter

    @staticmethod
    def _validate(req: GenerationRequest) -> None:
        if not req.messages and not req.prompt:
            raise BadRequest("messages (or a prompt) must not be empty", param="messages")
        if req.n < 1:
            raise BadRequest("n must be at least 1", param="n")
        if req.max_tokens is not None and req.max_tokens < 1:
            raise BadRequest("max_tokens must be at least 1", param="max_tokens")
        if req.temperature < 0:
            raise BadRequest("temperature must be 0 or more", param="temperature")
        if not 0 < req.top_p <= 1:
            raise BadRequest("top_p must be in (0, 1]", param="top_p")
        if not req.repetition_penalty > 0:
            raise BadRequest("repetition_penalty must be above 0", param="repetition_penalty")
        if req.calls_tools():
            raise BadRequest(
                "tools are not supported by the embedded model (it was not trained to call them); send "
                'tool_choice: "none", leave tools out, or serve through an upstream that calls tools',
                param="tools" if "tools" in req.tools else "functions",
            )
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(req, name) <= 2:
                raise BadRequest(f"{name} must be between -2 and 2", param=name)

    def _encode(self, req: GenerationRequest) -> list[int]:
        if req.prompt is not None:  # a legacy completion continues the text as it is
            return self.tokenizer(req.prompt)["input_ids"]
        try:
            text = self.tokenizer.apply_chat_template(
                system_roles(req.messages), tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja errors: a role or shape the template does not accept
            raise BadRequest(
                f"messages do not fit the model's chat template: {exc}", param="messages"
            ) from exc
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # -- adapters --------------------------------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    @property
    def queued(self) -> int:
        return len(self._pending)  # a length needs no lock

    def observe(self, observer: Observer) -> None:
        """Tell `observer` of every finished sequence, on the model's thread (after `start`)."""
        if self._batch is not None:
            self._batch.observer = observer

    async def load_adapter(self, name: str, path: Path | str) -> None:
        """Load a PEFT LoRA adapter under `name`, resident beside the others; past `max_adapters` the least
        recently used one is unloaded (once its running requests finish)."""
        path = Path(path)
        if not name or name == BASE:
            raise BadRequest(f"adapter name {name!r} is reserved or empty", param="name")
        if not (path / "adapter_config.json").is_file():
            raise NotFound(f"no PEFT adapter at {path} (adapter_config.json missing)")
        async with self._adapter_lock:
            if name in self._adapters:
                if self._adapters[name] == path:
                    return
                raise Conflict(
                    f"adapter {name!r} is already loaded from {self._adapters[name]}; unload it first"
                )
            await self._control("load", name, path)
            self._adapters[name] = path
            while len(self._adapters) > self._max_adapters:
                # Each adapter holds memory for good; a tenant whose one is evicted reloads it on next use.
                oldest = next(iter(self._adapters))
                del self._adapters[oldest]
                await self._control("unload", oldest, None)

    async def unload_adapter(self, name: str) -> None:
        """Unload `name` once the requests already using it finish; new requests for it get NotFound."""
        async with self._adapter_lock:
            if self._adapters.pop(name, None) is None:
                raise NotFound(f"adapter {name!r} is not loaded")
            await self._control("unload", name, None)

    async def _control(self, op: str, name: str, path: Path | None) -> None:
        if self._thread is None:
            raise TuneloopError("the embedded backend is not started; call `await backend.start()` first")
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            self._controls.append((op, name, path, future))
            self._cond.notify()
        await asyncio.wrap_future(future)

    def _apply_control(self, op: str, name: str, path: Path | None) -> None:
        if op == "load":
            self._batch.load_adapter(name, path)
        else:
            self._batch.unload_adapter(name)

    # -- worker thread ---------------------------------------------------------------------------------------

    def _run(self, loaded: concurrent.futures.Future) -> None:
        import torch

        # Per thread under OpenMP: the rest of the process keeps its own.
        torch.set_num_threads(self._torch_threads)
        try:
            self._load()
        except BaseException as exc:
            loaded.set_exception(exc)
            return
        loaded.set_result(None)
        batch = self._batch
        admitted: list[Sequence] = []
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._closing or self._pending or self._controls or batch.active):
                        self._cond.wait()
                    if self._closing:
                        break
                    controls = self._ready_controls(batch)
                    preempted = preemptible(self._pending, batch.active, self._max_batch_size)
                    held = collections.Counter(s.owner for s in batch.active if s not in preempted)
                    # Owners with rows running or just prefilled wait behind the others.
                    served = held + collections.Counter(s.owner for s in admitted)
                    room = self._max_batch_size - held.total()
                    admitted = admissible(self._pending, room, served, held)
                    # Queued first again, after this round: the slots they free go to the owners waiting.
                    self._pending.extendleft(reversed(preempted))
                for op, name, path, future in controls:
                    try:
                        self._apply_control(op, name, path)
                        future.set_result(None)
                    except Exception as exc:
                        future.set_exception(exc)
                try:
                    batch.preempt(preempted)
                    if admitted:
                        batch.admit(admitted)
                        batch.drop_finished()
                    # A decode step after every admission: rows already running advance between prefills
                    # instead of waiting out a queue of long prompts.
                    if batch.active:
                        batch.step()
                        batch.drop_finished()
                except Exception as exc:
                    for s in admitted:
                        if s not in batch.active:
                            s.emit(("error", TuneloopError(f"generation failed: {exc}")))
                    batch.fail_all(TuneloopError(f"generation failed: {exc}"))
        self._shutdown(batch)
        batch.close()

    def _ready_controls(self, batch: Batch) -> list:
        """Controls that can run now; an unload waits while queued or running rows still use the adapter."""
        busy = {s.adapter for s in batch.active} | {s.adapter for s in self._pending if not s.cancelled}
        ready = [c for c in self._controls if c[0] == "load" or c[1] not in busy]
        self._controls = [c for c in self._controls if c not in ready]
        return ready

    def _shutdown(self, batch: Batch) -> None:
        error = Overloaded("the model server is shutting down; retry on another instance", retry_after=5)
        batch.fail_all(error)
        with self._cond:
            for s in self._pending:
                s.emit(("error", error))
            self._pending.clear()
            for *_, future in self._controls:
                future.set_exception(error)
            self._controls.clear()
