"""Review screens in real Chromium: reviewers label by keyboard, labels reach the next snapshot, and the
review page shows the task's agreement. Screens are saved beside the other dashboard pictures."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.dashboard.test_dashboard import browser, logged_in, shoot  # noqa: F401 (the browser fixture)
from tests.live import live_server
from tuneloop.config import Settings
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.repository import Store

QUESTION = [{"role": "user", "content": "My Finly Visa card was stolen, how do I block it?"}]
SHORT = "Freeze it under Cards now, then order a new one. This is not financial advice."
LONG = ("I'm sorry to hear that! Card theft can be stressful. There are many things you can do, such as "
        "contacting your bank, checking recent transactions and filing a police report, and later you "
        "may want to order a replacement card from the app.")  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Settings]]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), backend="none")
    store = Store(settings.database_url)
    _, operator = store.create_tenant("acme")
    keys = {"operator": operator, "ana": store.add_key("acme", role="reviewer")}
    keys["ben"] = store.add_key("acme", role="reviewer")
    store.close()
    with live_server(settings) as url:
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {operator}"}, timeout=30)
        for n, kind in enumerate(("pairwise", "rubric", "correction")):
            guidelines = "Prefer short answers that end with the disclaimer." if n == 0 else None
            api.post("/v1/review/tasks", json={"name": kind, "kind": kind, "guidelines": guidelines})
            body = {"id": f"int-{kind}", "messages": QUESTION, "response": LONG, "choices": [LONG, SHORT]}
            api.post("/v1/interactions", json=body)
            api.post(f"/v1/review/tasks/{kind}/items", json={"items": [{"interaction_id": f"int-{kind}"}]})
        api.close()
        yield url, keys, settings


def test_a_reviewer_labels_by_keyboard_and_the_labels_reach_the_next_snapshot(site, browser) -> None:  # noqa: F811
    url, keys, settings = site
    page = logged_in_reviewer(browser, url, keys["ana"])
    assert page.url.endswith("/dashboard/t/acme/review")
    assert page.goto(f"{url}/dashboard/t/acme/kpis").status == 403  # a reviewer sees the review pages only

    page.goto(f"{url}/dashboard/t/acme/review/pairwise")
    assert "Prefer short answers" in page.locator(".guidelines").inner_text()
    shoot(page, "review-pairwise")
    short_key = next(
        str(i + 1) for i, text in enumerate(page.locator(".answer .text").all_inner_texts()) if text == SHORT
    )
    with page.expect_navigation():
        page.keyboard.press(short_key)
    assert "Saved" in page.content() and "Nothing left for you" in page.content()

    page.goto(f"{url}/dashboard/t/acme/review/rubric")
    shoot(page, "review-rubric")
    with page.expect_navigation():
        page.keyboard.press("2")

    page.goto(f"{url}/dashboard/t/acme/review/correction")
    page.fill("#correction", SHORT)
    shoot(page, "review-correction")
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")
    assert page.errors == []

    store = Store(settings.database_url)
    tenant = store.for_tenant(store.tenant_by_name("acme"))
    snapshot = create_snapshot(tenant, settings.home, RewardPolicy(near_duplicate_threshold=1.0))
    labels = {e["id"] for e in tenant.feedback() if e["source"] == "labeler"}
    store.close()
    pairs = snapshot.rows("pairs")
    chosen = {p["chosen"][0]["content"] for p in pairs if labels & set(p["event_ids"])}
    assert chosen == {SHORT}  # the pairwise choice, and the correction as edit > original
    sources = {e for p in pairs for e in p["event_ids"] if e in labels}
    assert len(sources) == 2


def test_two_reviewers_on_one_task_show_an_agreement_figure(site, browser) -> None:  # noqa: F811
    url, keys, _ = site
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['operator']}"}) as api:
        api.post("/v1/review/tasks", json={"name": "tone", "kind": "rubric", "overlap": 2})
        for i in range(4):
            api.post(
                "/v1/interactions", json={"id": f"int-tone-{i}", "messages": QUESTION, "response": SHORT}
            )
            api.post("/v1/review/tasks/tone/items", json={"items": [{"interaction_id": f"int-tone-{i}"}]})
    for reviewer, scores in (("ana", "5414"), ("ben", "5314")):
        page = logged_in_reviewer(browser, url, keys[reviewer])
        page.goto(f"{url}/dashboard/t/acme/review/tone")
        for score in scores:
            with page.expect_navigation():
                page.keyboard.press(score)
        assert "Nothing left for you" in page.content()

    page = logged_in(browser, url, keys["operator"])
    page.goto(f"{url}/dashboard/t/acme/review")
    row = page.locator("tr", has_text="tone").first.inner_text()
    assert "α = 0.95" in row, row  # interval alpha of (5,5) (4,3) (1,1) (4,4): 1 - 0.25 / 5.107
    shoot(page, "review")


def logged_in_reviewer(browser, url: str, key: str):  # noqa: F811
    """A reviewer logs in through the form and lands on their tenant's review page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(f"{url}/dashboard/login")
    page.fill("#key", key)
    with page.expect_navigation(url=f"{url}/dashboard/t/acme/review"):
        page.click("button[type=submit]")
    return page


