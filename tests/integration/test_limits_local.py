"""Throttles and rate limits on one instance (contract sections 2 and 5):
a client's max_concurrent_requests answered 429 at once beyond it (with
Retry-After, counted in ficus_throttled_total) and released when its
requests end; a route's token bucket by client, ip or route, 429 with the
wait in Retry-After, counted in ficus_rate_limited_total; buckets and counts
shared by the workers and kept across a reload."""

import hashlib
import signal
import threading
import time

from harness import config, http_request, metric_value, parse_metrics, route, wait_until

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


def clients(max_a=0):
    a = {"id": "a", "api_keys_sha256": [sha(KEY_A)]}
    if max_a:
        a["max_concurrent_requests"] = max_a
    return [a, {"id": "b", "api_keys_sha256": [sha(KEY_B)]}]


def test_throttle_answers_429_beyond_max_and_releases(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr},
                     [route("r", "/", "echo", auth={"client": "required"})],
                     server={"workers": 2}, clients=clients(max_a=2)))
    slow = []

    def call():
        slow.append(http_request(f.port, "GET", "/slow",
                                 headers={"X-Api-Key": KEY_A, "X-Echo-Delay": "1.5"},
                                 timeout=10))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    assert wait_until(lambda: echo.count() >= 2, 5), "the two slow requests never arrived"
    # Two in flight (on whichever workers): a third is refused at once ...
    t0 = time.monotonic()
    r = http_request(f.port, "GET", "/x", headers={"X-Api-Key": KEY_A})
    assert r.status == 429, r
    assert time.monotonic() - t0 < 1.0, "a throttled request waited"
    assert r.header("Retry-After") == "1"
    assert r.json()["error"] == "too_many_requests"
    # ... while another client is not.
    assert http_request(f.port, "GET", "/x", headers={"X-Api-Key": KEY_B}).status == 200
    for t in threads:
        t.join()
    assert [x.status for x in slow] == [200, 200]
    # Their ends released the count.
    for _ in range(3):
        assert http_request(f.port, "GET", "/x", headers={"X-Api-Key": KEY_A}).status == 200
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_throttled_total", client="a") == 1
    lines = f.wait_access_log(6)
    assert [e["error"] for e in lines if e["status"] == 429] == ["throttled"]


def test_rate_limit_by_ip_token_bucket(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr},
                     [route("limited", "/", "echo",
                            rate_limit={"requests_per_second": 0.5, "burst": 3, "by": "ip"})],
                     server={"workers": 2}))
    statuses = [http_request(f.port, "GET", f"/{i}").status for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429], statuses
    r = http_request(f.port, "GET", "/again")
    assert r.status == 429
    assert r.json()["error"] == "too_many_requests"
    assert 1 <= int(r.header("Retry-After")) <= 2, r.header("Retry-After")
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_rate_limited_total", route="limited") == 3
    assert metric_value(m, "ficus_rate_limit_evictions_total") == 0  # one key: room to spare
    assert echo.count() == 3


def test_rate_limit_by_client_keeps_clients_apart(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr},
                     [route("r", "/", "echo", auth={"client": "required"},
                            rate_limit={"requests_per_second": 0.1, "burst": 2,
                                        "by": "client"})],
                     clients=clients()))
    a = [http_request(f.port, "GET", "/", headers={"X-Api-Key": KEY_A}).status
         for _ in range(3)]
    b = [http_request(f.port, "GET", "/", headers={"X-Api-Key": KEY_B}).status
         for _ in range(3)]
    assert a == [200, 200, 429] and b == [200, 200, 429], (a, b)


def test_rate_limit_by_route_and_refill(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr},
                     [route("r", "/", "echo",
                            rate_limit={"requests_per_second": 5, "burst": 1, "by": "route"})]))
    assert http_request(f.port, "GET", "/").status == 200
    assert http_request(f.port, "GET", "/").status == 429
    # 5/s: a token is back within 200 ms (allow for a slow machine).
    assert wait_until(lambda: http_request(f.port, "GET", "/").status == 200, 3)


def test_rate_limit_bucket_survives_a_reload(ficus, echo_backend):
    echo = echo_backend("e1")
    cfg = config({"echo": echo.addr},
                 [route("r", "/", "echo",
                        rate_limit={"requests_per_second": 0.01, "burst": 2, "by": "route"})])
    f = ficus(cfg)
    assert [http_request(f.port, "GET", "/").status for _ in range(3)] == [200, 200, 429]
    cfg["routes"][0]["timeout"] = "7s"  # a change, the same route and limit
    f.write_config(cfg)
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: metric_value(parse_metrics(f.metrics_text()),
                                           "ficus_config_reloads_total", result="success"), 5)
    assert http_request(f.port, "GET", "/").status == 429, "a reload refilled the bucket"
