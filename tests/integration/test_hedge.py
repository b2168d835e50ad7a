"""Hedging (contract 10.3): an idempotent request whose try has no response
head after `after` gets a second try, to another target or to the fallback
group; the first response head wins and the other try is cancelled (its
connection closed, never pooled half-read); hedges are capped at max_percent
of the route's requests, need deadline left, and are counted in
ficus_hedges_total{route, result}."""

import pytest

from harness import (
    OtlpReceiver,
    config,
    http_request,
    metric_value,
    parse_metrics,
    route,
    run_cli,
    scaled,
    to_yaml,
    wait_until,
)


def hedges(f, result, name="api"):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_hedges_total", route=name,
                        result=result) or 0


def hedged_route(group, after="100ms", max_percent=100, **extra):
    return route("api", "/", group, timeout="5s",
                 retries={"attempts": 0, "retry_on": ["5xx"],
                          "hedge": {"after": after, "max_percent": max_percent}}, **extra)


def test_a_hedge_wins_against_a_slow_target(ficus, echo_backend):
    slow, fast = echo_backend("slow"), echo_backend("fast")
    slow.delay = 1.0
    f = ficus(config({"g": [slow.addr, fast.addr]}, [hedged_route("g")],
                     server={"workers": 1}))
    for i in range(4):
        r = http_request(f.port, "GET", f"/item/{i}")
        # Whichever target the first try went to, the fast one answers.
        assert r.status == 200 and r.header("X-Echo-Name") == "fast", i
        assert r.json()["path"] == f"/item/{i}"
    won = hedges(f, "won")
    assert won >= 1 and won == slow.count()
    assert hedges(f, "lost") == 0
    log = f.wait_access_log(4)
    assert sum(1 for e in log if e["attempts"] == 2) == won
    # The cancelled tries' connections were closed, not pooled half-read:
    # with the slow target quick again, every answer is its own request's.
    slow.delay = 0
    for i in range(8):
        r = http_request(f.port, "GET", f"/after/{i}")
        assert r.status == 200 and r.json()["path"] == f"/after/{i}"


def test_a_hedge_that_loses_is_cancelled(ficus, echo_backend):
    only = echo_backend("only")
    f = ficus(config({"g": only.addr}, [hedged_route("g", after="50ms")],
                     server={"workers": 1}))
    # Both tries go to the one target; the first answers first.
    r = http_request(f.port, "GET", "/x", headers={"X-Echo-Delay": "0.3"})
    assert r.status == 200
    assert wait_until(lambda: only.count() == 2, scaled(5))
    assert hedges(f, "won") + hedges(f, "lost") == 1
    r = http_request(f.port, "GET", "/y")
    assert r.status == 200 and r.json()["path"] == "/y"


def test_post_is_never_hedged(ficus, echo_backend):
    only = echo_backend("only")
    only.delay = 0.3
    f = ficus(config({"g": only.addr}, [hedged_route("g", after="50ms")],
                     server={"workers": 1}))
    r = http_request(f.port, "POST", "/orders", body=b"{}")
    assert r.status == 200
    r = http_request(f.port, "GET", "/orders/1")
    assert r.status == 200
    assert wait_until(lambda: only.count() == 3, scaled(5))
    assert [q["method"] for q in only.requests].count("POST") == 1
    assert hedges(f, "won") + hedges(f, "lost") == 1


def test_hedges_are_capped_and_counted(ficus, echo_backend):
    only = echo_backend("only")
    only.delay = 0.2
    f = ficus(config({"g": only.addr}, [hedged_route("g", after="20ms", max_percent=10)],
                     server={"workers": 1}))
    for i in range(6):
        assert http_request(f.port, "GET", f"/x/{i}").status == 200
    # The first slow request may hedge; then 10% of the requests: none
    # more within six.
    assert hedges(f, "won") + hedges(f, "lost") == 1
    assert hedges(f, "capped") == 5
    assert wait_until(lambda: only.count() == 7, scaled(5))


def test_a_slow_canary_is_raced_against_its_fallback(ficus, echo_backend):
    old, canary = echo_backend("old"), echo_backend("canary")
    canary.delay = 1.0
    f = ficus(config({"old": old.addr, "canary": canary.addr},
                     [route("api", "/", [{"target_group": "canary", "weight": 1,
                                          "fallback": "old", "path": "/v2/orders"},
                                         {"target_group": "old", "weight": 0}],
                            timeout="5s",
                            retries={"attempts": 0, "retry_on": ["5xx"],
                                     "hedge": {"after": "100ms", "max_percent": 100}})],
                     server={"workers": 1}))
    r = http_request(f.port, "GET", "/orders")
    assert r.status == 200 and r.header("X-Echo-Name") == "old"
    assert r.json()["path"] == "/orders"  # the fallback backend's own rewrite
    assert canary.count() == 1 and canary.requests[0]["path"] == "/v2/orders"
    assert hedges(f, "won") == 1
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_fallbacks_total", route="api", **{"from": "canary"},
                        to="old") == 1
    e, = f.wait_access_log(1)
    assert e["fallback"] is True and e["target_group"] == "old" and e["attempts"] == 2
    assert e["upstream_path"] == "/orders"


