"""The serving seam: one small abstract `Backend`, and the request/response shapes every backend shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BASE = "__base__"  # the adapter name meaning "no adapter" (PEFT's own spelling in mixed batches)

FinishReason = Literal["stop", "length", "tool_calls", "function_call"]


def system_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with `developer` as `system` and the leading system messages merged into one.

    OpenAI treats `developer` as the newer name of `system`; open models' chat templates do not know it
    (SmolLM2's renders it raw and adds its own default system prompt), and many accept one system message.
    """
    out = [{**m, "role": "system" if m["role"] == "developer" else m["role"]} for m in messages]
    lead = 0
    while lead < len(out) and out[lead]["role"] == "system":
        lead += 1
    if lead < 2:
        return out
    merged = {"role": "system", "content": "\n\n".join(m["content"] for m in out[:lead])}
    return [merged, *out[lead:]]


@dataclass
class GenerationRequest:
    """One completion to make. `adapter=None` means the base model; `max_tokens=None` means until EOS.

    A chat completion has `messages`; a legacy text completion has `prompt` instead (no chat template).
    """

    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    repetition_penalty: float = 1.0  # divides the logits of tokens already in the context; 1 is off
    # As OpenAI defines them: subtracted from the logits of tokens already generated (per occurrence for
    # frequency, once for presence); 0 is off.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
    response_format: dict[str, Any] | None = (
        None  # OpenAI's JSON mode (json_object or json_schema); None: text
    )
    n: int = 1
    adapter: str | None = None
    prompt: str | None = None
    owner: str = ""  # the tenant asking: no one tenant may fill the whole queue of waiting requests
    # OpenAI's tool fields as the client sent them (tools, tool_choice, parallel_tool_calls, and the legacy
    # functions, function_call): an upstream receives them as they are; the embedded model calls no tools.
    tools: dict[str, Any] = field(default_factory=dict)

    def calls_tools(self) -> bool:
        """Whether the model may answer with a tool (or legacy function) call."""
        offered = self.tools.get("tools") or self.tools.get("functions")
        choice = self.tools.get("tool_choice", self.tools.get("function_call"))
        return bool(offered) and choice != "none"


@dataclass
class Choice:
    text: str
    finish_reason: FinishReason
    index: int = 0
    # OpenAI's shape: [{id, type, function: {name, arguments}}]
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None  # the legacy `functions` answer: {name, arguments}


@dataclass
class Completion:
    """The answer(s) to a request, with token counts for usage and capture."""

    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        """The first choice's text (the only one when n=1)."""
        return self.choices[0].text


class TextStream:
    """Async iterator of one choice's text deltas; at the end `completion` holds finish_reason and usage.

    Close it (`aclose()` or `async with`) when the consumer goes away so the backend frees the slot at once.
    """

    def __init__(
        self,
        make_deltas: Callable[[TextStream], AsyncIterator[str]],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.completion: Completion | None = None
        self._on_close = on_close
        self._deltas = make_deltas(self)

    def __aiter__(self) -> TextStream:
        return self

    async def __anext__(self) -> str:
        return await self._deltas.__anext__()

    async def aclose(self) -> None:
        """Stop generating; safe to call twice or after the end."""
        if self._on_close is not None:
            self._on_close()
        await self._deltas.aclose()  # type: ignore[attr-defined]

    def __del__(self) -> None:
        # A consumer that vanished without closing (a dropped HTTP client) must still free its slot.
        if self._on_close is not None:
            self._on_close()

    async def __aenter__(self) -> TextStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Backend(ABC):
    """Where completions come from. Free of HTTP: raise `tuneloop.errors` and let the edge convert them."""

    model_id: str

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load the model or open connections; call once before generating."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connections; pending requests fail with Overloaded."""

    @abstractmethod
    async def generate(self, req: GenerationRequest) -> Completion:
        """Complete `req` fully (all `n` choices)."""

    @abstractmethod
    async def stream(self, req: GenerationRequest) -> TextStream:
        """Admit `req` (n must be 1) and return its stream; admission errors (Overloaded...) raise here."""

    @abstractmethod
    async def load_adapter(self, name: str, path: Path | str) -> None:
        """Make the LoRA adapter at `path` selectable as `name`; loading the same name+path is a no-op."""

    @abstractmethod
    async def unload_adapter(self, name: str) -> None:
        """Drop adapter `name` (after its in-flight requests finish)."""

    @property
    @abstractmethod
    def adapters(self) -> list[str]:
        """Names of the adapters currently selectable, sorted."""

    @property
    @abstractmethod
    def queued(self) -> int:
        """Requests waiting for the model right now (the serving metrics' queue depth)."""

    async def __aenter__(self) -> Backend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
