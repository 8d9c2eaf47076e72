"""tuneloop: keep a deployed LLM aligned with its users, continuously and safely."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

# Every model loads from local files. Without these, Hugging Face libraries ask the hub: a machine with no
# internet waits out their retries, and a training job that holds users' data sends telemetry. A deployment
# that wants the hub sets them itself.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# PEFT asks transformers for a property transformers deprecated: every adapter load printed this to the
# worker's log, and nobody running tuneloop can act on it.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

if TYPE_CHECKING:
    from tuneloop.async_client import AsyncClient
    from tuneloop.client import Client
    from tuneloop.config import Settings


def create_app(settings: Settings | None = None):
    """Build the HTTP service; see `tuneloop.serve.app.create_app`."""
    from tuneloop.serve.app import create_app as build

    return build(settings)


def __getattr__(name: str) -> Any:
    # Imported on first use: `tuneloop.cli` starts from here, and a Ctrl-C while httpx and pydantic load
    # would be a traceback before its handlers exist.
    if name == "Client":
        from tuneloop.client import Client

        return Client
    if name == "AsyncClient":
        from tuneloop.async_client import AsyncClient

        return AsyncClient
    if name == "Settings":
        from tuneloop.config import Settings

        return Settings
    raise AttributeError(f"module 'tuneloop' has no attribute {name!r}")


__all__ = ["AsyncClient", "Client", "Settings", "create_app"]
