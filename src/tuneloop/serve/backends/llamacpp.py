"""The llama.cpp backend: a GGUF model run by llama.cpp (llama-cpp-python's C API), on the CPU by default.

Requests, tokenizer, sampling, stop strings and JSON mode are the transformers backend's (embedded.py);
only the forward pass is llama.cpp's, several times faster on a CPU. Each running sequence owns a KV slot
(a llama.cpp sequence id). A PEFT adapter is converted to a GGUF LoRA adapter when it is loaded
(gguf_lora.py) and applied on top of the one shared base model. llama.cpp applies an adapter to a whole
decode call; make setup's build adds adapter banks (scripts/build_llama_cpp.py), so resident adapters sit
in banks of up to BANK_SIZE and each step decodes all rows in one call, each through its own adapter's
slot. With another build, a step decodes the rows once per adapter among them. New prompts are prefilled
a chunk a step, in the same decode calls as the running rows (chunked prefill).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.errors import BadRequest, TuneloopError
from tuneloop.model_files import llamacpp_gguf, load_tokenizer, resolve_model
from tuneloop.serve.backends.base import BASE
from tuneloop.serve.backends.batching import Batch, Sequence, sample
from tuneloop.serve.backends.cores import IdleCores
from tuneloop.serve.backends.embedded import EmbeddedBackend, stop_token_ids
from tuneloop.serve.backends.gguf_lora import bank_of, lora_tensors, write_gguf_lora

if TYPE_CHECKING:
    from tuneloop.config import Settings

# Tokens per slot. llama.cpp allocates every slot's KV cache up front: 2,048 keeps 8 slots of the embedded
# model near 400 MB, and leaves room for a retrieval prompt plus an answer.
SLOT_CONTEXT = 2048
# Prompt tokens prefilled per step while rows are decoding (0.4 s on 2 cores): a long prompt no longer
# stops every other answer for its whole prefill. With none running, prompts go in whole (fewer passes).
PREFILL_CHUNK = 128
# llama.cpp's AMX kernels (CPUs with AMX) multiply 32 or more tokens at once wrongly for the embedded Q4_1
# model (a prefill's next tokens agreed with transformers' at 45 % of positions); up to 31 they take another
# path, exact and twice as fast as no AMX at all. So there a decode call runs in micro-batches of 31.
AMX_UBATCH = 31
_init_lock = threading.Lock()
# OpenMP barriers share libgomp with PyTorch, which stops spinning once both run threads in one process.
OPENMP_WARNING = (
    "tuneloop: this llama.cpp was built with OpenMP, which decodes up to 2x slower in a process that also "
    "runs PyTorch; rebuild it without: CMAKE_ARGS=-DGGML_OPENMP=OFF pip install --force-reinstall "
    "--no-cache-dir --no-deps llama-cpp-python (make setup does)"
)
FIXED_BUILD = "+tuneloop3"  # the version label of make setup's llama.cpp build
# Adapters per bank: loading or unloading one rebuilds its bank (8 of the embedded model's rank-16 adapters:
# 180 MB written and read back), and a step's rows spread over two banks compute both banks' products.
BANK_SIZE = 8
BANKS_PER_CALL = 4  # scripts/build_llama_cpp.py sizes llama.cpp's graphs for as many banks set at once
_log_callback: list[Any] = []  # kept alive here: llama.cpp holds a pointer to it
_decoder: list[ThreadPoolExecutor] = []


def _llama() -> Any:
    """The llama_cpp module, its backend initialised once per process, its logging off (llama.cpp writes
    pages about every load to stderr; failures come back as return codes)."""
    import llama_cpp

    with _init_lock:
        if not _log_callback:
            # llama.cpp 0.3.16 reuses the previous decode's graph for a batch of the same shape, blind to
            # which adapters are set, so after a switch it would apply the old adapter, or a freed one.
            # make setup's build fixes that (scripts/build_llama_cpp.py); any other build decodes with
            # reuse off. Read when a context is made; every context in this process is ours.
            if not llama_cpp.__version__.endswith(FIXED_BUILD):
                os.environ["LLAMA_GRAPH_REUSE_DISABLE"] = "1"
            _log_callback.append(llama_cpp.llama_log_callback(lambda level, text, data: None))
            llama_cpp.llama_log_set(_log_callback[0], ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            if b"OPENMP = 1" in llama_cpp.llama_print_system_info():
                print(OPENMP_WARNING, file=sys.stderr, flush=True)
    return llama_cpp


def _bank_router(lc: Any) -> Any:
    """make setup's `llama_adapter_lora_bank_route(bank, slot_of_seq, n_seq)`; None for any other build."""
    if not lc.__version__.endswith(FIXED_BUILD):
        return None
    route = lc.llama_cpp._lib.llama_adapter_lora_bank_route
    route.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_int32]
    route.restype = None
    return route


