"""Deadlines (contract 10.3): every try carries the time it has left as
X-Request-Timeout-Ms (and grpc-timeout for gRPC), the smaller of its
per_try_timeout and the route's remaining timeout; an incoming deadline from
a trusted proxy, or any grpc-timeout, shortens the route's timeout; no retry
or fallback starts with less than deadline.min_remaining left."""

import pytest

from harness import config, echo_header, http_request, route, scaled, wait_until


def sent_ms(rec):
    got = [v for k, v in rec["headers"] if k.lower() == "x-request-timeout-ms"]
    assert len(got) == 1, rec["headers"]
    return int(got[0])


def test_each_try_carries_the_time_it_has_left(ficus, echo_backend):
    e = echo_backend("e")
    e.delay = 0.2
    f = ficus(config({"e": e.addr},
                     [route("api", "/", "e", timeout="3s",
                            retries={"attempts": 2, "retry_on": ["5xx"], "backoff": "1ms"})]))
    r = http_request(f.port, "GET", "/x", headers={"X-Echo-Status": "503"})
    assert r.status == 503
    assert e.count() == 3
    left = [sent_ms(rec) for rec in e.requests]
    assert 2500 < left[0] <= 3000
    # Each later try has less left: the route's timeout runs across tries.
    assert left[0] > left[1] > left[2] > 0
    assert left[0] - left[2] >= 300


def test_per_try_timeout_bounds_what_a_try_is_told(ficus, echo_backend):
    e = echo_backend("e")
    f = ficus(config({"e": e.addr},
                     [route("api", "/", "e", timeout="10s",
                            retries={"attempts": 1, "retry_on": ["5xx"],
                                     "per_try_timeout": "700ms"})]))
    r = http_request(f.port, "GET", "/x")
    assert r.status == 200
    assert 0 < sent_ms(r.json()) <= 700


def test_a_trusted_proxys_deadline_shortens_the_route_timeout(ficus, echo_backend):
    e = echo_backend("e")
    e.delay = 1.5
    f = ficus(config({"e": e.addr}, [route("api", "/", "e", timeout="10s")],
                     server={"trusted_proxies": ["127.0.0.1/32"]}))
    r = http_request(f.port, "GET", "/x", headers={"X-Request-Timeout-Ms": "300"})
    assert r.status == 504  # the backend answers after 1.5 s: the deadline came first
    assert sent_ms(e.requests[0]) <= 300


def test_an_untrusted_clients_deadline_is_ignored_and_replaced(ficus, echo_backend):
    e = echo_backend("e")
    e.delay = 0.5
    f = ficus(config({"e": e.addr}, [route("api", "/", "e", timeout="10s")]))
    r = http_request(f.port, "GET", "/x", headers={"X-Request-Timeout-Ms": "100"})
    assert r.status == 200
    # The backend saw ficus's value, not the client's.
    assert 9000 < sent_ms(r.json()) <= 10000


@pytest.mark.parametrize("value", ["300m", "300000u", "1S"])
def test_any_grpc_timeout_shortens_the_route_timeout(ficus, echo_backend, value):
    e = echo_backend("e")
    e.delay = 1.5
    f = ficus(config({"e": e.addr}, [route("api", "/", "e", timeout="10s")]))
    r = http_request(f.port, "POST", "/pkg.Svc/Call", body=b"\0\0\0\0\0",
                     headers={"grpc-timeout": value, "Content-Type": "application/grpc"})
    # A gRPC call's timeout is gRPC's DEADLINE_EXCEEDED (contract 3.2); the log says 504.
    assert r.status == 200 and r.header("grpc-status") == "4", repr(r)
    assert f.wait_access_log(1)[-1]["status"] == 504
    rec = e.requests[0]
    assert sent_ms(rec) <= 1000
    # gRPC gets its own header too, in milliseconds.
    got = echo_header(rec, "grpc-timeout")
    assert len(got) == 1 and got[0].endswith("m") and int(got[0][:-1]) <= 1000


def test_malformed_incoming_deadlines_are_ignored(ficus, echo_backend):
    e = echo_backend("e")
    f = ficus(config({"e": e.addr}, [route("api", "/", "e", timeout="2s")],
                     server={"trusted_proxies": ["127.0.0.1/32"]}))
    for h in ({"X-Request-Timeout-Ms": "-5"}, {"X-Request-Timeout-Ms": "12345678901"},
              {"X-Request-Timeout-Ms": "1e3"}, {"grpc-timeout": "123456789m"},
              {"grpc-timeout": "10x"}, {"grpc-timeout": "m"}):
        r = http_request(f.port, "GET", "/x", headers=h)
        assert r.status == 200, h
        assert 1500 < sent_ms(r.json()) <= 2000, h


def test_no_retry_starts_without_min_remaining_left(ficus, echo_backend):
    e = echo_backend("e")
    e.delay = 0.3
    f = ficus(config({"e": e.addr},
                     [route("api", "/", "e", timeout="1s",
                            deadline={"min_remaining": "800ms"},
                            retries={"attempts": 3, "retry_on": ["5xx"], "backoff": "1ms"})]))
    r = http_request(f.port, "GET", "/x", headers={"X-Echo-Status": "503"})
    assert r.status == 503
    assert e.count() == 1  # ~700 ms left after the first try: less than 800 ms


def test_no_fallback_starts_without_min_remaining_left(ficus, echo_backend):
    old, new = echo_backend("old"), echo_backend("new")
    new.delay = 0.3
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [route("api", "/", [{"target_group": "new", "weight": 1, "fallback": "old"},
                                         {"target_group": "old", "weight": 0}],
                            timeout="1s", deadline={"min_remaining": "800ms"})]))
    r = http_request(f.port, "GET", "/x", headers={"X-Echo-Status": "503"})
    assert r.status == 503 and r.header("X-Echo-Name") == "new"
    assert old.count() == 0


def test_propagation_off_passes_the_clients_header(ficus, echo_backend):
    e = echo_backend("e")
    f = ficus(config({"e": e.addr},
                     [route("api", "/", "e", timeout="2s", deadline={"propagate": False})]))
    r = http_request(f.port, "GET", "/x")
    assert echo_header(r.json(), "x-request-timeout-ms") == []
    r = http_request(f.port, "GET", "/x", headers={"X-Request-Timeout-Ms": "77"})
    assert echo_header(r.json(), "x-request-timeout-ms") == ["77"]


def test_a_shadow_copy_carries_its_own_time_left(ficus, echo_backend):
    old, new = echo_backend("old"), echo_backend("new")
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [route("api", "/", "old", timeout="3s",
                            shadow={"target_group": "new", "percent": 100})]))
    assert http_request(f.port, "GET", "/x").status == 200
    assert http_request(f.port, "POST", "/y", body=b"{}").status == 200
    assert wait_until(lambda: new.count() == 1, scaled(5))
    # The copy runs under the route's timeout, not the client's request.
    assert 2000 < sent_ms(new.requests[0]) <= 3000
    assert 2000 < sent_ms(old.requests[0]) <= 3000