def test_no_hedge_without_deadline_left(ficus, echo_backend):
    only = echo_backend("only")
    only.delay = 0.3
    f = ficus(config({"g": only.addr},
                     [hedged_route("g", after="100ms", deadline={"min_remaining": "950ms"})],
                     server={"workers": 1}))
    # timeout 5s: plenty left; a one-second route leaves too little.
    r = http_request(f.port, "GET", "/x", headers={"X-Request-Timeout-Ms": "1000"})
    assert r.status == 200
    assert only.count() == 2  # the client is not trusted: its deadline is ignored
    f2 = ficus(config({"g": only.addr},
                      [hedged_route("g", after="100ms", deadline={"min_remaining": "950ms"})],
                      server={"workers": 1, "trusted_proxies": ["127.0.0.1/32"]}))
    r = http_request(f2.port, "GET", "/y", headers={"X-Request-Timeout-Ms": "1000"})
    assert r.status == 200
    assert wait_until(lambda: only.count() >= 3, scaled(2))
    assert [q["path"] for q in only.requests].count("/y") == 1
    assert hedges(f2, "won") + hedges(f2, "lost") == 0


def test_a_learned_delay_hedges_the_slow_outliers(ficus, echo_backend):
    a, b = echo_backend("a"), echo_backend("b")
    f = ficus(config({"g": [a.addr, b.addr]}, [hedged_route("g", after="p95")],
                     server={"workers": 1}))
    # Nothing learned yet: no hedge even for a slow answer.
    assert http_request(f.port, "GET", "/warm", headers={"X-Echo-Delay": "0.3"}).status == 200
    assert hedges(f, "won") + hedges(f, "lost") == 0
    for i in range(40):
        assert http_request(f.port, "GET", f"/learn/{i}").status == 200
    a.delay = 1.0
    for i in range(4):
        r = http_request(f.port, "GET", f"/slow/{i}")
        assert r.status == 200 and r.header("X-Echo-Name") == "b"
    assert hedges(f, "won") >= 1


def test_hedges_are_sibling_spans(ficus, echo_backend):
    receiver = OtlpReceiver()
    receiver.start()
    try:
        old, canary = echo_backend("old"), echo_backend("canary")
        canary.delay = 0.5
        f = ficus(config({"old": old.addr, "canary": canary.addr},
                         [route("api", "/", [{"target_group": "canary", "weight": 1,
                                              "fallback": "old"},
                                             {"target_group": "old", "weight": 0}],
                                timeout="5s",
                                retries={"attempts": 0, "retry_on": ["5xx"],
                                         "hedge": {"after": "50ms", "max_percent": 100}})],
                         server={"workers": 1},
                         tracing={"otlp_endpoint": receiver.endpoint}))
        assert http_request(f.port, "GET", "/x").status == 200
        spans = receiver.wait_for_spans(3, scaled(5))
        assert len(spans) == 3
        receiver.validate_all()
        server, = [s for s in spans if s["kind"] == 2]
        clients = [s for s in spans if s["kind"] == 3]
        assert {c["attrs"]["ficus.target_group"] for c in clients} == {"canary", "old"}
        for c in clients:
            assert c["parentSpanId"] == server["spanId"]
        hedge, = [c for c in clients if c["attrs"].get("ficus.hedge")]
        assert hedge["attrs"]["ficus.target_group"] == "old"
        assert hedge["attrs"]["ficus.retry"] is False
        assert server["attrs"]["ficus.hedge"] is True
        # Each try carried its own span id.
        sent = {q["name"]: [v for k, v in q["headers"] if k.lower() == "traceparent"][0]
                for q in old.requests + canary.requests}
        assert {c["spanId"] for c in clients} == {v.split("-")[2] for v in sent.values()}
    finally:
        receiver.stop()


@pytest.mark.parametrize("after", ["0ms", "soon", "p50"])
def test_bad_hedge_config_is_refused(tmp_path, after):
    path = tmp_path / "ficus.yaml"
    path.write_text(to_yaml(config({"g": "127.0.0.1:1"}, [hedged_route("g", after=after)])))
    p = run_cli(["check", "-c", str(path)])
    assert p.returncode == 1 and "routes[0].retries.hedge.after" in p.stderr, p.stderr
