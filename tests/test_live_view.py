"""The live page's data, composed from a light host's dumps and metrics (no server)."""

from __future__ import annotations

from prometheus_client import Histogram

from lifesigns.host import Host
from lifesigns.live import LiveView, page_html, quantile


def test_data_takes_each_fast_dump_and_survives_a_broken_one() -> None:
    host = Host()
    host.add_dump("stalls", lambda: {"heartbeat_age_s": 0.01, "current": None, "recent": []})

    def broken() -> dict[str, object]:
        raise RuntimeError("pool dump broke")

    host.add_dump("pool", broken)
    data = LiveView(host).data()
    assert data["stalls"]["heartbeat_age_s"] == 0.01
    assert data["pool"] == {"error": "RuntimeError: pool dump broke"}
    assert data["memory"] is None  # not attached: shown as absent, not as an error
    assert data["service"] == "service"


def test_request_figures_come_from_the_registry() -> None:
    host = Host()
    histogram = Histogram(
        "lifesigns_http_request_duration_seconds",
        "test",
        ["route", "method"],
        registry=host.registry,
        buckets=(0.1, 0.5, 1.0),
    )
    for _ in range(90):
        histogram.labels("/a", "GET").observe(0.05)
    for _ in range(10):
        histogram.labels("/b", "GET").observe(0.7)
    figures = LiveView(host).data()["metrics"]
    assert figures["request_p50_s"] is not None and figures["request_p50_s"] <= 0.1
    assert 0.5 < figures["request_p99_s"] <= 1.0


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == 0.1
    three_quarters = quantile(buckets, 0.75)
    assert three_quarters is not None and abs(three_quarters - 0.15) < 1e-9
    assert quantile({}, 0.5) is None


def test_the_page_is_self_contained() -> None:
    html = page_html().decode()
    assert "<script>" in html and 'id="stall-current"' in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
