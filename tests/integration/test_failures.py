"""Resilience under broken backends (contract 5 and 6): retries, canary fallback,
timeouts, resets, a kill under load, health checks, outlier ejection, circuit
breakers, run-time weights and the retry budget, each checked by what the client,
each backend, the metrics and the access log saw. Manual twin: docs/failure-testing.md."""

import http.client
import json
import subprocess
import threading
import time

import pytest

from harness import (
    RawConn,
    config,
    free_port,
    http_request,
    metric_value,
    parse_metrics,
    route,
    scaled,
    wait_until,
)
from harness.procs import stop_process, wait_ports

ONE_WORKER = {"workers": 1}  # exact counts need one worker's round robin


# --- small helpers ------------------------------------------------------------


def get(f, path="/", method="GET", body=None, headers=None, timeout=10.0):
    """One request on a new connection; (Response, seconds it took)."""
    t0 = time.monotonic()
    r = http_request(f.port, method, path, body=body, headers=headers, timeout=timeout)
    return r, time.monotonic() - t0


def metric(f, name, **labels):
    """The summed value of a metric (0 when there is no such sample)."""
    v = metric_value(parse_metrics(f.metrics_text()), name, **labels)
    return 0 if v is None else v


def wait_metric(f, name, expected, timeout=3.0, **labels):
    """Polls until the metric equals expected (the worker may still be
    recording the request the client has just seen answered); the last value."""
    last = []

    def check():
        last.append(metric(f, name, **labels))
        return last[-1] == expected

    wait_until(check, scaled(timeout))
    return last[-1]


def assert_metric(f, name, expected, **labels):
    got = wait_metric(f, name, expected, **labels)
    assert got == expected, f"{name}{labels}: {got}, expected {expected}\n" + metric_lines(f, name)


def metric_lines(f, name):
    return "\n".join(s for s in f.metrics_text().splitlines() if s.startswith(name))


def log_lines(f, n):
    """The access log once it has n lines; more or fewer fail the test (every
    request is logged once, whatever its tries)."""
    lines = f.wait_access_log(n)
    assert len(lines) == n, f"{len(lines)} access log lines, expected {n}: {lines}"
    return lines


def admin(f, method, path, body=None):
    """(status, parsed JSON or text) from the admin listener."""
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=scaled(5))
    try:
        data = body.encode() if isinstance(body, str) else body
        c.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode()
    finally:
        c.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


def target_state(f, group, target_addr):
    status, tgs = admin(f, "GET", "/target_groups")
    assert status == 200, tgs
    for t in tgs[group]["targets"]:
        if t["target"] == target_addr:
            return t
    raise AssertionError(f"no target {target_addr} in group {group}: {tgs}")


def concurrent(f, n, path="/", method="GET", timeout=15.0):
    """n requests released at once from n threads; a list of (status, seconds,
    Response) in thread order. A client-side error fails the test."""
    barrier = threading.Barrier(n)
    out = [None] * n
    errors = []

    def one(i):
        try:
            barrier.wait(timeout=scaled(10))
            r, dt = get(f, path, method, timeout=timeout)
            out[i] = (r.status, dt, r)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"request {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(timeout) + 10)
    assert not errors, errors
    assert all(o is not None for o in out), "a client thread did not finish"
    return out


