"""A gateway shared by the role and governance tests: one app start (the redactor warm-up is slow)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live import serve_app
from tests.serve.openai_standin import standin
from tuneloop import Settings
from tuneloop.serve.app import create_app
from tuneloop.store.repository import Store


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A running app on an OpenAI-compatible stand-in upstream: the app, its url, HOME and store."""
    with serve_app(standin([])) as upstream:
        home = tmp_path_factory.mktemp("gateway")
        settings = Settings(home=home, backend="openai", upstream_url=f"{upstream}/v1")
        store = Store(settings.database_url)
        app = create_app(settings)
        with serve_app(app) as url:
            yield {"app": app, "url": url, "home": home, "store": store}
        store.close()
