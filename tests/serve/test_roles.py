"""Every route checks the key's role: a table of who may call what, over all of the app's routes."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tuneloop.store.repository import Store

ROLES = ("ingest", "reviewer", "operator", "admin")
CAPTURE = {"ingest", "operator", "admin"}
REVIEW = {"reviewer", "operator", "admin"}
OPERATE = {"operator", "admin"}
ADMIN = {"admin"}
# (method, path) → the roles it admits. A route missing here fails `test_every_route_is_in_the_role_table`.
ROUTES: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/interactions"): CAPTURE,
    ("POST", "/v1/feedback"): CAPTURE,
    ("POST", "/v1/traces"): CAPTURE,
    ("GET", "/v1/interactions/{interaction_id}"): OPERATE,
    ("GET", "/v1/feedback"): OPERATE,
    ("POST", "/v1/chat/completions"): OPERATE,
    ("POST", "/v1/completions"): OPERATE,
    ("GET", "/v1/models"): OPERATE,
    ("GET", "/v1/models/{model_id:path}"): OPERATE,
    ("POST", "/v1/embeddings"): OPERATE,
    ("POST", "/v1/documents"): OPERATE,
    ("GET", "/v1/documents"): OPERATE,
    ("PUT", "/v1/documents/{document_id}"): OPERATE,
    ("DELETE", "/v1/documents/{document_id}"): OPERATE,
    ("POST", "/v1/retrieve"): OPERATE,
    ("GET", "/v1/retrievals"): OPERATE,
    ("GET", "/v1/review/tasks"): REVIEW,
    ("POST", "/v1/review/tasks"): OPERATE,
    ("POST", "/v1/review/tasks/{task_id}/items"): OPERATE,
    ("POST", "/v1/review/tasks/{task_id}/next"): REVIEW,
    ("POST", "/v1/review/tasks/{task_id}/items/{item_id}/label"): REVIEW,
    ("POST", "/v1/review/tasks/{task_id}/items/{item_id}/skip"): REVIEW,
    ("GET", "/v1/review/tasks/{task_id}/agreement"): OPERATE,
    ("GET", "/v1/governance/versions"): OPERATE,
    ("POST", "/v1/governance/versions/{version_id}/{action}"): OPERATE,
    ("POST", "/v1/governance/reward-models/{version_id}/{action}"): OPERATE,
    ("POST", "/v1/governance/rollback"): OPERATE,
    ("GET", "/v1/governance/loop"): OPERATE,
    ("POST", "/v1/governance/loop/{action}"): OPERATE,
    ("POST", "/v1/users/forget"): ADMIN,
    ("GET", "/metrics"): ADMIN,
}
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json")}
OWN_LOGIN = "/dashboard"  # the dashboard checks its sessions' roles itself (tests/dashboard)


@pytest.fixture(scope="module")
def app_keys(gateway: dict) -> tuple[set[tuple[str, str]], str, dict[str, str]]:
    """The running app's routes, its url, and a key of each role for the tenant `acme`."""
    store: Store = gateway["store"]
    _, operator = store.create_tenant("acme")
    keys = {role: store.add_key("acme", role=role) for role in ("ingest", "reviewer")}
    keys |= {"operator": operator, "admin": store.add_key(None)}
    routes = {
        (method, route.path)
        for route in gateway["app"].routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD" and not route.path.startswith(OWN_LOGIN)
    }
    return routes, gateway["url"], keys


def _path(path: str) -> str:
    """A route's path with valid-looking parameters, so that only the role decides the answer."""
    path = path.replace("{version_id}/{action}", "v-1/promote").replace("{action}", "pause")
    return path.replace("{", "").replace("}", "")


def test_every_route_is_in_the_role_table(app_keys: tuple) -> None:
    routes, _, _ = app_keys
    missing = routes - set(ROUTES) - PUBLIC
    assert not missing, f"add these routes to ROUTES with the roles they admit: {sorted(missing)}"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_exactly_the_routes_it_is_allowed(app_keys: tuple, role: str) -> None:
    routes, url, keys = app_keys
    headers = {"Authorization": f"Bearer {keys[role]}", "X-Tuneloop-Tenant": "acme"}
    wrong = {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        for (method, path), allowed in ROUTES.items():
            if (method, path) not in routes:
                continue  # not served by this app yet: the table may run ahead of a route's merge
            response = http.request(method, _path(path))
            refused = response.status_code == 403
            if refused == (role in allowed) or response.status_code == 401:
                wrong[f"{method} {path}"] = (response.status_code, response.text[:200])
    assert not wrong, f"{role} key: {wrong}"


def test_ingest_only_key_cannot_read_anything(app_keys: tuple) -> None:
    _, url, keys = app_keys
    ingest = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['ingest']}"}, timeout=30)
    operator = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['operator']}"}, timeout=30)
    with ingest, operator:
        body = {"messages": [{"role": "user", "content": "hi"}], "response": "hello", "id": "int-ro"}
        assert ingest.post("/v1/interactions", json=body).status_code == 201
        event = {"id": "fb-ro", "interaction_id": "int-ro", "kind": "thumbs", "value": 1}
        assert ingest.post("/v1/feedback", json=event).status_code == 201
        for path in ("/v1/interactions/int-ro", "/v1/feedback", "/v1/feedback?interaction_id=int-ro"):
            refused = ingest.get(path)
            assert refused.status_code == 403, path
            assert set(refused.json()) == {"error"} and "hello" not in refused.text
            assert refused.json()["error"]["type"] == "permission_error"
            assert "--role operator" in refused.json()["error"]["message"]
        assert operator.get("/v1/interactions/int-ro").json()["feedback"][0]["kind"] == "thumbs"
        chat = {"model": "tuneloop", "messages": [{"role": "user", "content": "hi"}]}
        assert ingest.post("/v1/chat/completions", json=chat).status_code == 403


