"""tuneloop: keep a deployed LLM aligned with its users, continuously and safely."""

from tuneloop.client import Client
from tuneloop.config import Settings


def create_app(settings: Settings | None = None):
    """Build the HTTP service; see `tuneloop.serve.app.create_app`."""
    from tuneloop.serve.app import create_app as build

    return build(settings)


__all__ = ["Client", "Settings", "create_app"]
