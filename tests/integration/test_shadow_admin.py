"""Shadow figures on the admin listener (contract 10.1): GET /routes/NAME/shadow
for a route with `shadow` (zero counts before any copy), 404 for a route
without, 405 for other methods, the ficus_shadow_* families in /metrics
(valid for promtool), and a reload that moves the shadow from one route to
another."""

import http.client
import json
import shutil
import signal
import subprocess

from harness import config, metric_value, parse_metrics, route, scaled, wait_until

RESULTS = ("match", "mismatch", "shadow_error", "dropped", "skipped")


def shadow_block(group):
    return {"target_group": group, "percent": 10,
            "compare": {"ignore": ["/meta/generated_at"], "noise": {"percent": 5}}}


def gateway_config(a, b, shadowed):
    """Routes orders and users on group old; the one named shadowed copies to new."""
    routes = [route(name, f"/{name}", "old", **({"shadow": shadow_block("new")}
                                                if name == shadowed else {}))
              for name in ("orders", "users")]
    return config({"old": a.addr, "new": b.addr}, routes)


def admin(f, method, path):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=scaled(5))
    try:
        c.request(method, path, body=b"" if method != "GET" else None)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        c.close()


def shadow_status(f, name):
    return admin(f, "GET", f"/routes/{name}/shadow")[0]


def test_shadow_endpoint_answers_zero_counts(ficus, mock):
    a, b = mock("old"), mock("new")
    f = ficus(gateway_config(a, b, "orders"))
    st, h, body = admin(f, "GET", "/routes/orders/shadow")
    assert st == 200, body
    assert h["content-type"].startswith("application/json")
    j = json.loads(body)
    assert j["route"] == "orders"
    assert j["requests"] == {r: 0 for r in RESULTS}
    assert j["compared"] == 0 and j["noise_compared"] == 0
    assert j["match_rate"] is None
    assert j["fields"] == [] and j["recent_mismatches"] == []
    for path in ("/routes/users/shadow", "/routes/nope/shadow", "/routes/orders/shadow/",
                 "/routes/orders/shadowx", "/routes/" + "x" * 300 + "/shadow"):
        st, _, body = admin(f, "GET", path)
        assert st == 404, (path, body)
        assert json.loads(body)["error"] == "not_found"
    st, h, body = admin(f, "POST", "/routes/orders/shadow")
    assert st == 405 and h.get("allow") == "GET", (st, h)
    assert json.loads(body)["error"] == "method_not_allowed"
    assert "GET /routes/NAME/shadow" in json.loads(admin(f, "GET", "/")[2])["endpoints"]


def test_shadow_metrics(ficus, mock):
    a, b = mock("old"), mock("new")
    f = ficus(gateway_config(a, b, "orders"))
    text = f.metrics_text()
    s = parse_metrics(text)
    for r in RESULTS:
        assert metric_value(s, "ficus_shadow_requests_total", route="orders", result=r) == 0, r
    assert metric_value(s, "ficus_shadow_requests_total", route="users") is None
    assert "# TYPE ficus_shadow_field_mismatches_total counter" in text
    assert metric_value(s, "ficus_shadow_field_mismatches_total") is None  # nothing compared yet
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=scaled(20))
        assert p.returncode == 0, f"promtool said ({p.returncode}):\n{p.stdout}{p.stderr}"


def test_reload_moves_the_shadow(ficus, mock):
    a, b = mock("old"), mock("new")
    f = ficus(gateway_config(a, b, "orders"))
    assert shadow_status(f, "orders") == 200 and shadow_status(f, "users") == 404
    f.write_config(gateway_config(a, b, "users"))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: shadow_status(f, "users") == 200, scaled(5)), f.stderr
    assert shadow_status(f, "orders") == 404
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_shadow_requests_total", route="users", result="match") == 0
    assert metric_value(s, "ficus_shadow_requests_total", route="orders") is None
    f.write_config(gateway_config(a, b, "orders"))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: shadow_status(f, "orders") == 200, scaled(5)), f.stderr
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_shadow_requests_total", route="orders", result="match") == 0
    assert metric_value(s, "ficus_shadow_requests_total", route="users") is None
