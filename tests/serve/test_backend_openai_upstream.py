"""The upstream backend against a fake vLLM (an httpx transport speaking the OpenAI and LoRA endpoints)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tuneloop.errors import BadRequest, NotFound, Overloaded, UpstreamError
from tuneloop.serve.backends.base import GenerationRequest
from tuneloop.serve.backends.openai_upstream import OpenAIUpstreamBackend


class FakeVLLM:
    """Just enough of vLLM's OpenAI server: /models, /chat/completions (+SSE), runtime LoRA endpoints."""

    def __init__(self) -> None:
        self.models = ["base-model"]
        self.calls: list[tuple[str, dict]] = []
        self.fail_with: tuple[int, dict] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        path = request.url.path.removeprefix("/v1")
        self.calls.append((path, body))
        if self.fail_with:
            status, headers = self.fail_with
            return httpx.Response(status, headers=headers, json={"error": {"message": "nope"}})
        if path == "/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": m} for m in self.models]})
        if path == "/load_lora_adapter":
            if body["lora_name"] in self.models:
                return httpx.Response(
                    400, text=f"The lora adapter '{body['lora_name']}' has already been loaded."
                )
            self.models.append(body["lora_name"])
            return httpx.Response(200, text="Success")
        if path == "/unload_lora_adapter":
            self.models.remove(body["lora_name"])
            return httpx.Response(200, text="Success")
        if path == "/chat/completions":
            if body["model"] not in self.models:
                return httpx.Response(
                    404, json={"error": {"message": f"model {body['model']} does not exist"}}
                )
            words = ["answer", " from", " " + body["model"]]
            if not body.get("stream"):
                return httpx.Response(
                    200,
                    json={
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "".join(words)},
                                "finish_reason": "length",
                            }
                        ],
                        "usage": {"prompt_tokens": 9, "completion_tokens": 3},
                    },
                )
            events = [
                {"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words
            ]
            events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            events.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
            sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=sse)
        return httpx.Response(404, json={"error": {"message": "not found"}})


def run(scenario, upstream: FakeVLLM):
    async def main():
        backend = OpenAIUpstreamBackend("http://upstream/v1", transport=httpx.MockTransport(upstream))
        async with backend:
            return await scenario(backend)

    return asyncio.run(main())


def ask(**kw) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": "hi"}], **kw)


def test_generate_uses_the_upstream_model_and_passes_decoding_settings() -> None:
    upstream = FakeVLLM()

    async def scenario(backend):
        return backend.model_id, await backend.generate(ask(max_tokens=5, temperature=0, stop=["x"], seed=3))

    model_id, completion = run(scenario, upstream)
    assert model_id == "base-model"
    assert completion.text == "answer from base-model"
    assert completion.choices[0].finish_reason == "length"
    assert (completion.prompt_tokens, completion.completion_tokens) == (9, 3)
    sent = upstream.calls[-1][1]
    assert (
        sent["max_tokens"] == 5 and sent["stop"] == ["x"] and sent["seed"] == 3 and sent["temperature"] == 0
    )


def test_adapters_load_through_vllm_endpoints_and_route_by_model_name(tmp_path) -> None:
    upstream = FakeVLLM()

    async def scenario(backend):
        await backend.load_adapter("tenant-a-v2", tmp_path)
        await backend.load_adapter("tenant-a-v2", tmp_path)  # idempotent
        routed = await backend.generate(ask(adapter="tenant-a-v2"))
        stream = await backend.stream(ask(adapter="tenant-a-v2"))
        streamed = "".join([d async for d in stream])
        await backend.unload_adapter("tenant-a-v2")
        with pytest.raises(NotFound):
            await backend.generate(ask(adapter="tenant-a-v2"))
        return routed, streamed, stream.completion, backend.adapters

    routed, streamed, completion, remaining = run(scenario, upstream)
    assert upstream.calls[1] == (
        "/load_lora_adapter",
        {"lora_name": "tenant-a-v2", "lora_path": str(tmp_path)},
    )
    assert ("/unload_lora_adapter", {"lora_name": "tenant-a-v2"}) in upstream.calls
    assert routed.text == streamed == completion.text == "answer from tenant-a-v2"
    assert completion.choices[0].finish_reason == "stop" and completion.completion_tokens == 3
    assert remaining == []


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (429, {"retry-after": "7"}, Overloaded),
        (503, {}, Overloaded),
        (400, {}, BadRequest),
        (500, {}, UpstreamError),
    ],
)
def test_upstream_errors_map_to_our_errors(status: int, headers: dict, error: type) -> None:
    upstream = FakeVLLM()

    async def scenario(backend):
        upstream.fail_with = (status, headers)
        with pytest.raises(error) as generate_info:
            await backend.generate(ask())
        with pytest.raises(error):
            await backend.stream(ask())
        return generate_info.value

    raised = run(scenario, upstream)
    if status == 429:
        assert raised.retry_after == 7


def test_unreachable_upstream_is_an_upstream_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def main():
        backend = OpenAIUpstreamBackend("http://nowhere/v1", model="m", transport=httpx.MockTransport(refuse))
        async with backend:
            with pytest.raises(UpstreamError, match="cannot reach upstream"):
                await backend.generate(ask())

    asyncio.run(main())


def test_requests_past_max_queue_get_overloaded_at_once_and_slots_come_back() -> None:
    upstream = FakeVLLM()
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            await release.wait()
        return upstream(request)

    async def main():
        backend = OpenAIUpstreamBackend(
            "http://upstream/v1", transport=httpx.MockTransport(slow), max_queue=2
        )
        async with backend:
            waiting = [asyncio.create_task(backend.generate(ask())) for _ in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(Overloaded) as caught:
                await backend.generate(ask())
            with pytest.raises(Overloaded):
                await backend.stream(ask())
            release.set()
            done = await asyncio.gather(*waiting)
            stream = await backend.stream(ask())  # both slots are free again
            text = "".join([d async for d in stream])
            return caught.value, done, text

    error, done, text = asyncio.run(main())
    assert error.status == 503 and error.retry_after >= 1
    assert [c.text for c in done] == ["answer from base-model"] * 2 and text == "answer from base-model"
