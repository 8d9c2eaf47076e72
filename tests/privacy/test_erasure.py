"""Erasure end to end: a user forgotten over the admin route leaves no text in the database, its WAL,
snapshots or exports under HOME; versions trained on them leave service; the audit chain still verifies."""

from __future__ import annotations

import html
import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from tests.live import live_server
from tests.privacy.traffic import BOB_TEXTS, JANE, JANE_EDITS, JANE_TEXTS, capture
from tuneloop import Settings
from tuneloop.cli import main
from tuneloop.errors import Conflict
from tuneloop.evaluate.suites.golden import STARTER_HEADER, GoldenItem, GoldenSet, load_golden
from tuneloop.monitor.alerts import pending_alerts
from tuneloop.privacy.erasure import forget_user
from tuneloop.registry.versions import Registry
from tuneloop.retrieve.search import log_retrieval
from tuneloop.review.tasks import TaskIn, add_items, create_task, next_item
from tuneloop.signals.snapshots import DATASETS, get_snapshot, list_snapshots
from tuneloop.store.pseudonyms import Pseudonyms
from tuneloop.store.repository import Store, TenantStore
from tuneloop.store.schema import audit_log, retrievals, review_assignments, review_items


def _readable(path: Path) -> bytes:
    """The file's bytes, plus its decoded rows for Parquet (whose pages may be compressed)."""
    data = path.read_bytes()
    if path.suffix == ".parquet":
        data += json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False, default=str).encode()
    return data


def _holding(home: Path, needles: list[str]) -> list[str]:
    return sorted(
        {
            str(path.relative_to(home))
            for path in home.rglob("*")
            if path.is_file()
            for needle in needles
            if needle.encode() in _readable(path)
        }
    )


def _versions(tenant: TenantStore, snapshot: str, other_snapshot: str) -> dict[str, str]:
    """A production adapter and judge on the snapshot, candidates warm-started from and composed on that
    adapter, one waiting for approval, and a production-bound version on another snapshot."""
    registry = Registry(tenant)
    adapter = registry.register(
        kind="adapter", base_model="base", actor="test", snapshot_hash=snapshot, artifact_path="/a/v1"
    )
    judge = registry.register(kind="reward_model", base_model="base", actor="test", snapshot_hash=snapshot)
    warm = registry.register(
        kind="adapter", base_model="base", actor="test", job_spec={"init_adapter": "/a/v1"}
    )
    composed = registry.register(kind="adapter", base_model="base", actor="test", parent_id=adapter.id)
    held = registry.register(kind="adapter", base_model="base", actor="test", snapshot_hash=snapshot)
    other = registry.register(kind="adapter", base_model="base", actor="test", snapshot_hash=other_snapshot)
    for version in (adapter, judge):
        registry.move(version.id, "gated", actor="test", reason="test")
        registry.move(version.id, "production", actor="test", reason="test")
    registry.move(other.id, "gated", actor="test", reason="test")
    registry.move(held.id, "gated", actor="test", reason="test")
    registry.move(held.id, "pending_approval", actor="test", reason="waits for a person")
    return {
        "adapter": adapter.id,
        "judge": judge.id,
        "warm": warm.id,
        "composed": composed.id,
        "held": held.id,
        "other": other.id,
    }


def _derived_files(home: Path, tenant_id: str) -> list[str]:
    """Files that quote Jane as tuneloop's own writers would: a gate report (JSON and escaped HTML), a starter
    golden set (YAML folds long lines)."""
    reports = home / "reports" / tenant_id / "v-1"
    reports.mkdir(parents=True)
    preview = JANE_TEXTS[0][:119] + "…"
    (reports / "report.json").write_text(json.dumps({"examples": [{"prompt": preview}]}, ensure_ascii=True))
    (reports / "report.html").write_text(f"<td>{html.escape(preview)}</td>")
    golden = home / "policies" / "acme" / "golden.yaml"
    golden.parent.mkdir(parents=True)
    item = {"id": "rated-1", "prompt": [{"role": "user", "content": "Hello there. " * 5 + JANE_TEXTS[1]}]}
    golden.write_text(yaml.safe_dump({"items": [item]}))
    return [
        "policies/acme/golden.yaml",
        f"reports/{tenant_id}/v-1/report.html",
        f"reports/{tenant_id}/v-1/report.json",
    ]