def closed_addr():
    """An address nobody listens on: connecting there is refused at once."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def respawn():
    """respawn(mock) -> Popen: starts `ficus mock` again with the same argv
    (same port and name) once the first one is gone; stopped at teardown."""
    started = []

    def start(m):
        p = subprocess.Popen(m.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        started.append(p)
        wait_ports([m.port], p, 10.0, f"ficus mock {m.name} (again)")
        return p

    yield start
    for p in started:
        stop_process(p)


def canary_config(primary, canary, retries=None, server=ONE_WORKER):
    """Route `search` (path_regex /search/(.*)): 90 to primary (upstream path
    /v1/$1), 10 to canary (/v2/$1) falling back to primary."""
    extra = {"retries": retries} if retries is not None else {}
    backends = [
        {"target_group": "primary", "weight": 90, "path": "/v1/$1"},
        {"target_group": "canary", "weight": 10, "fallback": "primary", "path": "/v2/$1"},
    ]
    return config({"primary": primary, "canary": canary},
                  [route("search", {"path_regex": "/search/(.*)"}, backends, **extra)],
                  server=server)


# --- 1. canary down entirely ---------------------------------------------------


def test_canary_port_closed_falls_back_to_primary(ficus, mock):
    primary = mock("primary")
    canary = closed_addr()
    f = ficus(canary_config(primary.addr, canary))
    n = 20  # two windows of the 90/10 round: exactly 2 canary picks
    for i in range(n):
        r, _ = get(f, f"/search/q{i}")
        assert r.status == 200, f"request {i}: {r!r}"
        assert r.header("X-Mock-Name") == "primary", repr(r)
    stats = primary.stats()
    assert stats["total"] == n, stats
    # The fallback used the primary backend's own path rewrite, not the canary's.
    assert sum(v for p, v in stats["by_path"].items() if p.startswith("/v1/search/")) == 0
    assert sum(v for p, v in stats["by_path"].items() if p.startswith("/v1/q")) == n, stats

    lines = log_lines(f, n)
    fell_back = [e for e in lines if e["fallback"] is True]
    assert len(fell_back) == 2, lines
    assert all(e["fallback"] is False for e in lines if e not in fell_back), lines
    for e in fell_back:
        assert e["attempts"] == 2 and e["target_group"] == "primary" and e["status"] == 200, e
    for e in lines:
        if e not in fell_back:
            assert e["attempts"] == 1 and e["target_group"] == "primary", e
    assert_metric(f, "ficus_fallbacks_total", 2, route="search", **{"from": "canary"}, to="primary")
    assert_metric(f, "ficus_upstream_requests_total", 2, target_group="canary", target=canary,
                  code="connect_error")
    assert_metric(f, "ficus_upstream_requests_total", n, target_group="primary", code="200")
    assert_metric(f, "ficus_requests_total", n, route="search", code="200")


def test_a_retry_stays_in_its_group_when_the_fallback_request_cannot_be_built(ficus, mock):
    """A canary whose fallback request target cannot be built (here: longer than
    a buffer) still retries in its own group; it used to be answered 502
    "fallback request too large" because the retry took the fallback's way."""
    primary, canary = mock("primary"), mock("canary")
    backends = [
        {"target_group": "primary", "weight": 0, "path": "/v1/" + "$1" * 12},
        {"target_group": "canary", "weight": 1, "fallback": "primary", "path": "/v2/$1"},
    ]
    retries = {"attempts": 1, "retry_on": ["connect-failure"], "backoff": "1ms"}
    f = ficus(config({"primary": primary.addr, "canary": [closed_addr(), canary.addr]},
                     [route("search", {"path_regex": "/search/(.*)"}, backends, retries=retries)],
                     server=ONE_WORKER))
    long_path = "/search/" + "a" * 9000  # x12 in the fallback's target: over any buffer
    for i in range(4):
        r, _ = get(f, long_path)
        assert r.status == 200, f"request {i}: {r!r}"
        assert r.header("X-Mock-Name") == "canary", repr(r)
    lines = log_lines(f, 4)
    assert any(e["attempts"] == 2 and e["fallback"] is False for e in lines), lines
    assert primary.stats()["total"] == 0


# --- 2. canary answering 503 ---------------------------------------------------


@pytest.mark.parametrize("retries", [None, {"attempts": 2, "retry_on": ["5xx"], "backoff": "1ms"}],
                         ids=["no-retries", "attempts-2"])
def test_canary_503_every_client_request_200(ficus, mock, retries):
    primary = mock("primary")
    canary = mock("canary", fail_rate=1.0, fail_status=503)
    f = ficus(canary_config(primary.addr, canary.addr, retries))
    n = 20
    for i in range(n):
        r, _ = get(f, f"/search/q{i}")
        assert r.status == 200 and r.header("X-Mock-Name") == "primary", f"request {i}: {r!r}"
    assert canary.stats()["total"] == 2  # exactly its share: once per 10, never a retry
    assert primary.stats()["total"] == n  # its own 18 and the 2 fallbacks
    lines = log_lines(f, n)
    assert sum(e["fallback"] is True for e in lines) == 2, lines
    assert_metric(f, "ficus_fallbacks_total", 2, route="search", **{"from": "canary"}, to="primary")
    assert_metric(f, "ficus_upstream_requests_total", 2, target_group="canary", code="503")


