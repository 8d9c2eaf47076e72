"""/metrics: base units and `_total` counters, KPI gauges computed once per TTL, serving metrics from the
embedded model's batching loop. Real SQLite, real uvicorn, the tiny random-weight model."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.live import live_server
from tests.monitor.seed import log
from tuneloop.clock import now_utc
from tuneloop.config import Settings, tenant_policy_file
from tuneloop.store.repository import Store


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _scrape(url: str, key: str) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return _samples(response.text)


def test_kpi_gauges_are_in_seconds_and_ratios_and_computed_once_per_ttl(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, backend="none", kpi_metrics_seconds=3600)
    store = Store(settings.database_url, secret=settings.hash_key())
    tenant, _ = store.create_tenant("acme", redaction="off")
    admin = store.add_key(None)
    acme = store.for_tenant(tenant)
    log(acme, prompt="q", response="a", created_at=now_utc() - timedelta(minutes=5), latency_ms=250.0)
    labels = (("tenant", "acme"), ("version", "base"))
    with live_server(settings) as url:
        first = _scrape(url, admin)
        log(acme, prompt="q", response="a", created_at=now_utc() - timedelta(minutes=1), latency_ms=750.0)
        second = _scrape(url, admin)
    assert first[("tuneloop_kpi_latency_p50_seconds", labels)] == 0.25
    assert first[("tuneloop_kpi_interactions", labels)] == 1
    assert first[("tuneloop_kpi_error_ratio", labels)] == 0
    assert not any(name.endswith("_ms") or name.endswith("_rate") for name, _ in first)
    assert second[("tuneloop_kpi_interactions", labels)] == 1  # within the TTL: not recomputed per scrape
    assert any(name == "tuneloop_http_requests_total" for name, _ in second)


def test_a_scrape_past_the_ttl_gets_the_last_kpis_at_once_and_fresh_ones_soon_after(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, backend="none", kpi_metrics_seconds=0.2)
    store = Store(settings.database_url, secret=settings.hash_key())
    tenant, _ = store.create_tenant("acme", redaction="off")
    admin = store.add_key(None)
    acme = store.for_tenant(tenant)
    log(acme, prompt="q", response="a", created_at=now_utc() - timedelta(minutes=5))
    volume = ("tuneloop_kpi_interactions", (("tenant", "acme"), ("version", "base")))
    with live_server(settings) as url:
        assert _scrape(url, admin)[volume] == 1
        log(acme, prompt="q", response="a", created_at=now_utc() - timedelta(minutes=1))
        time.sleep(0.3)
        assert _scrape(url, admin)[volume] == 1  # stale, served without waiting; a refresh starts
        deadline = time.monotonic() + 30
        while _scrape(url, admin)[volume] != 2:
            assert time.monotonic() < deadline, "the background refresh never landed"
            time.sleep(0.1)


def test_kpi_gauges_can_be_left_to_another_replica(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, backend="none", kpi_metrics_seconds=0)
    store = Store(settings.database_url, secret=settings.hash_key())
    tenant, _ = store.create_tenant("acme", redaction="off")
    log(store.for_tenant(tenant), prompt="q", response="a", created_at=now_utc() - timedelta(minutes=5))
    with live_server(settings) as url:
        scraped = _scrape(url, store.add_key(None))
    assert not any(name.startswith("tuneloop_kpi_") for name, _ in scraped)


def test_generation_metrics_time_each_answer_and_count_its_tokens(tmp_path: Path, tiny_model: Path) -> None:
    settings = Settings(home=tmp_path, model=str(tiny_model))
    store = Store(settings.database_url, secret=settings.hash_key())
    _, key = store.create_tenant("acme", redaction="off")
    admin = store.add_key(None)
    with live_server(settings) as url:
        before = _scrape(url, admin)
        for _ in range(2):
            answer = httpx.post(
                f"{url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": "tuneloop",
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 6,
                    "temperature": 0,
                },
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
        after = _scrape(url, admin)
    tokens = 2 * answer.json()["usage"]["completion_tokens"]
    assert before[("tuneloop_generation_queue_depth", ())] == 0
    assert after[("tuneloop_generation_queue_depth", ())] == 0
    assert after[("tuneloop_generation_time_to_first_token_seconds_count", ())] == 2
    assert 0 < after[("tuneloop_generation_time_to_first_token_seconds_sum", ())] < 60
    assert after[("tuneloop_generation_completion_tokens_total", ())] == tokens
    assert after[("tuneloop_generation_tokens_per_second_count", ())] == 2


def test_one_tenants_broken_reward_policy_leaves_the_other_tenants_kpi_gauges(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, backend="none", kpi_metrics_seconds=3600)
    store = Store(settings.database_url, secret=settings.hash_key())
    admin = store.add_key(None)
    for name in ("acme", "broken"):
        tenant, _ = store.create_tenant(name, redaction="off")
        log(store.for_tenant(tenant), prompt="q", response="a", created_at=now_utc() - timedelta(minutes=5))
    policy = tenant_policy_file(tmp_path, "broken", "reward_policy.yaml")
    policy.parent.mkdir(parents=True)
    policy.write_text("weights: [\n")  # not valid YAML
    with live_server(settings) as url:
        samples = _scrape(url, admin)
    assert samples[("tuneloop_kpi_interactions", (("tenant", "acme"), ("version", "base")))] == 1
    assert not any(dict(labels).get("tenant") == "broken" for _, labels in samples)


def test_every_dashboard_page_is_counted_under_its_whole_route_template(tmp_path: Path) -> None:
    """A router nested in another was named by its own path alone: `/t/{name}/review` among `/dashboard/…`."""
    settings = Settings(home=tmp_path, backend="none")
    store = Store(settings.database_url, secret=settings.hash_key())
    admin = store.add_key(None)
    with live_server(settings) as url:
        for page in ("review", "kpis"):
            httpx.get(f"{url}/dashboard/t/acme/{page}")
        routes = {dict(labels).get("route") for name, labels in _scrape(url, admin)}
    assert {"/dashboard/t/{name}/review", "/dashboard/t/{name}/kpis"} <= routes
    assert "/t/{name}/review" not in routes