def test_forgotten_user_leaves_no_text_under_home_and_the_audit_still_verifies(tuneloop_home: Path) -> None:
    settings = Settings(home=tuneloop_home, backend="none")
    store = Store(settings.database_url, secret=settings.hash_key())
    _, acme_key = store.create_tenant("acme")
    store.create_tenant("beta", redaction="off")
    acme = store.for_tenant(store.tenant_by_name("acme"))
    beta = store.for_tenant(store.tenant_by_name("beta"))
    capture(acme, settings)
    capture(beta, settings, word="matter")  # the same users in another tenant, which must keep them
    exports = tuneloop_home / "exports"
    exports.mkdir()
    assert main(["snapshot", "create", "--tenant", "acme"]) == 0
    [snapshot] = list_snapshots(acme)
    for fmt in ("jsonl", "parquet"):
        assert (
            main(["export", "--tenant", "acme", "--format", fmt, "--out", str(exports / f"acme.{fmt}")]) == 0
        )
    assert main(["snapshot", "export", snapshot.hash, "--tenant", "acme", "--out", str(exports / "trl")]) == 0
    ids = _versions(acme, snapshot.hash, "f" * 64)
    others = _derived_files(tuneloop_home, acme.tenant_id)
    admin_key = store.add_key(None)
    jane_texts = JANE_TEXTS + JANE_EDITS
    beta_rows = len(beta.interactions()), len(beta.feedback())
    held = _holding(tuneloop_home, jane_texts)
    # Without these, the test could pass on files that never held Jane's text.
    assert {"exports/acme.jsonl", "exports/acme.parquet"} <= set(held)
    assert any(f.startswith("exports/trl/") for f in held) and "tuneloop.db-wal" in held
    assert any(JANE_TEXTS[0] in json.dumps(r, default=str) for name in DATASETS for r in snapshot.rows(name))

    with live_server(settings) as url, httpx.Client(base_url=url) as http:
        body = {"user": JANE}
        tenant_key = {"Authorization": f"Bearer {acme_key}"}
        assert http.post("/v1/users/forget", json=body, headers=tenant_key).status_code == 403
        admin = {"Authorization": f"Bearer {admin_key}"}
        assert http.post("/v1/users/forget", json=body, headers=admin).status_code == 403  # no tenant named
        admin["X-Tuneloop-Tenant"] = "acme"
        assert http.post("/v1/users/forget", json={"user": ""}, headers=admin).status_code == 400
        assert http.post("/v1/users/forget", json={"id": JANE}, headers=admin).status_code == 400
        reply = http.post("/v1/users/forget", json=body, headers=admin)
    assert reply.status_code == 200, reply.text
    erasure = reply.json()

    # Her 3 interactions with 9 events on them, her rating of Bob's answer and Bob's choice against hers.
    assert (erasure["interactions"], erasure["feedback"]) == (3, 11)
    assert erasure["snapshots"] == [snapshot.hash] and erasure["snapshot_rows"] > 0
    exported = [f for f in held if f.startswith("exports/")]
    assert erasure["files"] == {"rewritten": exported, "removed": others, "left": []}
    assert erasure["disk_clean"]
    assert _holding(tuneloop_home, jane_texts) == []
    pseudonyms = Pseudonyms(settings.hash_key())
    hashed = pseudonyms.identifier(JANE, acme.tenant_id)
    assert [p for p in _holding(tuneloop_home, [hashed]) if not p.startswith("tuneloop.db")] == []
    # Bob's rows stay in the store; an export row that carries Jane's rating (b0) goes whole.
    assert [json.loads(line)["id"] for line in (exports / "acme.jsonl").read_text().splitlines()] == [
        pseudonyms.reference("b1", acme.tenant_id),
        pseudonyms.reference("b2", acme.tenant_id),
    ]
    assert {i["user"] for i in acme.interactions()} == {pseudonyms.identifier("bob-7", acme.tenant_id)}
    assert (len(beta.interactions()), len(beta.feedback())) == beta_rows

    rewritten = get_snapshot(acme, snapshot.hash)
    assert rewritten.erased_at is not None and rewritten.counts["erased_rows"] == erasure["snapshot_rows"]
    assert hashed not in json.dumps(rewritten.report)

    registry = Registry(acme)
    states = {name: registry.get(v) for name, v in ids.items()}
    assert erasure["versions"] == {
        ids["adapter"]: "production",  # `retrain` (the default): serves until the next turn replaces it
        ids["judge"]: "production",
        ids["warm"]: "blocked",
        ids["composed"]: "blocked",
        ids["held"]: "blocked",  # waiting for approval is not serving: nothing to keep it for
    }
    assert (
        all(states[n].erased_at for n in ("adapter", "judge", "warm")) and states["other"].erased_at is None
    )
    assert [a.kind for a in pending_alerts(acme)] == ["erasure"]
    registry.move(ids["adapter"], "retired", actor="test", reason="test")
    with pytest.raises(Conflict, match="erased user"):
        registry.move(ids["adapter"], "production", actor="test", reason="an instant rollback")

    assert main(["audit", "verify"]) == 0
    with store.read() as conn:
        chain = json.dumps([list(r) for r in conn.execute(sa.select(audit_log))], default=str)
    assert JANE not in chain and hashed not in chain and erasure["request"] in chain
    store.close()


