"""The review API over real HTTP: tasks, rotation with overlap, labels as labeler feedback, agreement."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.live import live_server
from tuneloop.config import Settings
from tuneloop.signals.policy import RewardPolicy
from tuneloop.signals.snapshots import create_snapshot
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store

PROMPT = [{"role": "user", "content": "How do I freeze my card?"}]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Settings]]:
    settings = Settings(home=tmp_path_factory.mktemp("home"), backend="none")
    store = Store(settings.database_url)
    _, operator = store.create_tenant("acme")
    keys = {"operator": operator, "ingest": store.add_key("acme", role="ingest")}
    keys |= {f"reviewer{i}": store.add_key("acme", role="reviewer") for i in (1, 2, 3)}
    store.close()
    with live_server(settings) as url:
        yield url, keys, settings


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def log_pairs(op: httpx.Client, prefix: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = {"id": f"{prefix}-{i}", "messages": PROMPT, "response": f"Open Cards {i}.",
                "choices": [f"Open Cards {i}.", f"Tap Cards, then Freeze, then confirm {i}."]}  # fmt: skip
        assert op.post("/v1/interactions", json=body).status_code == 201
        ids.append(body["id"])
    return ids


def test_two_reviewers_label_the_same_items_and_get_an_agreement_figure(api) -> None:
    url, keys, _ = api
    with (
        client(url, keys["operator"]) as op,
        client(url, keys["reviewer1"]) as r1,
        client(url, keys["reviewer2"]) as r2,
        client(url, keys["reviewer3"]) as r3,
    ):
        task = {"name": "tone", "kind": "pairwise", "guidelines": "Prefer the shorter answer.", "overlap": 2}
        assert op.post("/v1/review/tasks", json=task).status_code == 201
        ids = log_pairs(op, "tone", 6)
        added = op.post("/v1/review/tasks/tone/items", json={"items": [{"interaction_id": i} for i in ids]})
        assert added.status_code == 201 and added.json()["added"] == 6

        labelled: dict[str, list[int]] = {}
        for n, reviewer in enumerate((r1, r2)):
            for k in range(6):
                shown = reviewer.post("/v1/review/tasks/tone/next").json()
                assert shown["guidelines"] == "Prefer the shorter answer." and len(shown["answers"]) == 2
                # Both alternate between the answers; reviewer 2 disagrees on the last item only.
                chosen = k % 2 if (n == 0 or k < 5) else 0
                sent = reviewer.post(f"/v1/review/tasks/tone/items/{shown['item']}/label",
                                     json={"label": {"chosen": chosen}})  # fmt: skip
                assert sent.status_code == 201, sent.text
                labelled.setdefault(shown["item"], []).append(chosen)
        # Overlap 2: both reviewers saw the same six items, and a third one has nothing left.
        assert len(labelled) == 6 and all(len(v) == 2 for v in labelled.values())
        assert r3.post("/v1/review/tasks/tone/next").json()["item"] is None

        report = op.get("/v1/review/tasks/tone/agreement").json()
        # Nominal alpha, 12 values, one item split: D_o = 2/12; seven 0s and five 1s: D_e = 2*7*5/(12*11).
        assert (
            report["alpha"] == round(1 - (2 / 12) / (70 / 132), 3)
            and report["shared_items"] == 6
            and report["labels"] == 12
        )
        assert {r["reviewer"] for r in report["reviewers"]} == {
            keys["reviewer1"][:10],
            keys["reviewer2"][:10],
        }

        events = op.get("/v1/feedback", params={"interaction_id": ids[0]}).json()["data"]
        assert [(e["kind"], e["source"]) for e in events] == [("preference", "labeler")] * 2
        assert all(e["rater"] not in (keys["reviewer1"][:10], keys["reviewer2"][:10]) for e in events)


def test_a_hold_rotates_to_the_next_reviewer_and_a_resent_label_is_a_duplicate(api) -> None:
    url, keys, _ = api
    with (
        client(url, keys["operator"]) as op,
        client(url, keys["reviewer1"]) as r1,
        client(url, keys["reviewer2"]) as r2,
    ):
        op.post("/v1/review/tasks", json={"name": "scores", "kind": "rubric", "overlap": 1})
        ids = log_pairs(op, "score", 2)
        op.post("/v1/review/tasks/scores/items", json={"items": [{"interaction_id": i} for i in ids]})
        first = r1.post("/v1/review/tasks/scores/next").json()
        assert r1.post("/v1/review/tasks/scores/next").json()["item"] == first["item"]  # still held
        assert r2.post("/v1/review/tasks/scores/next").json()["item"] != first["item"]  # overlap 1
        path = f"/v1/review/tasks/scores/items/{first['item']}/label"
        assert r1.post(path, json={"label": {"score": 4}}).status_code == 201
        assert r1.post(path, json={"label": {"score": 4}}).status_code == 200
        assert r1.post(path, json={"label": {"score": 2}}).status_code == 409


def test_a_key_sent_after_a_tab_names_its_own_reviewer(api) -> None:
    """`Bearer<TAB>key` authenticates (RFC 9110 allows any whitespace there), so it must name the key's
    reviewer too: read by a space only, every such key was the same reviewer, "", and one's label blocked
    the next reviewer's."""
    url, keys, _ = api
    tabbed = {n: httpx.Client(base_url=url, headers={"Authorization": f"Bearer\t{keys[n]}"}, timeout=30)
              for n in ("reviewer1", "reviewer2")}  # fmt: skip
    with client(url, keys["operator"]) as op, tabbed["reviewer1"] as r1, tabbed["reviewer2"] as r2:
        op.post("/v1/review/tasks", json={"name": "tabs", "kind": "rubric", "overlap": 2})
        [item_of] = log_pairs(op, "tab", 1)
        op.post("/v1/review/tasks/tabs/items", json={"items": [{"interaction_id": item_of}]})
        for reviewer, score in ((r1, 5), (r2, 1)):
            shown = reviewer.post("/v1/review/tasks/tabs/next").json()
            sent = reviewer.post(f"/v1/review/tasks/tabs/items/{shown['item']}/label",
                                 json={"label": {"score": score}})  # fmt: skip
            assert sent.status_code == 201, sent.text
        report = op.get("/v1/review/tasks/tabs/agreement").json()
        assert {r["reviewer"] for r in report["reviewers"]} == {
            keys["reviewer1"][:10],
            keys["reviewer2"][:10],
        }


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ({"chosen": 2}, "chosen"),
        ({"score": 3}, "pairwise"),
        ("b", "dictionary"),
        ({"chosen": True}, "chosen"),
    ],
)
def test_a_bad_label_is_a_400_that_says_what_to_send(api, label, message) -> None:
    url, keys, _ = api
    with client(url, keys["operator"]) as op, client(url, keys["reviewer3"]) as r3:
        op.post("/v1/review/tasks", json={"name": "bad", "kind": "pairwise", "overlap": 3})
        [iid] = log_pairs(op, f"bad-{abs(hash(str(label)))}", 1)
        [item] = op.post("/v1/review/tasks/bad/items", json={"items": [{"interaction_id": iid}]}).json()[
            "data"
        ]
        sent = r3.post(f"/v1/review/tasks/bad/items/{item['id']}/label", json={"label": label})
        assert sent.status_code == 400 and message in sent.json()["error"]["message"]


