"""`/v1/embeddings` in OpenAI's shape: the embedded all-MiniLM-L6-v2, or the upstream's own endpoint.

With the embedded backend every `model` name is answered by MiniLM (384 dimensions), so clients that
default to OpenAI's model names work unchanged; inputs past MiniLM's 256-token window are truncated, as
sentence-transformers does. Embeddings are not interactions: nothing is captured.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.errors import BadRequest
from tuneloop.retrieve.extract import visible
from tuneloop.serve.backends.openai_upstream import OpenAIUpstreamBackend
from tuneloop.serve.http import GATEWAY, read_json, validate
from tuneloop.signals import embeddings

router = APIRouter()
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_INPUTS = 2048  # OpenAI's limit; the request body limit bounds the total text


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request; token-array inputs are refused (they name another model's tokens)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    input: str | list[str]
    model: Annotated[str, Field(max_length=256)] | None = None
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = Field(None, ge=1)
    user: Annotated[str, Field(max_length=256)] | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def _parse(body: Any, max_text: int) -> EmbeddingRequest:
    if isinstance(body, dict) and _is_token_array(body.get("input")):
        raise BadRequest(
            "input as token ids is not supported: send strings (with LangChain's OpenAIEmbeddings, "
            "set check_embedding_ctx_length=False)",
            param="input",
        )
    req = validate(EmbeddingRequest, body, max_text)
    texts = req.texts()
    if not 1 <= len(texts) <= MAX_INPUTS:
        raise BadRequest(f"input: send 1 to {MAX_INPUTS} strings", param="input")
    if empty := [i for i, t in enumerate(texts) if not visible(t)]:
        where = "input" if isinstance(req.input, str) else f"input.{empty[0]}"
        raise BadRequest(
            f"{where}: empty, or only whitespace or invisible characters, has no embedding; leave it out",
            param=where,
        )
    return req


def _is_token_array(value: Any) -> bool:
    items = value if isinstance(value, list) else []
    return bool(items) and all(isinstance(i, (int, list)) for i in items)


@router.post("/v1/embeddings")
async def create_embeddings(request: Request) -> dict:
    """Embed one string or a list of strings, as OpenAI's API does (float or base64 vectors)."""
    st = request.app.state.tuneloop
    tenant = await st.auth.tenant(request, GATEWAY)  # authorised, and admitted as the key's tenant
    body = await read_json(request, st.settings.max_body_bytes)
    req = _parse(body, st.settings.max_text_chars)
    if isinstance(st.backend, OpenAIUpstreamBackend):
        return await st.backend.embeddings(req.model_dump(exclude_none=True))
    if req.dimensions not in (None, embeddings.DIMENSIONS):
        raise BadRequest(
            f"{MODEL_NAME} makes {embeddings.DIMENSIONS}-dimensional vectors; leave dimensions out",
            param="dimensions",
        )
    vectors, tokens = await st.retrievals(tenant.tenant_id, _embed, req.texts())
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": MODEL_NAME,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _embed(texts: list[str]) -> tuple[np.ndarray, int]:
    """The vectors and the number of tokens MiniLM read (after truncation to its window)."""
    model = embeddings.load_model()
    ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    return embeddings.embed(texts), sum(len(i) for i in ids)


def _encode(vector: np.ndarray, encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":  # what the openai SDK asks for: little-endian float32, as OpenAI sends
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