def amx_cpu() -> bool:
    """Whether this CPU has the AMX units llama.cpp's AMX kernels run on (see AMX_UBATCH)."""
    return b"AMX_INT8 = 1" in _llama().llama_print_system_info()


def _decode_thread() -> ThreadPoolExecutor:
    """The thread this process's llama.cpp decodes run on (bar `on_caller` batches'). llama.cpp loads its
    AMX tile configuration once per thread; PyTorch's bf16 kernels release the tiles of the thread they run
    on, and ggml's next AMX instruction there is illegal (SIGILL). PyTorch never runs on this thread."""
    with _init_lock:
        if not _decoder:
            _decoder.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuneloop-llamacpp"))
    return _decoder[0]


@dataclass(eq=False)
class _Bank:
    """Adapters sharing one llama.cpp bank adapter, in slot order from 1 (slot 0 is the base model)."""

    names: list[str] = field(default_factory=list)
    lora: Any = None


class LlamaCppBatch(Batch):
    """The running rows of one llama.cpp context: one KV slot per row, each row on its adapter's bank slot."""

    def __init__(
        self,
        gguf: Path,
        tokenizer: Any,
        eos_ids: set[int],
        base_config: dict[str, Any],
        *,
        slots: int,
        threads: int | IdleCores | None,
        context: int = SLOT_CONTEXT,
        on_caller: bool = False,
    ) -> None:
        """`on_caller`: decode on the calling thread rather than `_decode_thread` (the hop cost 12 % of
        1-user decoding), for callers whose threads never run PyTorch's bf16 kernels."""
        lc = _llama()
        self._lc = lc
        self._base_config = base_config
        self._model = lc.llama_model_load_from_file(str(gguf).encode(), lc.llama_model_default_params())
        if not self._model:
            raise TuneloopError(f"llama.cpp could not load the model file {gguf}")
        context = min(context, lc.llama_model_n_ctx_train(self._model))
        super().__init__(tokenizer, eos_ids, context)
        params = lc.llama_context_default_params()
        params.n_ctx = context * slots
        params.n_batch = context  # with no row running, a whole prompt fits one decode call
        if amx_cpu():
            params.n_ubatch = AMX_UBATCH
        params.n_seq_max = slots
        # None: as many threads as other processes leave cores idle, looked at again between decodes.
        self._cores = IdleCores() if threads is None else threads if isinstance(threads, IdleCores) else None
        self.threads = self._cores.threads() if self._cores else threads
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = False  # each slot attends to its own cells only
        params.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, params)
        if not self._ctx:
            self._ctx = None
            lc.llama_model_free(self._model)
            raise TuneloopError(f"llama.cpp could not create a context for {gguf} ({slots} slots)")
        self._memory = lc.llama_get_memory(self._ctx)
        self.vocab_size = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self._model))
        self._batch = lc.llama_batch_init(context, 0, 1)
        self._slots = slots
        self._free = list(range(slots - 1, -1, -1))
        self._slot: dict[Sequence, int] = {}
        self._cached: dict[int, tuple[str, list[int]]] = {}  # free slot -> (adapter, prompt) its cache holds
        self.reused = 0  # prompt tokens served from a slot's cache instead of computed, since start
        # make setup's build: adapters in banks of BANK_SIZE, each converted once to a file of its own that
        # a bank's rebuild reads. Another build: no banks, each adapter its own, a decode call per adapter.
        self._route = _bank_router(lc)
        self._banks: list[_Bank] = []
        self._files: dict[str, Path] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="tuneloop-lora-")
        self._written = 0
        self._adapters: dict[str, Any] = {}  # another build: name -> llama.cpp adapter
        self._active: tuple[Any, ...] = ()  # the llama.cpp adapters set on the context
        self._on_caller = on_caller

    @classmethod
    def for_model(
        cls,
        model_dir: Path,
        gguf: Path,
        *,
        slots: int,
        threads: int | IdleCores | None = None,
        context: int = SLOT_CONTEXT,
        on_caller: bool = False,
    ) -> LlamaCppBatch:
        """The batch for GGUF file `gguf`, with the tokenizer, stop tokens and config of the Hugging Face
        directory `model_dir` that holds the same weights (the one adapters are trained on); `context`
        tokens per slot, at most the model's own."""
        from transformers import GenerationConfig

        tokenizer = load_tokenizer(model_dir)
        try:
            eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            eos = None
        config = json.loads((model_dir / "config.json").read_text())
        eos_ids = stop_token_ids(eos, tokenizer)
        batch = cls(
            gguf,
            tokenizer,
            eos_ids,
            config,
            slots=slots,
            threads=threads,
            context=context,
            on_caller=on_caller,
        )
        if batch.vocab_size != config.get("vocab_size", batch.vocab_size):
            batch.close()
            raise BadRequest(
                f"{gguf} holds a vocabulary of {batch.vocab_size} tokens, {model_dir} one of "
                f"{config['vocab_size']}: they are not the same model"
            )
        return batch

    # -- adapters --------------------------------------------------------------------------------------------

    @property
    def adapters(self) -> set[str]:
        """Names of the adapters loaded into this batch."""
        return set(self._files) if self._route else set(self._adapters)

    def load_adapter(self, name: str, path: Path) -> None:
        if name in self.adapters:
            self.unload_adapter(name)
        try:
            tensors = lora_tensors(path, self._base_config)
        except BadRequest:
            raise
        except Exception as exc:
            raise BadRequest(f"could not convert adapter {name!r} at {path} for llama.cpp: {exc}") from exc
        what = f"adapter {name!r} from {path}"
        if self._route is None:
            self._adapters[name] = self._init(tensors, what)
            return
        self._written += 1
        file = Path(self._dir.name) / f"{self._written}.gguf"
        self._files[name] = file  # kept for the bank's rebuilds: memory holds only the banks
        bank = next((b for b in self._banks if len(b.names) < BANK_SIZE), None) or _Bank()
        try:
            write_gguf_lora(tensors, file)
            self._rebuild(bank, [*bank.names, name], what)
        except Exception:
            self._files.pop(name)
            file.unlink(missing_ok=True)
            raise
        if bank not in self._banks:
            self._banks.append(bank)

    def unload_adapter(self, name: str) -> None:
        # Caches computed with this adapter must not serve another one loaded later under its name.
        self._cached = {slot: kept for slot, kept in self._cached.items() if kept[0] != name}
        if self._route is None:
            if self._adapters[name] in self._active:
                self._use(())
            self._lc.llama_adapter_lora_free(self._adapters.pop(name))
            return
        bank = next(b for b in self._banks if name in b.names)
        self._rebuild(bank, [n for n in bank.names if n != name], f"the adapters left after {name!r}")
        self._files.pop(name).unlink(missing_ok=True)

    def _init(self, tensors: dict[str, Any], what: str) -> Any:
        """`tensors` loaded into llama.cpp as one adapter."""
        with tempfile.TemporaryDirectory(prefix="tuneloop-lora-") as tmp:
            out = Path(tmp) / "adapter.gguf"
            write_gguf_lora(tensors, out)
            adapter = self._lc.llama_adapter_lora_init(self._model, str(out).encode())
        if not adapter:
            raise BadRequest(f"llama.cpp refused {what} (is it for this base model?)")
        return adapter

    def _rebuild(self, bank: _Bank, names: list[str], what: str) -> None:
        """Make `bank` hold the adapters `names` (none: drop it); `what` names them in the BadRequest
        llama.cpp's refusal raises. The new bank is made before the old one goes: a failure leaves the
        bank as it was."""
        import gguf

        lora = None
        if names:
            members = [{t.name: t.data for t in gguf.GGUFReader(self._files[n]).tensors} for n in names]
            lora = self._init(bank_of(members), what)
        if bank.lora is not None:
            if bank.lora in self._active:
                self._use(())  # the context must not hold the adapter it is about to lose
            self._lc.llama_adapter_lora_free(bank.lora)
        bank.names, bank.lora = names, lora
        if lora is None and bank in self._banks:
            self._banks.remove(bank)

    def _use(self, loras: tuple[Any, ...]) -> None:
        """Set exactly `loras` (llama.cpp adapters) on the context."""
        if loras == self._active:
            return
        self._lc.llama_clear_adapter_lora(self._ctx)
        self._active = ()
        for lora in loras:
            if self._lc.llama_set_adapter_lora(self._ctx, lora, 1.0) != 0:
                raise TuneloopError("llama.cpp could not apply an adapter")
            self._active = (*self._active, lora)  # what the context holds, even if the next one fails

    def _calls(self, seqs: list[Sequence]) -> list[list[Sequence]]:
        """The rows of each decode call a step makes: all in one through the banks unless they span more
        than BANKS_PER_CALL; with another build, one call per adapter among them."""
        if self._route is None:
            groups: dict[str, list[Sequence]] = {}
            for s in seqs:
                groups.setdefault(s.adapter, []).append(s)
            return list(groups.values())
        bank_index = {name: i for i, bank in enumerate(self._banks) for name in bank.names}
        calls: list[tuple[list[Sequence], set[int]]] = []
        for s in seqs:
            bank = {bank_index[s.adapter]} if s.adapter in bank_index else set()
            call = next((c for c in calls if len(c[1] | bank) <= BANKS_PER_CALL), None)
            if call is None:
                calls.append(([s], bank))
            else:
                call[0].append(s)
                call[1].update(bank)
        return [rows for rows, _ in calls]

    def _set_adapters(self, adapters: dict[int, str]) -> None:
        """Set what the rows of KV slot k decode on next: `adapters[k]`, an adapter's name or BASE."""
        if self._route is None:
            (name,) = set(adapters.values())  # _calls made it one per call
            self._use(() if name == BASE else (self._adapters[name],))
            return
        used = []
        for bank in self._banks:
            slot_of = {name: i for i, name in enumerate(bank.names, start=1)}
            table = (ctypes.c_int32 * self._slots)()
            for kv_slot, name in adapters.items():
                table[kv_slot] = slot_of.get(name, 0)
            if any(table):  # a bank no row uses stays off the graph
                self._route(bank.lora, table, self._slots)
                used.append(bank.lora)
        self._use(tuple(used))

    # -- decoding --------------------------------------------------------------------------------------------

    def admit(self, seqs: list[Sequence]) -> None:
        """Give each new sequence its slot; the next steps prefill its prompt (`filling`)."""
        for s in seqs:
            s.pos = self._claim(s)  # the next prompt position to feed: a reused cache holds the ones before
            self.filling.append(s)  # at once: a failure after this frees the slot with the batch

    def step(self) -> None:
        """Decode the rows and the prompts filling (in one call, or one per adapter with another build):
        every row's pending token, and prompt tokens, shortest prompts first: at most PREFILL_CHUNK while
        rows run, else as many as one call takes; sample where a prompt or a row ended."""
        self._trim_caches()
        feeds: dict[Sequence, list[tuple[int, int, int, bool]]] = {
            s: [(s.pending, s.pos, self._slot[s], True)] for s in self.rows
        }
        budget = PREFILL_CHUNK if self.rows else self.max_positions
        contexts = {s: s.context for s in self.filling}
        for s in sorted(self.filling, key=lambda s: len(contexts[s]) - s.pos):
            if budget <= 0:
                break
            ids = contexts[s]
            last = len(ids) - 1
            end = min(last + 1, s.pos + budget)
            feeds[s] = [(ids[p], p, self._slot[s], p == last) for p in range(s.pos, end)]
            budget -= end - s.pos
        logits: dict[Sequence, Any] = {}
        for rows in self._calls(list(feeds)):
            # In slot order: llama.cpp splits a batch whose sequences are out of order into a pass per run
            # of ascending ones (7 rows in descending slots took 7 passes, 1.5x the time of one).
            group = sorted(rows, key=self._slot.__getitem__)
            adapters = {self._slot[s]: s.adapter for s in group}
            out = iter(self.forward([t for s in group for t in feeds[s]], adapters))
            logits.update((s, next(out)) for s in group if feeds[s][-1][3])
        for s, fed in feeds.items():
            s.pos += len(fed)
        prefilled = [s for s in self.filling if s in logits]
        self.filling = [s for s in self.filling if s not in logits]
        self.rows.extend(prefilled)
        if ready := [s for s in self.rows if s in logits]:
            self._take(ready, sample(_stack([logits[s] for s in ready]), ready))

    def _trim_caches(self) -> None:
        """Cut free slots' caches to the positions the running sequences reach: llama.cpp attends every row
        over as many cells as the fullest slot holds, so a long cached prompt slowed every decode."""
        reach = max([s.pos + 1 for s in self.rows] + [len(s.context) for s in self.filling], default=0)
        for slot, (adapter, ids) in list(self._cached.items()):
            if len(ids) > reach > 0:
                self._lc.llama_memory_seq_rm(self._memory, slot, reach, -1)
                self._cached[slot] = (adapter, ids[:reach])

    def _claim(self, s: Sequence) -> int:
        """Give `s` the free slot whose cache already holds the longest start of its prompt under the same
        adapter (a tenant's system prompt, an earlier turn of a conversation); drop the rest of its cache.
        Returns how many prompt tokens that cache still holds. With no cache to reuse, the free slot whose
        cache is shortest, so a prompt other requests may share is overwritten last."""
        slot, reuse = min(reversed(self._free), key=lambda free: len(self._cached.get(free, ("", []))[1])), 0
        context = s.context
        for free in self._free:
            adapter, ids = self._cached.get(free, (None, []))
            if adapter == s.adapter and (n := _common_start(ids, context)) > reuse:
                slot, reuse = free, n
        reuse = min(reuse, len(context) - 1)  # the last prompt token must run: it gives the logits
        self._free.remove(slot)
        self._cached.pop(slot, None)
        self._lc.llama_memory_seq_rm(self._memory, slot, reuse, -1)
        self._slot[s] = slot
        self.reused += reuse
        return reuse

    def forward(self, tokens: list[tuple[int, int, int, bool]], adapters: dict[int, str]) -> list[Any]:
        """Run (token, position, slot, wants logits) through the model, slot k's tokens on `adapters[k]`
        (an adapter's name or BASE); the logits asked for, in order."""
        import numpy as np

        self._set_adapters(adapters)
        b = self._batch
        for i, (token, pos, slot, wants) in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, wants
            b.seq_id[i][0] = slot
        b.n_tokens = len(tokens)
        if self._cores is not None and (n := self._cores.threads()) != self.threads:
            self._lc.llama_set_n_threads(self._ctx, n, n)
            self.threads = n
        if self._on_caller:
            code = self._lc.llama_decode(self._ctx, b)
        else:
            code = _decode_thread().submit(self._lc.llama_decode, self._ctx, b).result()
        if code != 0:
            raise TuneloopError(f"llama.cpp decode failed (code {code})")
        return [
            np.ctypeslib.as_array(
                self._lc.llama_get_logits_ith(self._ctx, i), shape=(self.vocab_size,)
            ).copy()
            for i, (*_, wants) in enumerate(tokens)
            if wants
        ]

    def _release(self, keep: list[int], gone: list[Sequence]) -> None:
        """Free the rows' slots; a finished row's prompt stays cached for a next prompt that starts alike."""
        for s in gone:
            slot = self._slot.pop(s, None)
            if slot is None:
                continue
            if s.done:
                self._lc.llama_memory_seq_rm(self._memory, slot, len(s.prompt_ids), -1)
                self._cached[slot] = (s.adapter, s.prompt_ids)
            else:  # cancelled, failed or preempted: its cache may be partial
                self._lc.llama_memory_seq_rm(self._memory, slot, -1, -1)
            self._free.append(slot)

    def close(self) -> None:
        lc = self._lc
        if self._ctx is None:
            return
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)
        for adapter in [*self._adapters.values(), *(b.lora for b in self._banks)]:
            lc.llama_adapter_lora_free(adapter)
        self._adapters.clear()
        self._banks.clear()
        self._dir.cleanup()
        lc.llama_model_free(self._model)
        self._ctx = None

    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        # At interpreter exit llama_cpp's functions (and this module's globals) may be gone already, and the
        # OS frees the memory anyway.
        if getattr(self, "_ctx", None) is not None and not _finalizing():
            self.close()