def test_forget_deletes_only_that_users_rows_on_each_store(db_url: str, tuneloop_home: Path) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(db_url, secret=settings.hash_key())
    acme, beta = (store.for_tenant(store.create_tenant(n, redaction="off")[0]) for n in ("acme", "beta"))
    for tenant in (acme, beta):
        capture(tenant, settings)

    erasure = forget_user(acme, tuneloop_home, JANE)
    again = forget_user(acme, tuneloop_home, JANE)
    nobody = forget_user(acme, tuneloop_home, "nobody")

    assert (erasure.interactions, erasure.feedback, erasure.disk_clean) == (3, 11, True)
    assert (again.interactions, again.feedback, nobody.interactions, nobody.feedback) == (0, 0, 0, 0)
    assert {i["id"] for i in acme.interactions()} == {"b0", "b1", "b2"}
    assert JANE not in {e["rater"] for e in acme.feedback()}
    assert {e["id"] for e in acme.feedback()} >= {"b0-up", "b1-edit", "b2-pick"}
    assert (len(beta.interactions()), len(beta.feedback())) == (6, 20)
    assert store.verify_audit()[0]
    store.close()


def test_forget_takes_the_retrievals_and_review_items_of_the_users_interactions(tuneloop_home: Path) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(f"sqlite:///{tuneloop_home / 'tuneloop.db'}", secret=settings.hash_key())
    acme = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    capture(acme, settings)
    ids = sorted(i["id"] for i in acme.interactions())
    jane, bob = [i for i in ids if i.startswith("j")], [i for i in ids if i.startswith("b")]
    for iid in (jane[0], bob[0]):
        log_retrieval(acme, [], ranker="embedding", interaction_id=iid)
    task = create_task(acme, TaskIn(name="check", kind="rubric"), actor="test")
    add_items(acme, task, [(iid, None, "sampled", 1.0) for iid in (jane[1], bob[1])], actor="test")
    item = next_item(acme, task, "rev-1")
    assert item is not None

    forget_user(acme, tuneloop_home, JANE)

    assert [r.interaction_id for r in acme.all(retrievals)] == [bob[0]]
    assert [r.interaction_id for r in acme.all(review_items)] == [bob[1]]
    assert {r.item_id for r in acme.all(review_assignments)} <= {r.id for r in acme.all(review_items)}
    store.close()


def test_forget_takes_only_the_users_items_out_of_a_starter_golden_set(
    tuneloop_home: Path, capsys: pytest.CaptureFixture
) -> None:
    settings = Settings(home=tuneloop_home)
    store = Store(settings.database_url, secret=settings.hash_key())
    capture(store.for_tenant(store.create_tenant("acme", redaction="off")[0]), settings)
    asked = [
        GoldenItem(id="rated-1", prompt=[{"role": "user", "content": JANE_TEXTS[0]}], must_refuse=False),
        GoldenItem(id="rated-2", prompt=[{"role": "user", "content": BOB_TEXTS[0]}], must_refuse=False),
        GoldenItem(id="team", prompt="How do I reset my PIN?", must_contain=["Settings"]),
    ]
    # As the gate writes a starter set: its header, `reviewed: false`, then the items.
    body = {"reviewed": False, **GoldenSet(items=asked).model_dump(mode="json", exclude_defaults=True)}
    golden = tuneloop_home / "policies" / "acme" / "golden.yaml"
    golden.parent.mkdir(parents=True)
    golden.write_text(STARTER_HEADER + yaml.safe_dump(body, sort_keys=False, allow_unicode=True))

    assert main(["users", "forget", "--tenant", "acme", JANE]) == 0

    assert "1 rewritten ['policies/acme/golden.yaml']" in capsys.readouterr().out
    kept = load_golden(golden)
    assert [item.id for item in kept.items] == ["rated-2", "team"] and kept.reviewed is False
    assert golden.read_text().startswith(STARTER_HEADER) and JANE_TEXTS[0] not in golden.read_text()
    store.close()


