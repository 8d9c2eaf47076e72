"""`tuneloop serve`: the HTTP service through uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

from tuneloop.config import Settings


def register(commands: Any) -> None:
    p = commands.add_parser("serve", help="run the HTTP service (capture API, OpenAI-compatible gateway)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneloop.serve.app import create_app

    settings = Settings()
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_level="info", **uvicorn_limits(settings)
    )
    return 0


def uvicorn_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn's connection limits and timeouts from the settings (uvicorn itself sets no limit)."""
    return {
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
