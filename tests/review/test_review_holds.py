"""Who holds which review item: viewing a review screen (a GET) holds nothing, so a screen opened and left,
reloaded or prefetched locks no item away from other reviewers; holds come from POSTs (the API's `next`, and
a label or skip on the screen, which holds the next item), one per reviewer. Real server, real store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.live import live_server
from tuneloop.clock import now_utc
from tuneloop.config import Settings
from tuneloop.store.repository import Store
from tuneloop.store.schema import review_assignments

QUESTION = [{"role": "user", "content": "How do I freeze my card?"}]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), backend="none")
    store = Store(settings.database_url)
    _, operator = store.create_tenant("acme")
    keys = {"operator": operator, "ana": store.add_key("acme", role="reviewer")}
    keys["ben"] = store.add_key("acme", role="reviewer")
    with live_server(settings) as url:
        yield {"url": url, "keys": keys, "store": store}
    store.close()


def _task(site: dict[str, Any], name: str, items: int) -> list[str]:
    """A rubric task that wants one reviewer per item, with `items` items; their ids, in queue order."""
    headers = {"Authorization": f"Bearer {site['keys']['operator']}"}
    with httpx.Client(base_url=site["url"], headers=headers, timeout=30) as api:
        assert (
            api.post("/v1/review/tasks", json={"name": name, "kind": "rubric", "overlap": 1}).status_code
            == 201
        )
        ids = []
        for i in range(items):
            body = {"id": f"{name}-{i}", "messages": QUESTION, "response": f"Open Cards {i}."}
            assert api.post("/v1/interactions", json=body).status_code == 201
            added = api.post(
                f"/v1/review/tasks/{name}/items", json={"items": [{"interaction_id": body["id"]}]}
            )
            ids.append(added.json()["data"][0]["id"])
    return ids


@contextmanager
def _screen_session(site: dict[str, Any], reviewer: str) -> Iterator[httpx.Client]:
    """A dashboard session of `reviewer`, logged in through the login form."""
    with httpx.Client(base_url=site["url"], follow_redirects=False, timeout=30) as client:
        login = client.post("/dashboard/login", data={"key": site["keys"][reviewer], "next": "/dashboard"})
        assert login.status_code == 303
        yield client


def _shown(screen: httpx.Response, task: str) -> str | None:
    """The item a review screen shows (the one its form labels), or None when it shows none."""
    assert screen.status_code == 200, screen.text
    found = re.search(rf'action="/dashboard/t/acme/review/{task}/([^"]+)"', screen.text)
    return found.group(1) if found else None


def _next_over_the_api(site: dict[str, Any], reviewer: str, task: str) -> str | None:
    headers = {"Authorization": f"Bearer {site['keys'][reviewer]}"}
    answer = httpx.post(f"{site['url']}/v1/review/tasks/{task}/next", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["item"]


def _live_holds(site: dict[str, Any], task: str) -> dict[str, list[str]]:
    """Each reviewer's live holds in the task (by the key prefix the review API names reviewers by)."""
    store: Store = site["store"]
    tenant = store.for_tenant(store.tenant_by_name("acme"))
    rows = tenant.all(review_assignments, review_assignments.c.task_id == task,
                      review_assignments.c.status == "assigned",
                      review_assignments.c.expires_at > now_utc())  # fmt: skip
    prefixes = {site["keys"][name][:10]: name for name in ("ana", "ben")}
    holds: dict[str, list[str]] = {}
    for row in rows:
        holds.setdefault(prefixes[row.reviewer], []).append(row.item_id)
    return holds


def test_opening_the_review_screen_holds_nothing_so_another_reviewer_gets_the_item(site) -> None:
    [only] = _task(site, "left-open", 1)
    with _screen_session(site, "ana") as ana:
        shown = [_shown(ana.get("/dashboard/t/acme/review/left-open"), "left-open") for _ in range(3)]
        assert shown == [only] * 3  # the same item on every reload
        assert _live_holds(site, "left-open") == {}
        # Ana opened the screen and walked away: Ben, asking for work, is not locked out for 30 minutes.
        assert _next_over_the_api(site, "ben", "left-open") == only
        assert _live_holds(site, "left-open") == {"ben": [only]}
        # Its one place is Ben's now, so Ana's screen no longer offers it.
        assert _shown(ana.get("/dashboard/t/acme/review/left-open"), "left-open") is None


def test_labelling_on_the_screen_holds_the_next_item_once_and_a_reload_shows_it_again(site) -> None:
    first, second, third = _task(site, "in-turn", 3)
    with _screen_session(site, "ana") as ana:
        screen = ana.get("/dashboard/t/acme/review/in-turn")
        assert _shown(screen, "in-turn") == first
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', screen.text).group(1)
        saved = ana.post(f"/dashboard/t/acme/review/in-turn/{first}", data={"csrf": token, "score": "4"})
        assert saved.status_code == 303, saved.text
        # The POST held the next item for the screen it leads to; reloading that screen takes no other.
        for _ in range(3):
            assert _shown(ana.get(saved.headers["location"]), "in-turn") == second
        assert _live_holds(site, "in-turn") == {"ana": [second]}
        assert _next_over_the_api(site, "ben", "in-turn") == third  # the held item is not offered twice
        assert _live_holds(site, "in-turn") == {"ana": [second], "ben": [third]}


def test_asking_the_api_for_the_next_item_again_answers_the_same_hold(site) -> None:
    first, second = _task(site, "asked-twice", 2)
    assert [_next_over_the_api(site, "ana", "asked-twice") for _ in range(3)] == [first] * 3
    assert _next_over_the_api(site, "ben", "asked-twice") == second
    assert _live_holds(site, "asked-twice") == {"ana": [first], "ben": [second]}


def test_a_label_for_a_shown_item_whose_place_another_reviewer_took_meanwhile_is_refused(site) -> None:
    [only] = _task(site, "taken-meanwhile", 1)
    with _screen_session(site, "ana") as ana:
        screen = ana.get("/dashboard/t/acme/review/taken-meanwhile")
        assert _shown(screen, "taken-meanwhile") == only  # shown, not held
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', screen.text).group(1)
        assert _next_over_the_api(site, "ben", "taken-meanwhile") == only  # Ben takes its one place
        late = ana.post(
            f"/dashboard/t/acme/review/taken-meanwhile/{only}", data={"csrf": token, "score": "2"}
        )
    # The task wants one judgement per item: Ana's is refused rather than added, and she is told what to do.
    assert late.status_code == 409, late.text
    assert "Label not saved" in late.text and "reload the review screen" in late.text
    assert _live_holds(site, "taken-meanwhile") == {"ben": [only]}
