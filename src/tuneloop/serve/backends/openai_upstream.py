"""The upstream backend: forward to any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, tuneloop).

Adapters map to upstream model names. With vLLM started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True,
`load_adapter` loads them at run time through `/v1/load_lora_adapter`; for servers without that endpoint,
pass `manage_adapters=False` and register names already served upstream (`--lora-modules name=path`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloop.errors import BadRequest, NotFound, Overloaded, UpstreamError
from tuneloop.serve.backends.base import (
    BASE,
    Backend,
    Choice,
    Completion,
    FinishReason,
    GenerationRequest,
    TextStream,
    system_roles,
)

if TYPE_CHECKING:
    import httpx

    from tuneloop.config import Settings


def _finish_reason(value: Any) -> FinishReason:
    return value if value in ("length", "tool_calls", "function_call") else "stop"


def _path(req: GenerationRequest) -> str:
    return "/chat/completions" if req.prompt is None else "/completions"


def _choice(data: dict[str, Any], i: int) -> Choice:
    """One choice of an upstream answer, chat (`message`) or legacy text completion (`text`)."""
    reason = _finish_reason(data.get("finish_reason"))
    if "message" not in data:
        return Choice(data["text"] or "", reason, data.get("index", i))
    message = data["message"]
    return Choice(
        message.get("content") or "",
        reason,
        data.get("index", i),
        tool_calls=message.get("tool_calls") or None,
        function_call=message.get("function_call") or None,
    )


def _add_tool_deltas(calls: dict[int, dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Fold streamed tool-call fragments into whole calls, by index (names and arguments arrive in pieces)."""
    for delta in deltas:
        call = calls.setdefault(
            delta.get("index", len(calls)),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        call["id"] = delta.get("id") or call["id"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


class OpenAIUpstreamBackend(Backend):
    """Forward chat and text completions to `base_url` (ending in /v1), naming the adapter as the upstream
    model."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "none",
        model: str | None = None,
        manage_adapters: bool = True,
        timeout: float = 120.0,
        max_queue: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._upstream_model = model
        self.model_id = model or "upstream"
        self._manage = manage_adapters
        self._timeout = timeout
        self._transport = transport
        self._adapters: dict[str, str] = {}  # our adapter name -> upstream model name
        self._client: httpx.AsyncClient | None = None
        # Requests in flight upstream: past `max_queue` new ones get 503 at once instead of piling up
        # connections and memory while a slow upstream works through them.
        self._max_queue = max_queue
        self._in_flight = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIUpstreamBackend:
        """The backend `settings` describe: `upstream_url`, `upstream_api_key`, and `model` unless default."""
        from tuneloop.model_files import BASE_MODEL_NAME

        if not settings.upstream_url:
            raise BadRequest("backend `openai` needs TUNELOOP_UPSTREAM_URL, e.g. http://localhost:8000/v1")
        model = None if settings.model == BASE_MODEL_NAME else settings.model
        return cls(
            settings.upstream_url,
            api_key=settings.upstream_api_key,
            model=model,
            manage_adapters=settings.upstream_runtime_lora,
            max_queue=settings.max_queue,
        )

    async def start(self) -> None:
        """Open the connection pool; without an explicit model, use the upstream's first listed model."""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=httpx.Timeout(self._timeout, connect=10.0),
                transport=self._transport,
            )
        if self._upstream_model is None:
            models = (await self._request("GET", "/models")).json().get("data") or []
            if not models:
                raise UpstreamError(
                    f"upstream {self._base_url} lists no models; set TUNELOOP_MODEL to its name"
                )
            # A tuneloop upstream lists its alias first; record the real model name instead.
            ids = [m["id"] for m in models]
            self._upstream_model = self.model_id = next(
                (i for i in ids if i not in ("tuneloop", "default")), ids[0]
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- requests --------------------------------------------------------------------------------------------

    def _body(self, req: GenerationRequest, stream: bool) -> dict:
        adapter = req.adapter or BASE
        if adapter != BASE and adapter not in self._adapters:
            raise NotFound(f"unknown adapter {adapter!r}; loaded: {self.adapters or 'none'}", param="model")
        body: dict[str, Any] = {
            "model": self._adapters.get(adapter, self._upstream_model),
            "temperature": req.temperature,
            "top_p": req.top_p,
            "n": req.n,
            "stream": stream,
        }
        if req.max_tokens is not None:
            body["max_tokens"] = req.max_tokens
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None:
            body["seed"] = req.seed
        if req.repetition_penalty != 1.0:  # vLLM's extension; sent only when a version sets it
            body["repetition_penalty"] = req.repetition_penalty
        if req.presence_penalty:
            body["presence_penalty"] = req.presence_penalty
        if req.frequency_penalty:
            body["frequency_penalty"] = req.frequency_penalty
        if req.logit_bias:
            body["logit_bias"] = {str(t): b for t, b in req.logit_bias.items()}
        if req.response_format is not None:  # vLLM, llama.cpp and Ollama constrain decoding to it
            body["response_format"] = req.response_format
        if stream:
            body["stream_options"] = {"include_usage": True}
        if req.prompt is not None:
            return {**body, "prompt": req.prompt}
        # Mapped as for the embedded model: vLLM, llama.cpp and Ollama render chat templates that
        # mostly do not know `developer`, and OpenAI itself reads `system` as `developer` where needed.
        return {**body, "messages": system_roles(req.messages), **req.tools}

    def _admit(self) -> Callable[[], None]:
        """Count one more request in flight (Overloaded past `max_queue`); returns its release, idempotent."""
        if self._in_flight >= self._max_queue:
            raise Overloaded(
                f"{self._in_flight} requests are already waiting for the upstream model; retry shortly",
                retry_after=1,
            )
        self._in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight -= 1

        return release

    async def generate(self, req: GenerationRequest) -> Completion:
        """One upstream call; errors become Overloaded (429/503, max_queue), BadRequest or UpstreamError."""
        body = self._body(req, False)
        release = self._admit()
        try:
            data = (await self._request("POST", _path(req), json=body)).json()
        finally:
            release()
        try:
            choices = [_choice(c, i) for i, c in enumerate(data["choices"])]
        except (KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"upstream answered an unexpected shape: {str(data)[:200]}") from exc
        usage = data.get("usage") or {}
        return Completion(choices, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))

    async def stream(self, req: GenerationRequest) -> TextStream:
        """Open the upstream SSE stream (status errors raise here) and relay its text deltas."""
        import httpx

        if req.n != 1:
            raise BadRequest("streaming supports n=1 only; send n separate requests", param="n")
        client = self._require_client()
        request = client.build_request("POST", _path(req), json=self._body(req, True))
        release = self._admit()
        try:
            response = await client.send(request, stream=True)
        except BaseException as exc:
            release()
            if isinstance(exc, httpx.HTTPError):
                raise UpstreamError(f"cannot reach upstream {self._base_url}: {exc}") from exc
            raise
        if response.status_code >= 400:
            release()
            await response.aread()
            await response.aclose()
            self._raise_for(response)

        async def deltas(stream: TextStream) -> AsyncIterator[str]:
            text: list[str] = []
            usage: dict[str, Any] = {}
            chunks = 0
            reason: FinishReason = "stop"
            calls: dict[int, dict[str, Any]] = {}
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if event.get("error"):
                        raise UpstreamError(f"upstream failed mid-stream: {event['error']}")
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        delta = choice.get("delta") or {}
                        _add_tool_deltas(calls, delta.get("tool_calls") or [])
                        piece = choice.get("text") if req.prompt is not None else delta.get("content")
                        if piece:
                            chunks += 1
                            text.append(piece)
                            yield piece
                        if choice.get("finish_reason"):
                            reason = _finish_reason(choice["finish_reason"])
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                raise UpstreamError(f"upstream stream broke: {exc}") from exc
            finally:
                release()
                await response.aclose()
            # Without usage from upstream, count chunks: most servers send one token per chunk.
            whole = [calls[i] for i in sorted(calls)] or None
            stream.completion = Completion(
                [Choice("".join(text), reason, tool_calls=whole)],
                usage.get("prompt_tokens", 0),
                usage.get("completion_tokens", chunks),
            )

        return TextStream(deltas, on_close=release)

    async def embeddings(self, body: dict) -> dict:
        """Forward an OpenAI embeddings request to the upstream's /embeddings; its answer comes back as is."""
        body = {**body, "model": body.get("model") or self._upstream_model}
        release = self._admit()
        try:
            response = await self._request(
                "POST", "/embeddings", json=body, ok_if=lambda r: r.status_code == 404
            )
        finally:
            release()
        if response.status_code == 404:
            raise BadRequest(
                f"upstream {self._base_url} has no embeddings for model {body['model']!r} "
                f"(HTTP 404: {response.text[:200]}); name a model it serves for embeddings",
                param="model",
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UpstreamError(
                f"upstream answered embeddings with an unexpected shape: {response.text[:200]}"
            )
        return data

    # -- adapters --------------------------------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    @property
    def queued(self) -> int:
        return self._in_flight

    async def load_adapter(self, name: str, path: Path | str, upstream_name: str | None = None) -> None:
        """Load `path` upstream as `upstream_name` (default `name`) via vLLM's /v1/load_lora_adapter."""
        if not name or name == BASE:
            raise BadRequest(f"adapter name {name!r} is reserved or empty", param="name")
        target = upstream_name or name
        if self._manage and self._adapters.get(name) != target:
            await self._request(
                "POST",
                "/load_lora_adapter",
                json={"lora_name": target, "lora_path": str(path)},
                ok_if=lambda r: r.status_code == 400 and "already" in r.text,  # idempotent, as ours is
            )
        self._adapters[name] = target

    async def unload_adapter(self, name: str) -> None:
        """Unload `name` upstream via /v1/unload_lora_adapter and forget it."""
        if name not in self._adapters:
            raise NotFound(f"adapter {name!r} is not loaded")
        if self._manage:
            await self._request("POST", "/unload_lora_adapter", json={"lora_name": self._adapters[name]})
        del self._adapters[name]

    # -- http ------------------------------------------------------------------------------------------------

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise UpstreamError("the upstream backend is not started; call `await backend.start()` first")
        return self._client

    async def _request(self, method: str, path: str, *, ok_if=None, **kw: Any) -> httpx.Response:
        import httpx

        try:
            response = await self._require_client().request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot reach upstream {self._base_url}: {exc}") from exc
        if response.status_code >= 400 and not (ok_if and ok_if(response)):
            self._raise_for(response)
        return response

    def _raise_for(self, response: httpx.Response) -> None:
        param = code = None
        try:
            detail = response.json()
            detail = detail.get("error", detail) if isinstance(detail, dict) else detail
            message = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
            if isinstance(detail, dict):
                param, code = _short(detail.get("param")), _short(detail.get("code"))
        except ValueError:
            message = response.text[:300]
        where = f"upstream {response.request.method} {response.request.url.path}"
        if response.status_code in (429, 503):
            retry = response.headers.get("retry-after", "1")
            raise Overloaded(f"{where} is busy: {message}", retry_after=int(retry) if retry.isdigit() else 1)
        if response.status_code == 400:
            if code is None and "maximum context length" in message:
                # vLLM words it as OpenAI does but sends no code; clients branch on the code.
                code, param = "context_length_exceeded", "messages"
            raise BadRequest(f"{where} rejected the request: {message}", param=param, code=code)
        if response.status_code == 404 and _is_lora_path(response):
            raise UpstreamError(
                f"{where} has no runtime LoRA loading — start vLLM with "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or serve adapters upstream with manage_adapters=False"
            )
        raise UpstreamError(f"{where} failed with HTTP {response.status_code}: {message}")


def _short(value: Any) -> str | None:
    """An upstream error's `param` or `code`, passed on when it is a plausible one (a short string)."""
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def _is_lora_path(response: httpx.Response) -> bool:
    return response.request.url.path.endswith(("load_lora_adapter", "unload_lora_adapter"))