@pytest.mark.parametrize("retries,primary_tries,attempts", [
    (None, 1, 2),                                                          # one fallback try
    ({"attempts": 0, "retry_on": ["5xx"]}, 1, 2),                          # still one
    ({"attempts": 2, "retry_on": ["5xx"], "backoff": "1ms"}, 2, 3),        # the rest pinned
], ids=["no-retries", "attempts-0", "attempts-2"])
def test_later_tries_stay_on_the_fallback_group(ficus, mock, retries, primary_tries, attempts):
    # Both groups fail: a canary-picked request's every later try must still
    # go to the primary, never back to the canary.
    primary = mock("primary", fail_rate=1.0, fail_status=503)
    canary = mock("canary", fail_rate=1.0, fail_status=503)
    f = ficus(canary_config(primary.addr, canary.addr, retries))
    n = 10  # one window of the 90/10 round: exactly one canary pick
    for i in range(n):
        r, _ = get(f, f"/search/q{i}")
        assert r.status == 503 and r.header("X-Mock-Name") == "primary", f"request {i}: {r!r}"
    per_primary_request = 1 + (retries or {}).get("attempts", 0)
    assert canary.stats()["total"] == 1
    assert primary.stats()["total"] == (n - 1) * per_primary_request + primary_tries
    lines = log_lines(f, n)
    fb = [e for e in lines if e["fallback"] is True]
    assert len(fb) == 1, lines
    assert fb[0]["attempts"] == attempts and fb[0]["target_group"] == "primary", fb
    assert fb[0]["status"] == 503 and fb[0]["upstream_status"] == 503, fb
    assert_metric(f, "ficus_fallbacks_total", 1, route="search", **{"from": "canary"}, to="primary")


# --- 3. retries: exact try counts -----------------------------------------------


@pytest.mark.parametrize("attempts", [0, 1, 2])
def test_retries_exact_counts_on_503(ficus, mock, attempts):
    m = mock("bad", fail_rate=1.0, fail_status=503)
    f = ficus(config({"g": m.addr}, [route("r", "/", "g", retries={
        "attempts": attempts, "retry_on": ["5xx"], "backoff": "1ms"})], server=ONE_WORKER))
    n = 3
    for i in range(n):
        r, _ = get(f, f"/x{i}")
        # The upstream's own 503 reaches the client, not one of ficus's.
        assert r.status == 503 and r.header("X-Mock-Name") == "bad", repr(r)
        assert b"injected failure" in r.body, repr(r)
        assert m.stats()["total"] == (i + 1) * (attempts + 1)
    for e in log_lines(f, n):
        assert e["attempts"] == attempts + 1, e
        assert e["status"] == 503 and e["upstream_status"] == 503 and e["fallback"] is False, e
    assert_metric(f, "ficus_retries_total", n * attempts, route="r", target_group="g")
    assert_metric(f, "ficus_upstream_requests_total", n * (attempts + 1), target_group="g",
                  code="503")


@pytest.mark.parametrize("non_idempotent,tries", [(False, 1), (True, 3)])
def test_post_retried_on_5xx_only_with_retry_non_idempotent(ficus, mock, non_idempotent, tries):
    m = mock("bad", fail_rate=1.0, fail_status=503)
    f = ficus(config({"g": m.addr}, [route("r", "/", "g", retry_non_idempotent=non_idempotent,
                                           retries={"attempts": 2, "retry_on": ["5xx"],
                                                    "backoff": "1ms"})], server=ONE_WORKER))
    r, _ = get(f, "/order", method="POST", body=b'{"item": 1}',
               headers={"Content-Type": "application/json"})
    assert r.status == 503, repr(r)
    assert m.stats()["by_method"] == {"POST": tries}
    assert log_lines(f, 1)[0]["attempts"] == tries
    # PUT is idempotent: retried whatever retry_non_idempotent says.
    r, _ = get(f, "/order", method="PUT", body=b"{}")
    assert r.status == 503 and m.stats()["by_method"]["PUT"] == 3


def test_post_resent_after_connect_failure(ficus, echo_backend):
    good = echo_backend("good")
    dead = closed_addr()
    f = ficus(config({"g": [dead, good.addr]}, [route("r", "/", "g", retries={
        "attempts": 1, "retry_on": ["connect-failure"], "backoff": "1ms"})], server=ONE_WORKER))
    n = 4
    body = b"payload-" + bytes(range(256)) * 40
    for i in range(n):
        r, _ = get(f, f"/p{i}", method="POST", body=body)
        assert r.status == 200, f"POST {i}: {r!r}"
        seen = r.json()
        assert seen["method"] == "POST" and seen["body_len"] == len(body), seen
    assert good.count() == n
    lines = log_lines(f, n)
    # Which requests met the closed port first is the round robin's business
    # (a retry moves its cursor too); each of them was re-sent exactly once.
    resent = sum(e["attempts"] == 2 for e in lines)
    assert resent >= 1 and all(e["attempts"] in (1, 2) for e in lines), lines
    assert_metric(f, "ficus_upstream_requests_total", resent, target_group="g", target=dead,
                  code="connect_error")
    assert_metric(f, "ficus_retries_total", resent, route="r", target_group="g")


# --- 4. a backend that resets -----------------------------------------------------


@pytest.mark.parametrize("retry_on,tries", [(["reset"], 3), (["5xx"], 3),
                                            (["connect-failure"], 1), (["503"], 1)])