def test_system_prompts_sent_with_an_ingest_key_never_unredact_a_name(app_keys: tuple) -> None:
    """An ingest key may ship in a browser app: its senders must not be able to make a name public."""
    _, url, keys = app_keys

    def send(user: str, system: str, text: str) -> str:
        body = {
            "user": user,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        }
        headers = {"Authorization": f"Bearer {keys['ingest']}"}
        sent = httpx.post(
            f"{url}/v1/interactions", json={**body, "response": "ok"}, headers=headers, timeout=30
        )
        assert sent.status_code == 201, sent.text
        return sent.json()["id"]

    for n in range(12):  # more distinct users than TUNELOOP_PUBLIC_TERM_USERS
        send(f"sybil-{n}", "Your name is Margaret Thornbury, support agent.", "hi")
    victim = send("victim", "Be brief.", "Our customer Margaret Thornbury wants a refund.")

    operator = {"Authorization": f"Bearer {keys['operator']}"}
    stored = httpx.get(f"{url}/v1/interactions/{victim}", headers=operator, timeout=30).json()
    assert "Thornbury" not in str(stored) and "<PERSON>" in stored["messages"][1]["content"]


def test_ingest_and_reviewer_keys_cannot_log_in_to_the_dashboard_by_default(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.create_tenant("acme")
    for role in ("ingest", "reviewer"):
        with pytest.raises(Exception, match="cannot log in"):
            store.create_session(store.add_key("acme", role=role), hours=1)
    _, principal = store.create_session(
        store.add_key("acme", role="reviewer"), 1, roles=frozenset({"reviewer"})
    )
    assert principal.role == "reviewer" and not principal.is_admin
    store.close()


def test_keys_made_before_roles_become_operators_and_admins(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from tuneloop.store.engine import MIGRATIONS, create_engine, migrate
    from tuneloop.store.repository import hash_key

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")
        conn.exec_driver_sql(
            "INSERT INTO tenants (id, name, redaction, created_at) "
            "VALUES ('t', 'acme', 'redact', '2026-01-01')"
        )
        for key, tenant, admin in (("tl-tenant", "'t'", 0), ("tl-admin", "NULL", 1)):
            conn.exec_driver_sql(
                "INSERT INTO api_keys (key_hash, tenant_id, is_admin, prefix, created_at) "
                f"VALUES ('{hash_key(key)}', {tenant}, {admin}, '{key}', '2026-01-01')"
            )
        conn.commit()
    migrate(engine)
    engine.dispose()

    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    tenant_key, admin_key = store.authenticate("tl-tenant"), store.authenticate("tl-admin")
    store.close()
    assert (tenant_key.role, tenant_key.tenant.name) == ("operator", "acme")
    assert (admin_key.role, admin_key.tenant, admin_key.is_admin) == ("admin", None, True)


def test_an_admin_key_naming_two_tenants_at_once_is_a_400(app_keys: tuple) -> None:
    _, url, keys = app_keys
    headers = [("Authorization", f"Bearer {keys['admin']}"), ("X-Tuneloop-Tenant", "acme")]
    response = httpx.get(f"{url}/v1/feedback", headers=[*headers, ("X-Tuneloop-Tenant", "other")])
    assert response.status_code == 400 and "one X-Tuneloop-Tenant" in response.text
    assert httpx.get(f"{url}/v1/feedback", headers=headers).status_code == 200


def test_a_tenant_key_naming_another_tenant_is_refused_not_served_as_its_own(app_keys: tuple) -> None:
    _, url, keys = app_keys
    auth = {"Authorization": f"Bearer {keys['operator']}"}
    other = httpx.get(f"{url}/v1/feedback", headers={**auth, "X-Tuneloop-Tenant": "beta"})
    own = httpx.get(f"{url}/v1/feedback", headers={**auth, "X-Tuneloop-Tenant": "acme"})
    assert other.status_code == 403 and "another" in other.json()["error"]["message"], other.text
    assert own.status_code == 200


def test_a_key_after_a_tab_and_a_tenant_name_with_a_space_after_it_are_read(app_keys: tuple) -> None:
    _, url, keys = app_keys
    host, port = url.removeprefix("http://").split(":")
    head = f"Authorization: Bearer\t{keys['admin']}\r\nX-Tuneloop-Tenant: acme \r\n"  # as curl sends them
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(f"GET /v1/feedback HTTP/1.1\r\nHost: {host}\r\n{head}Connection: close\r\n\r\n".encode())
        status = conn.makefile("rb").readline()
    assert status.split()[1] == b"200", status


def test_two_authorization_headers_are_a_400_whichever_key_comes_first(app_keys: tuple) -> None:
    _, url, keys = app_keys
    good, bad = f"Bearer {keys['operator']}", "Bearer tl-not-a-key"
    for pair in ([good, bad], [bad, good], [good, good]):
        response = httpx.get(f"{url}/v1/feedback", headers=[("Authorization", value) for value in pair])
        assert response.status_code == 400 and "one Authorization header" in response.text
    assert httpx.get(f"{url}/v1/feedback", headers={"Authorization": good}).status_code == 200
