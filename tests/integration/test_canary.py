"""A canary's failures that the fallback hid (contract 10.2): the client
saw a success, ficus_canary_masked_failures_total{route, target_group}
counts the failed group's try; a failure the client saw is not masked."""

from harness import config, http_request, metric_value, parse_metrics, route


def test_failure_hidden_by_fallback_is_counted_as_masked(ficus, echo_backend):
    v1 = echo_backend("v1")
    f = ficus(config({"v1": v1.addr, "v2": "127.0.0.1:1"},
                     [route("search", "/search",
                            [{"target_group": "v2", "weight": 1, "fallback": "v1"},
                             {"target_group": "v1", "weight": 0}])]))
    for _ in range(4):
        r = http_request(f.port, "GET", "/search")
        assert r.status == 200 and r.header("X-Echo-Name") == "v1"
    # The fallback's own failure reaches the client: not a masked one.
    r = http_request(f.port, "GET", "/search", headers={"X-Echo-Status": "503"})
    assert r.status == 503
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_canary_masked_failures_total", route="search",
                        target_group="v2") == 4
    assert metric_value(m, "ficus_fallbacks_total", route="search", **{"from": "v2"},
                        to="v1") == 5
