"""`tuneloop demo`: a seeded demo tenant on a running server, and how to talk to it."""

from __future__ import annotations

import argparse
from typing import Any

from tuneloop.config import Settings
from tuneloop.errors import NotFound
from tuneloop.store.repository import Store

DEMO_TENANT = "demo"


def register(commands: Any) -> None:
    p = commands.add_parser("demo", help="start the server with a seeded demo tenant")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(run=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import uvicorn

    from tuneloop.serve.app import create_app

    settings = Settings()
    store = Store(settings.database_url)
    key_file = settings.home / "demo-key"
    try:
        store.tenant_by_name(DEMO_TENANT)
        key = key_file.read_text().strip() if key_file.exists() else store.add_key(DEMO_TENANT)
    except NotFound:
        _, key = store.create_tenant(DEMO_TENANT)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    store.close()
    base = f"http://127.0.0.1:{args.port}"
    print(
        f"""tuneloop demo: tenant '{DEMO_TENANT}', key {key} (also in {key_file})
Log an interaction and feedback on it:
  curl -s {base}/v1/interactions -H 'Authorization: Bearer {key}' -H 'content-type: application/json' \\
    -d '{{"id": "int-1", "messages": [{{"role": "user", "content": "hi"}}], "response": "hello"}}'
  curl -s {base}/v1/feedback -H 'Authorization: Bearer {key}' -H 'content-type: application/json' \\
    -d '{{"id": "evt-1", "interaction_id": "int-1", "kind": "thumbs", "value": 1}}'
Ctrl-C stops the server.""",
        flush=True,
    )
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning")
    return 0
