"""The admin listener (contract section 6): liveness, readiness and the
Prometheus exposition (section 6.1) - valid for promtool, with counters,
gauges and histograms that match the traffic sent."""

import shutil
import socket
import subprocess

import pytest

from harness import (
    config,
    http_request,
    metric_value,
    parse_metrics,
    repo_root,
    route,
    scaled,
    wait_until,
)


def split_gateway(ficus, echo_backend):
    v1, v2 = echo_backend("v1"), echo_backend("v2")
    return ficus(config({"search-v1": v1.addr, "search-v2": v2.addr},
                        [route("search", "/search", [("search-v1", 90), ("search-v2", 10)]),
                         route("default", "/", "search-v1")],
                        server={"workers": 2})), v1, v2


def test_healthz_and_readyz(ficus, echo_backend):
    f, _, _ = split_gateway(ficus, echo_backend)
    status, _, body = f.admin_get("/healthz")
    assert (status, body.strip()) == (200, "ok")
    status, _, body = f.admin_get("/readyz")
    assert status == 200, body


def test_unknown_admin_path_is_404(ficus, echo_backend):
    f, _, _ = split_gateway(ficus, echo_backend)
    status, _, body = f.admin_get("/no-such-endpoint")
    assert status == 404, body


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_metrics_pass_promtool(ficus, echo_backend):
    f, _, _ = split_gateway(ficus, echo_backend)
    for i in range(5):
        http_request(f.port, "GET", f"/search/{i}")
    http_request(f.port, "GET", "/x")
    status, headers, text = f.admin_get("/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain"), headers
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=scaled(20))
    assert p.returncode == 0, f"promtool said ({p.returncode}):\n{p.stdout}{p.stderr}"
    parse_metrics(text)  # every sample line readable


def samples_after(f, pred):
    """Metrics once pred(samples) holds (counters are bumped as a request
    ends, which may be just after the client read its response)."""
    got = wait_until(lambda: (lambda s: s if pred(s) else None)(parse_metrics(f.metrics_text())),
                     scaled(3), interval=0.05)
    return got or parse_metrics(f.metrics_text())


def test_request_and_upstream_counters_match_traffic(ficus, echo_backend):
    f, v1, v2 = split_gateway(ficus, echo_backend)
    n = 20
    for i in range(n):
        assert http_request(f.port, "GET", f"/search/{i}").status == 200
    for i in range(3):
        assert http_request(f.port, "GET", f"/home/{i}").status == 200
    s = samples_after(f, lambda s: metric_value(s, "ficus_requests_total", route="search",
                                                code="200") == n
                      and metric_value(s, "ficus_requests_total", route="default", code="200") == 3)
    assert metric_value(s, "ficus_requests_total", route="search", code="200") == n
    assert metric_value(s, "ficus_requests_total", route="default", code="200") == 3
    up1 = metric_value(s, "ficus_upstream_requests_total", target_group="search-v1",
                       target=v1.addr, code="200")
    up2 = metric_value(s, "ficus_upstream_requests_total", target_group="search-v2",
                       target=v2.addr, code="200")
    assert (up1 or 0) + (up2 or 0) == n + 3, (up1, up2)
    assert up1 == v1.count() and up2 == v2.count(), (up1, up2, v1.count(), v2.count())


def test_no_route_counted(ficus, echo_backend):
    echo = echo_backend("e")
    f = ficus(config({"g": echo.addr}, [route("only", {"path": "/only"}, "g")]))
    for _ in range(4):
        assert http_request(f.port, "GET", "/missing").status == 404
    s = samples_after(f, lambda s: metric_value(s, "ficus_requests_total", code="404") == 4)
    assert metric_value(s, "ficus_requests_total", code="404") == 4


def test_backend_weight_gauges(ficus, echo_backend):
    f, _, _ = split_gateway(ficus, echo_backend)
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_backend_weight", route="search", target_group="search-v1") == 90
    assert metric_value(s, "ficus_backend_weight", route="search", target_group="search-v2") == 10
    assert metric_value(s, "ficus_backend_weight", route="default", target_group="search-v1") == 1


def test_build_info(ficus, echo_backend):
    f, _, _ = split_gateway(ficus, echo_backend)
    version = (repo_root() / "VERSION").read_text().strip()
    s = parse_metrics(f.metrics_text())
    infos = [(labels, v) for name, labels, v in s if name == "ficus_build_info"]
    assert len(infos) == 1, infos
    assert infos[0][1] == 1
    assert infos[0][0].get("version", "").startswith(version), infos


def test_downstream_connections_gauge(ficus, echo_backend):
    f, _, _ = split_gateway(ficus, echo_backend)

    def gauge():
        return metric_value(parse_metrics(f.metrics_text()), "ficus_downstream_connections")

    assert gauge() is not None, "ficus_downstream_connections missing"
    # The harness's own start-up probes close asynchronously: let them go.
    wait_until(lambda: gauge() == 0, scaled(3))
    base = gauge()
    socks = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", f.port), timeout=scaled(5))
            s.sendall(b"GET /search/held HTTP/1.1\r\nHost: t\r\n\r\n")
            assert s.recv(12).startswith(b"HTTP/1.1 200")
            socks.append(s)
        held = wait_until(lambda: (gauge() or 0) >= base + 5, scaled(3))
        assert held, f"5 open connections, gauge {gauge()} (was {base})"
    finally:
        for s in socks:
            s.close()
    dropped = wait_until(lambda: (gauge() or 0) <= base, scaled(3))
    assert dropped, f"connections closed, gauge still {gauge()} (was {base})"