def _common_start(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _stack(rows: list[Any]) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.stack(rows))


class LlamaCppBackend(EmbeddedBackend):
    """Serve a model whose weights are a GGUF file through llama.cpp; its tokenizer and config come from the
    Hugging Face directory beside it (the one adapters are trained on)."""

    def __init__(self, model_dir: Path | Callable[[], Path], gguf: Path, **kwargs: Any):
        super().__init__(model_dir, **kwargs)
        self._gguf = gguf
        # torch only samples here; more OpenMP threads of its own would spin against llama.cpp's.
        self._torch_threads = 1

    @classmethod
    def from_settings(cls, settings: Settings, gguf: Path | None = None) -> LlamaCppBackend:
        """The backend `settings` describe, running `gguf` (looked up when not given); BadRequest when the
        model has no GGUF file."""
        gguf = gguf or llamacpp_gguf(settings.model, "llamacpp")
        assert gguf is not None  # engine "llamacpp" raises rather than answer None
        return cls(lambda: resolve_model(settings.model, settings.home), gguf, **cls._options(settings))

    def _open(self, model_dir: Path) -> tuple[Batch, int]:
        slots, threads = self._max_batch_size, self._threads
        # The engine's thread runs nothing of PyTorch but sampling, so it can decode itself.
        batch = LlamaCppBatch.for_model(model_dir, self._gguf, slots=slots, threads=threads, on_caller=True)
        return batch, batch.vocab_size
