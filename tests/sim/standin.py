"""A stand-in for an OpenAI-compatible tuneloop server, outside our code: it answers chat completions in
OpenAI's response shape with canned answers and records the capture API's feedback events."""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

KINDS = {"thumbs", "rating", "preference", "edit", "comment", "accepted", "copied", "regenerated"}
KINDS |= {"followup", "escalated", "abandoned", "dwell_ms", "outcome"}


@dataclass
class Recorded:
    """Everything the stand-in saw."""

    # {"id", "user", "session", "n", "texts", "temperature"}
    completions: list[dict] = field(default_factory=list)
    posts: list[list[dict]] = field(default_factory=list)  # every feedback batch, retries included
    events: dict[str, dict] = field(default_factory=dict)  # accepted events by id
    fail_next_feedback: int = 0  # answer this many feedback posts with 503 (after storing them)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_app(answers: list[str], recorded: Recorded, version: str = "v-test") -> FastAPI:
    """The app: answers are picked from `answers` by the request's seed (or at random without one)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        rng = random.Random(body.get("seed"))
        n = body.get("n") or 1
        texts = [answers[0] if body.get("temperature") == 0 else rng.choice(answers) for _ in range(n)]
        iid = f"chatcmpl-{uuid.uuid4().hex}"
        with recorded.lock:
            recorded.completions.append(
                {
                    "id": iid,
                    "user": body.get("user"),
                    "session": (body.get("metadata") or {}).get("session_id"),
                    "n": n,
                    "texts": texts,
                    "temperature": body.get("temperature"),
                }
            )
        payload = {
            "id": iid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": version,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
                for i, t in enumerate(texts)
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }
        return JSONResponse(
            payload, headers={"x-tuneloop-interaction-id": iid, "x-tuneloop-version": version}
        )

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> JSONResponse:
        body = await request.json()
        batch = body.get("events", [body])
        known = {c["id"] for c in recorded.completions}
        results = []
        with recorded.lock:
            recorded.posts.append(batch)
            for item in batch:
                ok = item.get("kind") in KINDS and item.get("interaction_id") in known
                if item.get("kind") == "regenerated":
                    ok = ok and item["value"]["replaced_by"] in known
                if not ok:
                    results.append({"id": item.get("id"), "status": "rejected", "error": "invalid"})
                elif item["id"] in recorded.events:
                    results.append({"id": item["id"], "status": "duplicate"})
                else:
                    recorded.events[item["id"]] = item
                    results.append({"id": item["id"], "status": "accepted"})
            if recorded.fail_next_feedback > 0:
                # Stored, but the answer is lost: the client must retry with the same ids.
                recorded.fail_next_feedback -= 1
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        return JSONResponse({"accepted": sum(r["status"] == "accepted" for r in results), "results": results})

    return app


@contextmanager
def standin_server(answers: list[str], recorded: Recorded) -> Iterator[str]:
    """Serve the stand-in over real HTTP on a free loopback port; yields the base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(make_app(answers, recorded), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("stand-in server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