def test_forget_changes_only_its_own_tenants_files_and_never_the_model(tuneloop_home: Path) -> None:
    """Beta's users wrote what Jane of acme wrote (common questions are common): nothing of beta's changes,
    nor the model, nor a file nothing attributes, which is listed for the operator instead."""
    settings = Settings(home=tuneloop_home, backend="none")
    store = Store(settings.database_url, secret=settings.hash_key())
    acme, beta = (store.for_tenant(store.create_tenant(n, redaction="off")[0]) for n in ("acme", "beta"))
    for tenant in (acme, beta):
        capture(tenant, settings)
    exports = tuneloop_home / "exports"
    exports.mkdir()
    for name in ("acme", "beta"):
        assert main(["export", "--tenant", name, "--out", str(exports / f"{name}.jsonl")]) == 0
        assert main(["snapshot", "create", "--tenant", name]) == 0
    [beta_snapshot] = list_snapshots(beta)
    assert (
        main(["snapshot", "export", beta_snapshot.hash, "--tenant", "beta", "--out", str(exports / "b")]) == 0
    )
    quoted = yaml.safe_dump({"items": [{"id": "q", "prompt": JANE_TEXTS[0]}]})
    theirs = {
        f"reports/{beta.tenant_id}/v-1/report.json": json.dumps({"prompt": JANE_TEXTS[0]}),
        "policies/beta/golden.yaml": quoted,
        "models/smollm2/config.json": json.dumps({"note": JANE_TEXTS[0]}),
        "notes.txt": JANE_TEXTS[0],  # the operator's own file
        "policies/acme/light_policy.yaml": yaml.safe_dump({"prompt_variants": [JANE_TEXTS[0]]}),
    }
    for name, text in theirs.items():
        (tuneloop_home / name).parent.mkdir(parents=True, exist_ok=True)
        (tuneloop_home / name).write_text(text)
    before = {p: p.read_bytes() for p in tuneloop_home.rglob("*") if p.is_file() and "beta" in str(p)}
    before |= {p: (tuneloop_home / p).read_bytes() for p in map(Path, theirs)}

    erasure = forget_user(acme, tuneloop_home, JANE)

    assert erasure.files.rewritten == ["exports/acme.jsonl"]
    assert erasure.files.left == ["notes.txt", "policies/acme/light_policy.yaml"]
    assert erasure.files.removed == []
    changed = [str(p) for p, data in before.items() if (tuneloop_home / p).read_bytes() != data]
    assert changed == []
    assert JANE_TEXTS[0] in (exports / "beta.jsonl").read_text()
    store.close()


def test_forget_reads_past_an_alias_bomb_or_a_huge_number_in_a_file_under_home(tuneloop_home: Path) -> None:
    """A stray YAML or JSON file (a self-referencing alias, a billion laughs, a 5,000-digit integer) is read
    within the limits policy files are read under, or by bytes alone: the erasure finishes, where it spun
    forever or stopped with a traceback after withdrawing versions but before deleting the user's rows."""
    settings = Settings(home=tuneloop_home)
    store = Store(settings.database_url, secret=settings.hash_key())
    acme = store.for_tenant(store.create_tenant("acme", redaction="off")[0])
    capture(acme, settings)
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    strays = {
        "policies/acme/notes.yaml": "a: &a [*a]\n",
        "policies/acme/laughs.yaml": laughs,
        "misc/numbers.json": '{"x": ' + "9" * 5_000 + "}",
        "policies/acme/quote.yaml": yaml.safe_dump({"note": JANE_TEXTS[0]}),
    }
    for name, text in strays.items():
        (tuneloop_home / name).parent.mkdir(parents=True, exist_ok=True)
        (tuneloop_home / name).write_text(text)

    erasure = forget_user(acme, tuneloop_home, JANE)

    assert erasure.interactions > 0 and erasure.files.left == ["policies/acme/quote.yaml"]
    assert all((tuneloop_home / name).exists() for name in strays)
    store.close()