def test_duration_histograms(ficus, echo_backend):
    f, v1, v2 = split_gateway(ficus, echo_backend)
    n = 12
    for i in range(n):
        assert http_request(f.port, "GET", f"/search/h{i}").status == 200
    s = samples_after(f, lambda s: metric_value(s, "ficus_request_duration_seconds_count",
                                                route="search") == n)
    assert metric_value(s, "ficus_request_duration_seconds_count", route="search") == n
    assert metric_value(s, "ficus_request_duration_seconds_bucket", route="search", le="+Inf") == n
    assert (metric_value(s, "ficus_request_duration_seconds_sum", route="search") or 0) > 0
    buckets = sorted(((float(lb["le"]), v) for name, lb, v in s
                      if name == "ficus_request_duration_seconds_bucket"
                      and lb.get("route") == "search"), key=lambda t: t[0])
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"buckets not cumulative: {buckets}"
    up = (metric_value(s, "ficus_upstream_duration_seconds_count", target_group="search-v1") or 0) \
        + (metric_value(s, "ficus_upstream_duration_seconds_count", target_group="search-v2") or 0)
    assert up == n
    up_inf = (metric_value(s, "ficus_upstream_duration_seconds_bucket", target_group="search-v1",
                           le="+Inf") or 0)
    assert up_inf == v1.count()


def test_every_contract_metric_family_is_exposed(ficus, echo_backend):
    f, _, _ = split_gateway(ficus, echo_backend)
    text = f.metrics_text()
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    wanted = [
        "ficus_requests_total", "ficus_request_duration_seconds", "ficus_upstream_requests_total",
        "ficus_upstream_duration_seconds", "ficus_retries_total", "ficus_fallbacks_total",
        "ficus_circuit_breaker_rejections_total", "ficus_outlier_ejections_total",
        "ficus_target_healthy", "ficus_backend_weight", "ficus_rate_limited_total",
        "ficus_auth_failures_total", "ficus_throttled_total", "ficus_downstream_connections",
        "ficus_downstream_connections_rejected_total", "ficus_config_reloads_total",
        "ficus_config_last_reload_success_timestamp_seconds", "ficus_build_info",
        "ficus_set_reload_failures_total", "ficus_redis_errors_total",
        "ficus_trace_spans_dropped_total", "ficus_trace_export_failures_total",
        "ficus_session_exchange_failures_total",
    ]
    # promtool-style: a counter family may be declared without its _total suffix.
    missing = [m for m in wanted if m not in families and m.removesuffix("_total") not in families]
    assert not missing, f"# TYPE missing for {missing}"


def admin_call(f, method, path, body=None):
    import http.client
    import json

    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=scaled(5))
    try:
        c.request(method, path, body=None if body is None else json.dumps(body),
                  headers={"Content-Type": "application/json"} if body is not None else {})
        r = c.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data
    finally:
        c.close()


def test_route_weights_read_and_override(ficus, mock):
    v1, v2 = mock("v1"), mock("v2")
    f = ficus(config({"search-v1": v1.addr, "search-v2": v2.addr},
                     [route("search", "/", [("search-v1", 90), ("search-v2", 10)])],
                     server={"workers": 1}))
    status, body = admin_call(f, "GET", "/routes/search/weights")
    assert (status, body) == (200, {"route": "search",
                                    "weights": {"search-v1": 90, "search-v2": 10}}), body
    status, body = admin_call(f, "PUT", "/routes/search/weights", {"search-v1": 50, "search-v2": 50})
    assert (status, body) == (200, {"route": "search",
                                    "weights": {"search-v1": 50, "search-v2": 50}}), body
    names = [http_request(f.port, "GET", f"/w/{i}").header("X-Mock-Name") for i in range(20)]
    assert names.count("v1") == 10 and names.count("v2") == 10, names
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_backend_weight", route="search", target_group="search-v2") == 50


@pytest.mark.parametrize("path,body,status", [
    ("/routes/nope/weights", {"search-v1": 1}, 404),
    ("/routes/search/weights", {"unknown-group": 1}, 400),
    ("/routes/search/weights", {"search-v1": -1, "search-v2": 5}, 400),
    ("/routes/search/weights", {"search-v1": 0, "search-v2": 0}, 400),
])
def test_route_weights_rejects_bad_overrides(ficus, echo_backend, path, body, status):
    f, _, _ = split_gateway(ficus, echo_backend)
    got, answer = admin_call(f, "PUT", path, body)
    assert got == status, answer
    _, now = admin_call(f, "GET", "/routes/search/weights")
    assert now == {"route": "search", "weights": {"search-v1": 90, "search-v2": 10}}, now


def test_config_and_target_groups_are_json(ficus, echo_backend):
    f, v1, _ = split_gateway(ficus, echo_backend)
    status, cfg = admin_call(f, "GET", "/config")
    assert status == 200 and isinstance(cfg, dict), cfg
    assert "search" in str(cfg) and "search-v1" in str(cfg)
    status, groups = admin_call(f, "GET", "/target_groups")
    assert status == 200 and isinstance(groups, (dict, list)), groups
    assert "search-v1" in str(groups) and v1.addr in str(groups), groups