def test_reset_retried_only_when_asked(ficus, mock, retry_on, tries):
    m = mock("rst", reset_rate=1.0)
    f = ficus(config({"g": m.addr}, [route("r", "/", "g", retries={
        "attempts": 2, "retry_on": retry_on, "backoff": "1ms"})], server=ONE_WORKER))
    r, _ = get(f, "/")
    assert r.status == 502, repr(r)
    assert r.json()["error"] == "bad_gateway", repr(r)
    assert m.stats()["total"] == tries
    e = log_lines(f, 1)[0]
    assert e["attempts"] == tries and e["error"] == "upstream_reset" and e["status"] == 502, e
    assert_metric(f, "ficus_upstream_requests_total", tries, target_group="g", code="reset")


@pytest.mark.parametrize("retry_on,retried", [(["reset"], True), (["connect-failure"], False)])
def test_reset_target_beside_a_good_one(ficus, mock, retry_on, retried):
    rst = mock("rst", reset_rate=1.0)
    good = mock("good")
    f = ficus(config({"g": [rst.addr, good.addr]}, [route("r", "/", "g", retries={
        "attempts": 1, "retry_on": retry_on, "backoff": "1ms"})], server=ONE_WORKER))
    n = 6
    statuses = [get(f, f"/{i}")[0].status for i in range(n)]
    lines = log_lines(f, n)
    reset_tries = rst.stats()["total"]
    assert reset_tries >= 1
    if retried:
        assert statuses == [200] * n, statuses
        assert reset_tries == sum(e["attempts"] == 2 for e in lines), lines
        assert good.stats()["total"] == n
    else:
        assert statuses.count(502) == reset_tries, statuses
        assert statuses.count(200) == good.stats()["total"] == n - reset_tries, statuses
        assert all(e["attempts"] == 1 for e in lines), lines


def test_no_retry_once_the_response_started(ficus, raw_backend):
    cut = raw_backend("truncate")  # a 200 head and 1000 of 100000 body bytes, then close
    f = ficus(config({"g": cut.addr}, [route("r", "/", "g", retries={
        "attempts": 2, "retry_on": ["reset", "5xx"], "backoff": "1ms"})], server=ONE_WORKER))
    c = RawConn(f.port)
    c.send(f"GET / HTTP/1.1\r\nHost: {f.listen}\r\n\r\n")
    status_line = c.read_line()
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    assert c.closed_within(5), "ficus kept the connection of a response it could not finish"
    assert len(c.buf) < 100_000  # the client saw the cut, not a silently completed body
    c.close()
    time.sleep(0.1)
    assert cut.accepted == 1  # the started response was not tried again
    e = log_lines(f, 1)[0]
    assert e["attempts"] == 1 and e["error"] == "upstream_reset", e
    assert metric(f, "ficus_retries_total") == 0


@pytest.mark.parametrize("body_bytes,tries", [(500, 3), (20_000, 1)])
def test_body_beyond_retry_buffer_not_retried(ficus, mock, body_bytes, tries):
    m = mock("bad", fail_rate=1.0, fail_status=503)
    f = ficus(config({"g": m.addr}, [route("r", "/", "g", retries={
        "attempts": 2, "retry_on": ["5xx"], "backoff": "1ms"})],
        server={"workers": 1, "retry_buffer_size": "1KiB"}))
    r, _ = get(f, "/upload", method="PUT", body=b"x" * body_bytes)
    assert r.status == 503, repr(r)
    assert m.stats()["total"] == tries
    assert log_lines(f, 1)[0]["attempts"] == tries


# --- 5. a backend that hangs ----------------------------------------------------


@pytest.mark.parametrize("retry_on,tries", [(["timeout"], 2), (["5xx"], 2), (["gateway-error"], 2),
                                            (["connect-failure"], 1), (["reset"], 1),
                                            (["504"], 1)])
def test_hanging_backend_per_try_timeout(ficus, raw_backend, retry_on, tries):
    hang = raw_backend("hang")
    f = ficus(config({"g": hang.addr}, [route("r", "/", "g", timeout="5s", retries={
        "attempts": 1, "per_try_timeout": "300ms", "retry_on": retry_on, "backoff": "1ms"})],
        server=ONE_WORKER))
    r, dt = get(f, "/")
    assert r.status == 504, repr(r)
    assert r.json()["error"] == "gateway_timeout", repr(r)
    # Timers never fire early: each try took its 300 ms. And the route's 5 s
    # timeout did not fire (that bound is not scaled: it is the config's).
    assert dt >= 0.3 * tries - 0.02, dt
    assert dt < 4.0, f"504 after {dt:.2f}s: the route timeout fired, not the per-try one"
    assert wait_until(lambda: hang.accepted == tries, scaled(2)), hang.accepted
    time.sleep(0.1)
    assert hang.accepted == tries
    e = log_lines(f, 1)[0]
    assert e["attempts"] == tries and e["error"] == "upstream_timeout" and e["status"] == 504, e
    assert_metric(f, "ficus_upstream_requests_total", tries, target_group="g", code="timeout")