def test_roles_unknown_tasks_and_foreign_interactions_are_refused(api) -> None:
    url, keys, _ = api
    with (
        client(url, keys["operator"]) as op,
        client(url, keys["reviewer1"]) as r1,
        client(url, keys["ingest"]) as ingest,
    ):
        assert r1.post("/v1/review/tasks", json={"name": "x", "kind": "rubric"}).status_code == 403
        assert ingest.post("/v1/review/tasks/tone/next").status_code == 403
        assert r1.post("/v1/review/tasks/nope/next").status_code == 404
        assert op.post("/v1/review/tasks", json={"name": "Bad Name", "kind": "rubric"}).status_code == 400
        assert op.post("/v1/review/tasks", json={"name": "k", "kind": "essay"}).status_code == 400
        op.post("/v1/review/tasks", json={"name": "one", "kind": "rubric"})
        missing = op.post("/v1/review/tasks/one/items", json={"items": [{"interaction_id": "int-none"}]})
        assert missing.status_code == 404
        assert op.post("/v1/review/tasks/one/items", json={"items": []}).status_code == 400


def test_queued_items_and_their_errors_name_interactions_by_the_ids_the_client_sent(api) -> None:
    url, keys, _ = api
    with client(url, keys["operator"]) as op:
        assert op.post("/v1/review/tasks", json={"name": "names", "kind": "pairwise"}).status_code == 201
        [first, second] = log_pairs(op, "jane-doe", 2)  # ids that could spell something: stored as `ref-`
        pair = {"interaction_id": first, "other_interaction_id": second}
        added = op.post("/v1/review/tasks/names/items", json={"items": [pair]})
        assert added.status_code == 201, added.text
        assert {k: added.json()["data"][0][k] for k in pair} == pair
        missing = op.post("/v1/review/tasks/names/items", json={"items": [{"interaction_id": "jane-doe-9"}]})
        assert missing.status_code == 404 and "'jane-doe-9' not found" in missing.json()["error"]["message"]
        one = op.post("/v1/interactions", json={"id": "jane-doe-one", "messages": PROMPT, "response": "Hi."})
        assert one.status_code == 201
        single = op.post("/v1/review/tasks/names/items", json={"items": [{"interaction_id": "jane-doe-one"}]})
        assert (
            single.status_code == 400 and "'jane-doe-one' has one answer" in single.json()["error"]["message"]
        )


