"""Throttles and rate limits across a fleet (contract sections 2 and 5): two
ficus instances and a real redis-server. A client's max_concurrent_requests
with concurrency_scope: global counts its requests on both; the share of an
instance killed with -9 expires within its lease; redis down fails open (the
throttle) or falls back to the local bucket (the rate limit), counted in
ficus_redis_errors_total."""

import hashlib
import signal
import threading
import time

import pytest

from harness import config, http_request, metric_value, parse_metrics, route, wait_until
from harness.redis import Redis

KEY = "fleet-key-0123456789abcdef"


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


def cfg(echo, redis, **route_extra):
    return config({"echo": echo.addr},
                  [route("r", "/", "echo", auth={"client": "required"}, **route_extra)],
                  server={"workers": 2},
                  redis={"address": redis.addr, "timeout": "1s"},
                  clients=[{"id": "app", "api_keys_sha256": [hashlib.sha256(KEY.encode())
                                                             .hexdigest()],
                            "max_concurrent_requests": 2, "concurrency_scope": "global"}])


def call(f, results, delay=None, timeout=10):
    h = {"X-Api-Key": KEY}
    if delay:
        h["X-Echo-Delay"] = str(delay)
    try:
        results.append(http_request(f.port, "GET", "/", headers=h, timeout=timeout).status)
    except OSError as e:
        results.append(repr(e))


def hold(f, n, seconds):
    """n slow requests in flight on f (threads; join them to collect)."""
    res = []
    ts = [threading.Thread(target=call, args=(f, res, seconds)) for _ in range(n)]
    for t in ts:
        t.start()
    return ts, res


def test_global_throttle_counts_both_instances(ficus, echo_backend, redis):
    echo = echo_backend("e1")
    a = ficus(cfg(echo, redis))
    b = ficus(cfg(echo, redis))
    ts, res = hold(a, 2, 1.5)
    assert wait_until(lambda: echo.count() >= 2, 5)
    r = []
    call(b, r)
    assert r == [429], f"the other instance let a third request in: {r}"
    for t in ts:
        t.join()
    assert res == [200, 200]
    assert wait_until(lambda: (lambda x: call(b, x) or x[-1] == 200)([]), 3), \
        "the fleet count was not released"
    m = parse_metrics(b.metrics_text())
    assert metric_value(m, "ficus_throttled_total", client="app") == 1
    assert not metric_value(m, "ficus_redis_errors_total")


def test_a_killed_instance_share_expires_with_its_lease(ficus, echo_backend, redis):
    echo = echo_backend("e1")
    a = ficus(cfg(echo, redis))
    b = ficus(cfg(echo, redis))
    ts, _ = hold(a, 2, 30)
    assert wait_until(lambda: echo.count() >= 2, 5)
    r = []
    call(b, r)
    assert r == [429]
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=5)
    t0 = time.monotonic()
    ok = wait_until(lambda: (lambda x: call(b, x) or x[-1] == 200)([]), 10)
    assert ok, "the killed instance's count never expired"
    assert time.monotonic() - t0 < 8, "longer than a lease of a few seconds"
    for t in ts:
        t.join()


def test_global_rate_limit_shared_by_the_fleet(ficus, echo_backend, redis):
    echo = echo_backend("e1")
    rl = {"requests_per_second": 0.01, "burst": 3, "by": "client", "scope": "global"}
    a = ficus(cfg(echo, redis, rate_limit=rl))
    b = ficus(cfg(echo, redis, rate_limit=rl))
    got = []
    for f in (a, b, a, b, a):
        call(f, got)
    assert got == [200, 200, 200, 429, 429], got
    r = http_request(b.port, "GET", "/", headers={"X-Api-Key": KEY})
    assert r.status == 429 and int(r.header("Retry-After")) >= 1


def test_redis_down_rate_limit_goes_local(ficus, echo_backend, redis):
    echo = echo_backend("e1")
    rl = {"requests_per_second": 0.01, "burst": 2, "by": "client", "scope": "global"}
    a = ficus(cfg(echo, redis, rate_limit=rl))
    assert http_request(a.port, "GET", "/", headers={"X-Api-Key": KEY}).status == 200
    redis.stop()
    t0 = time.monotonic()
    got = []
    for _ in range(4):
        call(a, got)
    # The local bucket (burst 2, untouched so far) now decides: 2 more, then 429.
    assert got == [200, 200, 429, 429], got
    assert time.monotonic() - t0 < 3, "requests waited for a redis that is down"
    m = parse_metrics(a.metrics_text())
    assert metric_value(m, "ficus_redis_errors_total") >= 4


def test_redis_down_throttle_fails_open(ficus, echo_backend, redis):
    echo = echo_backend("e1")
    a = ficus(cfg(echo, redis))
    assert http_request(a.port, "GET", "/", headers={"X-Api-Key": KEY}).status == 200
    redis.stop()
    ts, res = hold(a, 3, 0.5)  # 3 where 2 are allowed: redis cannot say, so all pass
    for t in ts:
        t.join()
    assert res == [200, 200, 200], res
    m = parse_metrics(a.metrics_text())
    assert metric_value(m, "ficus_redis_errors_total") >= 3
    # Redis back: once reconnected, the fleet decides again.
    redis.start()

    def third_refused():
        before = echo.count()
        ts, _ = hold(a, 2, 1.0)
        wait_until(lambda: echo.count() >= before + 2, 5)
        r = []
        call(a, r)
        for t in ts:
            t.join()
        return r == [429]

    assert wait_until(third_refused, 15), "the throttle never counted again"