def test_route_timeout_bounds_all_tries(ficus, raw_backend):
    hang = raw_backend("hang")
    f = ficus(config({"g": hang.addr}, [route("r", "/", "g", timeout="1s", retries={
        "attempts": 10, "per_try_timeout": "300ms", "retry_on": ["timeout"], "backoff": "1ms"})],
        server=ONE_WORKER))
    r, dt = get(f, "/")
    assert r.status == 504, repr(r)
    assert dt >= 0.98, dt
    e = log_lines(f, 1)[0]
    # Eleven tries of 300 ms would take 3.3 s; the route's 1 s cut them short.
    assert 2 <= e["attempts"] <= 4, e
    assert wait_until(lambda: hang.accepted == e["attempts"], scaled(2)), (hang.accepted, e)


# --- 6. slow only sometimes -------------------------------------------------------


def test_slow_target_retried_on_the_other(ficus, mock):
    slow = mock("slow", latency="2s")
    fast = mock("fast")
    f = ficus(config({"g": [slow.addr, fast.addr]}, [route("r", "/", "g", retries={
        "attempts": 2, "per_try_timeout": "500ms", "retry_on": ["timeout"], "backoff": "1ms"})],
        server=ONE_WORKER))
    n = 4
    for i in range(n):
        # An answer from "fast" means the slow try was cut off, not waited for.
        r, _ = get(f, f"/{i}")
        assert r.status == 200 and r.header("X-Mock-Name") == "fast", f"request {i}: {r!r}"
    assert fast.stats()["total"] == n
    lines = log_lines(f, n)
    retried = [e for e in lines if e["attempts"] == 2]
    assert all(e["attempts"] in (1, 2) for e in lines), lines
    assert len(retried) >= 1, lines  # round robin sends at least one there first
    assert slow.stats()["total"] == len(retried)
    for e in lines:
        assert e["target"] == fast.addr and e["status"] == 200, e
    assert_metric(f, "ficus_upstream_requests_total", len(retried), target=slow.addr,
                  code="timeout")
    assert_metric(f, "ficus_retries_total", len(retried), route="r", target_group="g")


# --- 7. a backend killed mid-load -----------------------------------------------


def test_backend_killed_under_load_no_request_fails(ficus, mock):
    a = mock("a")
    b = mock("b")
    f = ficus(config({"g": [a.addr, b.addr]}, [route("r", "/", "g", retries={
        "attempts": 2, "retry_on": ["connect-failure", "reset", "5xx"], "backoff": "1ms"})]))
    per_thread, n_threads = 100, 2
    results = []
    done = threading.Semaphore(0)
    errors = []

    def load():
        conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=scaled(10))
        try:
            for i in range(per_thread):
                r = http_request(f.port, "GET", f"/k{i}", conn=conn)
                results.append(r.status)
                done.release()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=load) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for _ in range(50):  # kill once a quarter of the load is through
        assert done.acquire(timeout=scaled(10)), f"load stalled: {errors}"
    b.proc.kill()
    b.proc.wait(timeout=scaled(5))
    for t in threads:
        t.join(timeout=scaled(60))
    assert not errors, errors
    assert len(results) == per_thread * n_threads
    bad = [s for s in results if s != 200]
    assert not bad, f"{len(bad)} failed requests: {sorted(set(bad))}"
    # The failures were there, and were retried away.
    failed_tries = sum(metric(f, "ficus_upstream_requests_total", target=b.addr, code=c)
                       for c in ("connect_error", "reset"))
    assert failed_tries >= 1, metric_lines(f, "ficus_upstream_requests_total")
    assert metric(f, "ficus_retries_total", route="r") >= 1


# --- 8. a whole group down, then back -------------------------------------------