@pytest.mark.parametrize("n, score", enumerate(["²", "٣", "3.0", ""]))
def test_a_review_form_with_a_score_that_is_not_an_offered_digit_is_a_400(site, n: int, score: str) -> None:
    url, keys, _ = site
    task, interaction = f"digits-{n}", f"int-digits-{n}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['operator']}"}) as api:
        api.post("/v1/review/tasks", json={"name": task, "kind": "rubric", "overlap": 1})
        api.post("/v1/interactions", json={"id": interaction, "messages": QUESTION, "response": SHORT})
        added = api.post(f"/v1/review/tasks/{task}/items", json={"items": [{"interaction_id": interaction}]})
        item = added.json()["data"][0]["id"]
    client = httpx.Client(base_url=url, follow_redirects=False)
    assert client.post("/dashboard/login", data={"key": keys["ben"], "next": "/dashboard"}).status_code == 303
    screen = client.get(f"/dashboard/t/acme/review/{task}")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', screen.text).group(1)
    # "²".isdigit() is True, yet int("²") raises: the form refuses it as it refuses "9".
    answer = client.post(f"/dashboard/t/acme/review/{task}/{item}", data={"csrf": token, "score": score})
    assert answer.status_code == 400, answer.text
    assert "Label not saved" in answer.text
    client.close()


def test_a_correction_longer_than_the_text_limit_is_a_400_as_over_the_api(site) -> None:
    url, keys, settings = site
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['operator']}"}) as api:
        api.post("/v1/review/tasks", json={"name": "long-fix", "kind": "correction", "overlap": 1})
        api.post("/v1/interactions", json={"id": "int-long-fix", "messages": QUESTION, "response": SHORT})
        added = api.post(
            "/v1/review/tasks/long-fix/items", json={"items": [{"interaction_id": "int-long-fix"}]}
        )
        item = added.json()["data"][0]["id"]
    client = httpx.Client(base_url=url, follow_redirects=False)
    assert client.post("/dashboard/login", data={"key": keys["ana"], "next": "/dashboard"}).status_code == 303
    token = re.search(
        r'name="csrf" value="([0-9a-f]+)"', client.get("/dashboard/t/acme/review/long-fix").text
    )
    text = "x" * (settings.max_text_chars + 1)
    answer = client.post(
        f"/dashboard/t/acme/review/long-fix/{item}", data={"csrf": token.group(1), "text": text}
    )
    assert answer.status_code == 400, answer.text
    assert f"longer than {settings.max_text_chars} characters" in answer.text
    client.close()
