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

    uvicorn.run(create_app(Settings()), host=args.host, port=args.port, log_level="info")
    return 0