def test_required_group_down_then_back(ficus, mock, respawn):
    m = mock("core")
    f = ficus(config({"core": {
        "targets": [m.addr], "required": True, "panic_threshold": 0,
        "health_check": {"path": "/healthz", "interval": "200ms", "timeout": "200ms",
                         "healthy_threshold": 1, "unhealthy_threshold": 1}}},
        [route("r", "/", "core")]))

    def ready():
        return f.admin_get("/readyz")[0]

    assert wait_until(lambda: ready() == 200, scaled(3)), f.admin_get("/readyz")
    assert get(f, "/")[0].status == 200

    m.stop()
    assert wait_until(lambda: ready() == 503, scaled(5)), "readyz still 200 with the group down"
    status, _, body = f.admin_get("/readyz")
    assert status == 503 and "core" in json.loads(body)["reason"], body
    assert metric(f, "ficus_target_healthy", target_group="core", target=m.addr) == 0
    assert admin(f, "GET", "/target_groups")[1]["core"]["healthy_targets"] == 0
    r, dt = get(f, "/")
    assert r.status == 503, repr(r)
    assert r.json()["error"] == "no_healthy_target" and "no healthy target" in r.json()["message"], r
    assert dt < scaled(1.0), f"no-healthy-target answer took {dt:.2f}s"
    assert f.wait_access_log(2)[-1]["error"] == "no_healthy_target"

    respawn(m)  # the same port again
    assert wait_until(lambda: ready() == 200, scaled(5)), f.admin_get("/readyz")
    assert metric(f, "ficus_target_healthy", target_group="core", target=m.addr) == 1
    for i in range(5):  # ready means serving: no failed first request on the way back
        r, _ = get(f, f"/{i}")
        assert r.status == 200, f"request {i} after /readyz turned 200: {r!r}"


# --- 9. outlier detection ---------------------------------------------------------


OUTLIER = {"consecutive_errors": 3, "base_ejection_time": "30s", "max_ejection_percent": 50}


def test_outlier_ejects_failing_target(ficus, mock):
    bad = mock("bad", fail_rate=1.0, fail_status=503)
    good = mock("good")
    f = ficus(config({"g": {"targets": [bad.addr, good.addr], "outlier_detection": OUTLIER}},
                     [route("r", "/", "g")], server=ONE_WORKER))
    statuses = [get(f, f"/{i}")[0].status for i in range(6)]  # 3 each, alternating
    assert statuses.count(503) == 3 and statuses.count(200) == 3, statuses
    assert bad.stats()["total"] == 3
    assert_metric(f, "ficus_outlier_ejections_total", 1, target_group="g", target=bad.addr)
    assert metric(f, "ficus_outlier_ejections_total", target=good.addr) == 0
    t = target_state(f, "g", bad.addr)
    assert t["ejected"] is True and t["ejections"] == 1 and t["ejected_for_ms"] > 0, t
    assert target_state(f, "g", good.addr)["ejected"] is False
    for i in range(10):
        r, _ = get(f, f"/after{i}")
        assert r.status == 200 and r.header("X-Mock-Name") == "good", repr(r)
    assert bad.stats()["total"] == 3  # nothing more went to the ejected target
    assert good.stats()["total"] == 13


def test_outlier_never_ejects_beyond_max_percent(ficus, mock):
    b1 = mock("b1", fail_rate=1.0, fail_status=503)
    b2 = mock("b2", fail_rate=1.0, fail_status=503)
    f = ficus(config({"g": {"targets": [b1.addr, b2.addr], "outlier_detection": OUTLIER}},
                     [route("r", "/", "g")], server=ONE_WORKER))
    n = 10
    for i in range(n):
        assert get(f, f"/{i}")[0].status == 503
    assert_metric(f, "ficus_outlier_ejections_total", 1, target_group="g")
    states = [target_state(f, "g", m.addr)["ejected"] for m in (b1, b2)]
    assert sorted(states) == [False, True], states
    # The first to reach 3 errors is out; the other takes everything after.
    counts = sorted([b1.stats()["total"], b2.stats()["total"]])
    assert counts == [3, n - 3], counts


def test_ejection_lasts_base_times_ejections_then_target_returns(ficus, mock):
    bad = mock("bad", fail_rate=1.0, fail_status=503)
    good = mock("good")
    base_ms = 1000
    f = ficus(config({"g": {"targets": [bad.addr, good.addr], "outlier_detection": {
        "consecutive_errors": 1, "base_ejection_time": f"{base_ms}ms",
        "max_ejection_percent": 50}}}, [route("r", "/", "g")], server=ONE_WORKER))

    def until_bad_answers():
        before = bad.stats()["total"]
        for i in range(4):
            get(f, f"/{i}")
            if bad.stats()["total"] > before:
                return
        raise AssertionError("the target never got traffic back")

    until_bad_answers()
    t = target_state(f, "g", bad.addr)
    assert t["ejected"] and t["ejections"] == 1 and 0 < t["ejected_for_ms"] <= base_ms, t
    assert wait_until(lambda: not target_state(f, "g", bad.addr)["ejected"], scaled(3))
    until_bad_answers()  # back in the rotation once the ejection ran out
    t = target_state(f, "g", bad.addr)
    assert t["ejected"] and t["ejections"] == 2, t
    assert base_ms < t["ejected_for_ms"] <= 2 * base_ms, t  # base x times ejected
    assert_metric(f, "ficus_outlier_ejections_total", 2, target_group="g", target=bad.addr)


# --- 10. circuit breakers -----------------------------------------------------


