"""tuneloop: keep a deployed LLM aligned with its users, continuously and safely."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
