"""The versions page: what each version is made of, and the (ε, δ) a reward model spent when it was trained by
DP-SGD."""

from __future__ import annotations

from pathlib import Path

from tests.dashboard.test_sessions import login
from tests.live import serve_app
from tuneloop.config import Settings
from tuneloop.registry.versions import Registry
from tuneloop.serve.app import create_app
from tuneloop.store.repository import Store


def test_versions_page_shows_what_a_version_is_made_of_and_a_private_reward_models_budget(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path / "home", backend="none")
    store = Store(settings.database_url)
    tenant_row, key = store.create_tenant("acme")
    registry = Registry(store.for_tenant(tenant_row))
    privacy = {"epsilon": 3.9923, "delta": 1e-5}
    registry.register(
        kind="reward_model", base_model="m", actor="learn", version_id="rm-dp", metrics={"privacy": privacy}
    )
    registry.register(kind="reward_model", base_model="m", actor="learn", version_id="rm-plain")
    light = {"version_id": "v-light", "system_prompt": "Be brief.", "decoding": {"examples": {"k": 2}}}
    registry.register(kind="adapter", base_model="m", actor="loop", **light)
    store.close()

    with serve_app(create_app(settings)) as url:
        page = login(url, key).get("/dashboard/t/acme/versions")

    assert page.status_code == 200
    row = page.text.split("rm-dp", 1)[1].split("</tr>", 1)[0]
    assert "ε=3.99, δ=1e-05" in row
    assert "ε=" not in page.text.split("rm-plain", 1)[1].split("</tr>", 1)[0]
    assert "<td>base model + prompt + examples</td>" in page.text.split("v-light", 1)[1].split("</tr>", 1)[0]