@pytest.mark.parametrize("limit", ["max_requests", "max_connections"])
def test_circuit_breaker_fails_fast(ficus, mock, limit):
    latency = scaled(1.5)
    slow = mock("slow", latency=f"{int(latency * 1000)}ms")
    f = ficus(config({"g": {"targets": [slow.addr], limit: 2}}, [route("r", "/", "g")]))
    out = concurrent(f, 6)
    ok = [o for o in out if o[0] == 200]
    rejected = [o for o in out if o[0] == 503]
    assert len(ok) + len(rejected) == 6, [o[0] for o in out]
    assert len(ok) >= 2 and rejected, [o[0] for o in out]
    for status, dt, r in rejected:
        body = r.json()
        assert body["error"] == "circuit_open" and limit in body["message"], body
        assert dt < latency / 2, f"503 after {dt:.2f}s: not fast"
    for status, dt, r in ok:
        assert dt >= latency - 0.05, dt
    assert slow.stats()["total"] == len(ok)
    assert_metric(f, "ficus_circuit_breaker_rejections_total", len(rejected), target_group="g",
                  limit=limit)
    lines = log_lines(f, 6)
    assert sum(e["error"] == "circuit_open" for e in lines) == len(rejected), lines
    # Nothing stays held once the requests are done.
    _, tgs = admin(f, "GET", "/target_groups")
    assert tgs["g"]["circuit_breaker"]["requests"] == 0, tgs
    assert tgs["g"]["circuit_breaker"]["pending"] == 0, tgs


# --- 11. weights through the admin API -------------------------------------------


def test_admin_weights_put_get_and_errors(ficus, mock):
    a = mock("a")
    b = mock("b")
    f = ficus(config({"a": a.addr, "b": b.addr}, [route("split", "/", [("a", 50), ("b", 50)])],
                     server=ONE_WORKER))
    assert admin(f, "GET", "/routes/split/weights") == \
        (200, {"route": "split", "weights": {"a": 50, "b": 50}})
    assert metric(f, "ficus_backend_weight", route="split", target_group="a") == 50

    status, body = admin(f, "PUT", "/routes/split/weights", '{"a":0,"b":100}')
    assert (status, body) == (200, {"route": "split", "weights": {"a": 0, "b": 100}})
    for i in range(10):
        r, _ = get(f, f"/{i}")
        assert r.status == 200 and r.header("X-Mock-Name") == "b", repr(r)
    assert a.stats()["total"] == 0 and b.stats()["total"] == 10
    assert metric(f, "ficus_backend_weight", route="split", target_group="a") == 0
    assert metric(f, "ficus_backend_weight", route="split", target_group="b") == 100

    for bad in ['not json', '[1, 2]', '{"c": 10}', '{"a": -1}', '{"a": 0, "b": 0}',
                '{"a": "10"}', '{"a": 1.5}', '']:
        status, body = admin(f, "PUT", "/routes/split/weights", bad)
        assert status == 400, f"PUT {bad!r} answered {status}: {body}"
    # A refused PUT leaves the weights as they were.
    assert admin(f, "GET", "/routes/split/weights")[1]["weights"] == {"a": 0, "b": 100}
    assert admin(f, "GET", "/routes/nosuch/weights")[0] == 404
    assert admin(f, "PUT", "/routes/nosuch/weights", '{"a": 1}')[0] == 404

    # Back to a split: the new table takes effect at once, interleaved.
    assert admin(f, "PUT", "/routes/split/weights", '{"a":1,"b":1}')[0] == 200
    names = [get(f, f"/s{i}")[0].header("X-Mock-Name") for i in range(4)]
    assert sorted(names) == ["a", "a", "b", "b"], names
    assert metric(f, "ficus_backend_weight", route="split", target_group="a") == 1


# --- 12. retry budget ----------------------------------------------------------


@pytest.mark.parametrize("budget", [1, 100])
def test_retry_budget_caps_retries(ficus, mock, budget):
    latency = scaled(0.5)
    m = mock("bad", fail_rate=1.0, fail_status=503, latency=f"{int(latency * 1000)}ms")
    f = ficus(config({"g": m.addr}, [route("r", "/", "g", retries={
        "attempts": 2, "retry_on": ["5xx"], "backoff": "1ms", "budget_percent": budget})],
        server=ONE_WORKER))
    n = 20
    out = concurrent(f, n)
    assert all(o[0] == 503 for o in out), [o[0] for o in out]
    retries = wait_metric(f, "ficus_retries_total", n * 2, route="r", target_group="g")
    if budget == 100:
        assert retries == n * 2  # nothing capped: every request made its 3 tries
    else:
        # Capped well below n * attempts, but the floor of 3 retries in flight
        # always holds: at least 3 requests made all their tries.
        assert 6 <= retries < n * 2, retries
    assert m.stats()["total"] == n + retries
    lines = log_lines(f, n)
    assert sum(e["attempts"] for e in lines) == n + retries, lines
    if budget != 100:
        assert sum(e["attempts"] == 3 for e in lines) >= 3, lines
        assert any(e["attempts"] == 1 for e in lines), lines


