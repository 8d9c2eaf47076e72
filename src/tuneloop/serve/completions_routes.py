"""The legacy `/v1/completions`: a text prompt continued as it is (no chat template), captured like chat.

The interaction stores the prompt as one user message, with `metadata.endpoint = "completions"` beside the
client's own metadata, so feedback, routing to versions and the loop treat it as any other answer.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from tuneloop.errors import BadRequest
from tuneloop.serve.backends.base import Choice
from tuneloop.serve.gateway import Call, SamplingParams, answered, open_call, sse, usage
from tuneloop.serve.http import GATEWAY, read_json, validate
from tuneloop.store.repository import TenantStore

router = APIRouter()
ENDPOINT = "completions"
# OpenAI's default for this endpoint when neither the request nor the version sets one: a raw prompt seldom
# ends by itself, so without it each request would decode until its slot's context is full.
DEFAULT_MAX_TOKENS = 16


class CompletionRequest(SamplingParams):
    """OpenAI's legacy completion request. One prompt per request: each answer is one interaction."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = False
    best_of: int | None = Field(None, ge=1, le=8)
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5)

    def text(self) -> str:
        """The one prompt, or a 400 that says what to send instead."""
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise BadRequest(
                    "prompt: send one prompt as a string (or a list of one string); token ids and several "
                    "prompts per request are not supported (each completion is one captured interaction)",
                    param="prompt",
                )
            prompt = prompt[0]
        if not prompt:
            raise BadRequest("prompt: must not be empty", param="prompt")
        return prompt


def _parse(body: Any, max_text: int) -> CompletionRequest:
    req = validate(CompletionRequest, body, max_text)
    if req.best_of not in (None, req.n or 1):
        raise BadRequest("best_of is not supported; leave it out or send it equal to n", param="best_of")
    if req.suffix:
        raise BadRequest("suffix (insertion) is not supported; leave it out", param="suffix")
    if req.logprobs is not None:  # 0 still asks for the chosen tokens' logprobs
        raise BadRequest("logprobs are not supported; leave them out", param="logprobs")
    if req.echo and req.stream:
        raise BadRequest("echo with stream is not supported; send one of them", param="echo")
    req.check_streaming()
    return req


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    """Continue a text prompt as OpenAI's legacy API does; the answer's id names the captured interaction."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, GATEWAY)
    return await _complete(st, tenant, request)


async def _complete(st: Any, tenant: TenantStore, request: Request) -> Any:
    req = _parse(await read_json(request, st.settings.max_body_bytes), st.settings.max_text_chars)
    prompt = req.text()
    call = await open_call(st, tenant, request, req, [prompt], "cmpl")
    # A version's system prompt has no place in a raw prompt: only its adapter and decoding apply.
    gen = call.generation(messages=[], prompt=prompt)
    if gen.max_tokens is None:
        gen = replace(gen, max_tokens=DEFAULT_MAX_TOKENS)
    captured = [{"role": "user", "content": prompt}]
    if req.stream:
        stream = await st.backend.stream(gen)
        events = sse(call, captured, stream, partial(_chunk, call), endpoint=ENDPOINT)
        return StreamingResponse(events, media_type="text/event-stream", headers=call.headers)
    completion = await answered(call, request, captured, st.backend.generate(gen), endpoint=ENDPOINT)
    echo = prompt if req.echo else ""
    body = {
        "id": call.interaction_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": call.model_name,
        "choices": [
            {"index": c.index, "text": echo + c.text, "finish_reason": c.finish_reason, "logprobs": None}
            for c in completion.choices
        ],
        "usage": usage(completion),
        "system_fingerprint": call.route.version_id or "base",
    }
    return JSONResponse(body, headers=call.headers)


def _chunk(
    call: Call, delta: str = "", finish: Choice | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """One streamed `text_completion` event: a text delta, the end, or the usage."""
    reason = finish.finish_reason if finish is not None else None
    choices = [] if usage else [{"index": 0, "text": delta, "finish_reason": reason, "logprobs": None}]
    return {
        "id": call.interaction_id,
        "object": "text_completion",
        "created": call.created,
        "model": call.model_name,
        "choices": choices,
        **({"usage": usage} if usage else {}),
    }