def test_a_reviewer_who_contradicts_the_others_is_flagged_by_agreement_and_by_rater_reliability(api) -> None:
    url, keys, settings = api
    with (
        client(url, keys["operator"]) as op,
        client(url, keys["reviewer1"]) as r1,
        client(url, keys["reviewer2"]) as r2,
        client(url, keys["reviewer3"]) as r3,
    ):
        op.post("/v1/review/tasks", json={"name": "audit", "kind": "pairwise", "overlap": 3})
        ids = log_pairs(op, "audit", 8)
        op.post("/v1/review/tasks/audit/items", json={"items": [{"interaction_id": i} for i in ids]})
        for reviewer, flip in ((r1, 0), (r2, 0), (r3, 1)):
            for _ in ids:
                shown = reviewer.post("/v1/review/tasks/audit/next").json()
                # The third reviewer always picks the other answer.
                chosen = int(shown["item"][3:], 16) % 2 ^ flip
                path = f"/v1/review/tasks/audit/items/{shown['item']}/label"
                assert reviewer.post(path, json={"label": {"chosen": chosen}}).status_code == 201
        report = op.get("/v1/review/tasks/audit/agreement").json()
    assert report["flagged"] == [keys["reviewer3"][:10]]

    store = Store(settings.database_url)
    tenant = store.for_tenant(store.tenant_by_name("acme"))
    snapshot = create_snapshot(tenant, settings.home, RewardPolicy(near_duplicate_threshold=1.0))
    store.close()
    pseudonyms = Pseudonyms(settings.hash_key())
    flagged = snapshot.report["flagged_raters"]
    assert pseudonyms.identifier(keys["reviewer3"][:10], tenant.tenant_id) in flagged
    assert pseudonyms.identifier(keys["reviewer1"][:10], tenant.tenant_id) not in flagged


def test_guidelines_are_redacted_before_they_are_stored(api) -> None:
    url, keys, _ = api
    guidelines = "Escalate refunds to Jane Doe (jane.doe@example.com) before you score them."
    with client(url, keys["operator"]) as op, client(url, keys["reviewer1"]) as r1:
        made = op.post(
            "/v1/review/tasks", json={"name": "privacy", "kind": "rubric", "guidelines": guidelines}
        )
        shown = r1.post("/v1/review/tasks/privacy/next").json()["guidelines"]
    assert made.status_code == 201, made.text
    assert (
        shown
        == made.json()["guidelines"]
        == "Escalate refunds to <PERSON> (<EMAIL_ADDRESS>) before you score them."
    )