# --- where ficus disagrees with the contract -------------------------------------
# Regression tests for bugs this suite found (each failed before its fix).


def test_fallback_not_capped_by_the_retry_budget(ficus, mock):
    # Contract 5: with no retries configured, exactly one fallback try is
    # still made. A slow primary keeps many requests in flight while the
    # canary half fails at once.
    primary = mock("primary", latency=f"{int(scaled(0.5) * 1000)}ms")
    f = ficus(config({"primary": primary.addr, "canary": closed_addr()}, [route("r", "/", [
        {"target_group": "primary", "weight": 50},
        {"target_group": "canary", "weight": 50, "fallback": "primary"}])], server=ONE_WORKER))
    out = concurrent(f, 20)
    assert [o[0] for o in out] == [200] * 20


def test_fallback_when_the_canary_group_has_no_healthy_target(ficus, mock):
    primary = mock("primary")
    canary = closed_addr()
    f = ficus(config({"primary": primary.addr, "canary": {"targets": [canary], "health_check": {
        "interval": "100ms", "timeout": "100ms", "healthy_threshold": 1,
        "unhealthy_threshold": 1}}}, [route("r", "/", [
            {"target_group": "primary", "weight": 90},
            {"target_group": "canary", "weight": 10, "fallback": "primary"}])], server=ONE_WORKER))
    def canary_down():
        return admin(f, "GET", "/target_groups")[1]["canary"]["healthy_targets"] == 0

    assert wait_until(canary_down, scaled(3))
    statuses = [get(f, f"/{i}")[0].status for i in range(20)]
    assert statuses == [200] * 20, statuses


def test_max_connections_not_exhausted_by_idle_connections(ficus, mock):
    m = mock("m")
    f = ficus(config({"g": {"targets": [m.addr], "max_connections": 1}}, [route("r", "/", "g")],
                     server={"workers": 2}))
    # One request at a time never needs more than one upstream connection.
    statuses = [get(f, f"/{i}")[0].status for i in range(20)]
    assert statuses == [200] * 20, statuses


# --- panic mode (panic_threshold) ------------------------------------------------------


def panic_group(mocks, threshold):
    return {"targets": [m.addr for m in mocks], "panic_threshold": threshold,
            "health_check": {"path": "/healthz", "interval": "100ms", "timeout": "200ms",
                             "healthy_threshold": 1, "unhealthy_threshold": 1}}


def test_panic_mode_spreads_over_all_targets(ficus, mock, respawn):
    """Two of three targets fail their checks: below panic_threshold 50 the
    group ignores health (as Envoy) and spreads requests over all three (those
    to the dead ones fail), ficus_panic_mode says so, and it ends when the
    targets come back."""
    ms = [mock(f"p{i}") for i in range(3)]
    f = ficus(config({"g": panic_group(ms, 50)}, [route("r", "/", "g")]))
    for m in ms[:2]:
        m.stop()
    assert wait_until(lambda: metric(f, "ficus_panic_mode", target_group="g") == 1, scaled(5))
    assert wait_until(lambda: "below panic_threshold 50%" in f.stderr, scaled(5)), f.stderr
    statuses = {get(f, f"/{i}")[0].status for i in range(30)}
    assert statuses == {200, 502}, statuses
    for m in ms[:2]:
        respawn(m)
    assert wait_until(lambda: metric(f, "ficus_panic_mode", target_group="g") == 0, scaled(5))
    assert wait_until(lambda: "panic mode over" in f.stderr, scaled(5)), f.stderr
    assert {get(f, f"/b{i}")[0].status for i in range(10)} == {200}


def test_panic_threshold_0_keeps_to_the_healthy(ficus, mock):
    ms = [mock(f"p{i}") for i in range(3)]
    f = ficus(config({"g": panic_group(ms, 0)}, [route("r", "/", "g")]))
    for m in ms[:2]:
        m.stop()
    assert wait_until(lambda: metric(f, "ficus_target_healthy", target_group="g",
                                     target=ms[1].addr) == 0 and
                      metric(f, "ficus_target_healthy", target_group="g",
                             target=ms[0].addr) == 0, scaled(5))
    seen = {get(f, f"/{i}")[0].header("X-Mock-Name") for i in range(30)}
    assert seen == {"p2"}, seen
    assert metric(f, "ficus_panic_mode", target_group="g") == 0
