"""The dashboard's own routes on odd paths: a clear 404, never a 500, and the connection stays usable."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.live import serve_app
from tuneloop import Settings
from tuneloop.serve.app import create_app
from tuneloop.store.repository import Store


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("home")
    Store(Settings(home=home).database_url).close()
    with serve_app(create_app(Settings(home=home, backend="none"))) as base:
        yield base


@pytest.mark.parametrize(
    "name", ["x" * 5000 + ".js", "x" * 300 + ".css", "nope.js", "..%2Froutes.py", "web.py", "%00.js"]
)
def test_a_static_file_that_does_not_exist_is_a_404_whatever_its_name(url: str, name: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        missing = http.get(f"/dashboard/static/{name}")
        shipped = http.get("/dashboard/static/dashboard.css")  # the same connection still answers

    assert missing.status_code == 404
    assert shipped.status_code == 200
    assert shipped.headers["content-type"].startswith("text/css")
