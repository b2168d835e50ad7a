"""Aggregation routes (contract 8): a route with `aggregate` makes all its
calls at once (each with the route's retries and the client's identity
headers and trace) and answers one JSON object; a failed optional call is
null, named in _errors, with X-Ficus-Partial: true; a failed required call
fails it all with 502/504; aggregate.timeout bounds everything; `extract`
keeps part of a body; `cache_ttl` caches 200 bodies per resolved path with
one upstream call per miss, even for 30 cold requests at once."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import (OtlpReceiver, config, http_request, metric_value, parse_metrics, run_cli,
                     scaled, to_yaml)
from harness.redis import Redis
from harness.tokens import Key, jwks, token


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        b = self.server.backend
        with b.lock:
            b.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in
                                                          self.headers.items()}})
            n = len(b.seen)
        status, body, ctype = b.answer(self.path, n)
        if b.delay:
            time.sleep(b.delay)
        if b.gate is not None:
            b.gate.wait(5)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


class JsonBackend:
    """A backend answering JSON by path; answer(path, n) may be replaced."""

    def __init__(self, doc=None):
        self.doc = doc if doc is not None else {"ok": True}
        self.delay = 0.0
        self.gate = None  # a threading.Event the answer waits for (5 s at most)
        self.lock = threading.Lock()
        self.seen = []
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.backend = self
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, path, n):
        return 200, json.dumps({"path": path, **self.doc}).encode(), "application/json"

    def count(self):
        with self.lock:
            return len(self.seen)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends():
    made = []

    def start(doc=None):
        b = JsonBackend(doc)
        made.append(b)
        return b

    yield start
    for b in made:
        b.stop()


def agg_route(calls, timeout="2s", path="/home", **extra):
    return {"name": "home", "match": {"path": path},
            "aggregate": {"timeout": timeout, "calls": calls}, **extra}


def call(name, group, path, **kw):
    return {"name": name, "target_group": group, "path": path, **kw}


def get(f, path="/home", headers=None, method="GET"):
    return http_request(f.port, method, path, headers=headers or {})


def test_calls_go_at_once_and_compose_one_object(ficus, backends):
    items, reco = backends({"items": [1, 2]}), backends({"reco": ["a"]})
    # items answers only once reco has its request: sequential calls would
    # leave it waiting its 5 s and the aggregation would time out.
    items.gate = threading.Event()
    orig = reco.answer

    def reco_answer(path, n):
        items.gate.set()
        return orig(path, n)
    reco.answer = reco_answer
    f = ficus(config({"items": items.addr, "reco": reco.addr}, [
        agg_route([call("items", "items", "/v1/items/top"),
                   call("reco", "reco", "/v1/reco", required=False)], timeout="3s")]))
    r = get(f)
    assert r.status == 200, r.body
    assert r.header("Content-Type") == "application/json"
    assert r.header("X-Ficus-Partial") is None
    doc = r.json()
    assert list(doc) == ["items", "reco"]
    assert doc["items"] == {"path": "/v1/items/top", "items": [1, 2]}
    assert doc["reco"] == {"path": "/v1/reco", "reco": ["a"]}
    e = f.wait_access_log(1)[-1]
    assert e["route"] == "home" and e["status"] == 200 and e["attempts"] == 2
    assert e["target_group"] is None and e["error"] is None


def test_a_failed_optional_call_is_null_with_its_reason(ficus, backends):
    items, reco = backends({"items": []}), backends()
    reco.answer = lambda path, n: (503, b'{"busy":true}', "application/json")
    f = ficus(config({"items": items.addr, "reco": reco.addr}, [
        agg_route([call("items", "items", "/i"), call("reco", "reco", "/r", required=False)])]))
    r = get(f)
    assert r.status == 200
    assert r.header("X-Ficus-Partial") == "true"
    doc = r.json()
    assert doc["items"]["items"] == [] and doc["reco"] is None
    assert doc["_errors"] == {"reco": "status 503"}


def test_a_failed_required_call_fails_the_answer(ficus, backends, raw_backend):
    items, reco = backends(), backends()
    items.answer = lambda path, n: (500, b"{}", "application/json")
    dead = raw_backend("truncate")  # a body cut short: a reset
    f = ficus(config({"items": items.addr, "reco": reco.addr, "dead": dead.addr}, [
        agg_route([call("items", "items", "/i"), call("reco", "reco", "/r", required=False)]),
        agg_route([call("d", "dead", "/d")], path="/dead") | {"name": "dead"},
    ]))
    r = get(f)
    assert r.status == 502, r.body
    body = r.json()
    assert body["error"] == "bad_gateway"
    assert "required call items failed: status 500" in body["message"]
    r = get(f, "/dead")
    assert r.status == 502 and "required call d failed" in r.json()["message"]
    log = f.wait_access_log(2)
    assert log[0]["error"] == "call_failed"


def test_the_aggregate_timeout_bounds_everything(ficus, backends):
    items, slow = backends({"n": 1}), backends()
    slow.delay = 1.5
    f = ficus(config({"items": items.addr, "slow": slow.addr}, [
        agg_route([call("items", "items", "/i"), call("slow", "slow", "/s", required=False)],
                  timeout="300ms"),
        agg_route([call("slow", "slow", "/s")], timeout="300ms", path="/req") | {"name": "req"},
    ]))
    r = get(f)
    assert r.status == 200 and r.header("X-Ficus-Partial") == "true"
    assert r.json() == {"items": {"path": "/i", "n": 1}, "slow": None,
                        "_errors": {"slow": "timeout"}}
    r = get(f, "/req")
    assert r.status == 504 and r.json()["error"] == "gateway_timeout"
    assert "required call slow failed: timeout" in r.json()["message"]


def test_each_call_has_the_routes_retries(ficus, backends):
    flaky = backends({"ok": 1})
    flaky.answer = lambda path, n: ((503, b"{}", "application/json") if n == 1 else
                                    (200, b'{"ok":1}', "application/json"))
    f = ficus(config({"flaky": flaky.addr}, [
        agg_route([call("f", "flaky", "/f")],
                  retries={"attempts": 2, "retry_on": ["503"], "backoff": "10ms"})]))
    r = get(f)
    assert r.status == 200 and r.json() == {"f": {"ok": 1}}
    assert flaky.count() == 2
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_retries_total", route="home", target_group="flaky") == 1


def test_identity_headers_trace_and_user_go_with_every_call(ficus, backends, tmp_path):
    key = Key("RS256", "k1")
    (tmp_path / "jwks.json").write_text(jwks(key))
    a, b = backends(), backends()
    receiver = OtlpReceiver()
    receiver.start()
    try:
        f = ficus(config({"a": a.addr, "b": b.addr}, [
            agg_route([call("a", "a", "/users/{user}/cart"),
                       call("b", "b", "/reco?user={user}&n=3")],
                      auth={"user": {"provider": "main", "required": True}}),
        ], jwt_providers={"main": {"issuer": "https://id.test", "audiences": ["shop"],
                                   "algorithms": ["RS256"],
                                   "jwks_file": str(tmp_path / "jwks.json"),
                                   "forward_claims": {"sub": "X-User-Id"}}},
            tracing={"otlp_endpoint": receiver.endpoint}))
        tok = token(key, {"sub": "jo e/1", "iss": "https://id.test", "aud": "shop"})
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        r = get(f, headers={"Authorization": f"Bearer {tok}", "X-Request-Id": "agg-1",
                            "Accept-Encoding": "gzip",
                            "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
        assert r.status == 200, r.body
        doc = r.json()
        assert doc["a"]["path"] == "/users/jo%20e%2F1/cart"
        assert doc["b"]["path"] == "/reco?user=jo%20e%2F1&n=3"
        sent = set()
        for be in (a, b):
            h = be.seen[0]["headers"]
            assert h["x-request-id"] == "agg-1"
            assert h["x-user-id"] == "jo e/1"
            assert h["authorization"] == f"Bearer {tok}"
            assert "accept-encoding" not in h, "call bodies are read as JSON"
            assert 0 < int(h["x-request-timeout-ms"]) <= 2000
            tp = h["traceparent"].split("-")
            assert tp[1] == trace_id
            sent.add(tp[2])
        spans = receiver.wait_for_spans(3, scaled(5))
        server, = [s for s in spans if s["kind"] == 2]
        clients = [s for s in spans if s["kind"] == 3]
        assert {c["attrs"]["ficus.target_group"] for c in clients} == {"a", "b"}
        for c in clients:
            assert c["parentSpanId"] == server["spanId"]
        assert {c["spanId"] for c in clients} == sent, "each call carries its own span id"
    finally:
        receiver.stop()


def test_extract_keeps_part_of_a_body(ficus, backends):
    cat = backends({"data": {"items": [{"id": 7}], "total": 1}, "meta": {"v": 2}})
    f = ficus(config({"cat": cat.addr}, [
        agg_route([call("items", "cat", "/c", extract="/data/items"),
                   call("missing", "cat", "/c", extract="/nope", required=False)])]))
    r = get(f)
    assert r.status == 200
    doc = r.json()
    assert doc["items"] == [{"id": 7}]
    assert doc["missing"] is None
    assert doc["_errors"]["missing"] == "no value at the extract pointer"


def test_bodies_that_are_not_json_or_too_large_are_call_failures(ficus, backends):
    html, big, ok = backends(), backends(), backends({"fine": True})
    html.answer = lambda path, n: (200, b"<html>oops</html>", "text/html")
    big.answer = lambda path, n: (200, b'{"x":"' + b"a" * 5000 + b'"}', "application/json")
    f = ficus(config({"html": html.addr, "big": big.addr, "ok": ok.addr}, [
        {"name": "home", "match": {"path": "/home"},
         "aggregate": {"timeout": "2s", "max_body_size": "4KiB", "calls": [
             call("h", "html", "/", required=False), call("b", "big", "/", required=False),
             call("ok", "ok", "/")]}}]))
    r = get(f)
    assert r.status == 200, r.body
    doc = r.json()  # always a well-formed object
    assert doc["h"] is None and doc["b"] is None and doc["ok"]["fine"] is True
    assert doc["_errors"]["h"] == "the body is not JSON"
    assert doc["_errors"]["b"].startswith("the body is larger than")


def test_head_and_other_methods(ficus, backends):
    a = backends()
    f = ficus(config({"a": a.addr}, [agg_route([call("a", "a", "/a")])]))
    g = get(f)
    h = get(f, method="HEAD")
    assert h.status == 200 and h.body == b""
    assert h.header("Content-Length") == g.header("Content-Length")
    r = http_request(f.port, "POST", "/home", body=b"{}")
    assert r.status == 405 and r.json()["error"] == "method_not_allowed"


def test_cached_calls_cost_one_upstream_call_per_path(ficus, backends):
    reco, items = backends({"r": 1}), backends({"i": 1})
    f = ficus(config({"reco": reco.addr, "items": items.addr}, [
        agg_route([call("items", "items", "/i"),
                   call("reco", "reco", "/reco/all", cache_ttl="10s", required=False)],
                  path="/home"),
        agg_route([call("reco", "reco", "/reco/x", cache_ttl="300ms")], path="/short")
        | {"name": "short"},
    ]))
    for _ in range(5):
        assert get(f, "/short").status == 200
    assert reco.count() == 1
    time.sleep(0.5)  # the entry expires
    assert get(f, "/short").json() == {"reco": {"path": "/reco/x", "r": 1}}
    assert reco.count() == 2


def test_thirty_cold_requests_share_one_upstream_call(ficus, backends):
    reco = backends({"r": 1})
    reco.delay = 0.3
    f = ficus(config({"reco": reco.addr}, [
        agg_route([call("reco", "reco", "/reco", cache_ttl="30s")], timeout="5s")],
        server={"workers": 2}))
    with ThreadPoolExecutor(30) as ex:
        got = list(ex.map(lambda i: get(f), range(30)))
    assert all(r.status == 200 and r.json()["reco"]["r"] == 1 for r in got)
    assert reco.count() == 1, "one upstream call for 30 concurrent misses"
    m = parse_metrics(f.metrics_text())
    lookups = {r: metric_value(m, "ficus_aggregate_cache_lookups_total", result=r) or 0
               for r in ("hit", "miss", "shared")}
    assert lookups["miss"] == 1 and lookups["hit"] + lookups["shared"] == 29, lookups


def test_bad_aggregate_blocks_are_refused_with_their_place(tmp_path, backends):
    a = backends()
    bad = [
        ({"name": "x", "match": {"path": "/x"}, "backends": [{"target_group": "a", "weight": 1}],
          "aggregate": {"calls": [call("a", "a", "/a")]}}, "not both"),
        (agg_route([call("a", "nope", "/a")]), "nope"),
        (agg_route([call("a", "a", "/u/{user}")]), "{user}"),
        (agg_route([call("a", "a", "/a", extract="no-slash")]), "extract"),
    ]
    for r, needle in bad:
        p = tmp_path / "c.yaml"
        p.write_text(to_yaml(config({"a": a.addr}, [r])))
        res = run_cli(["check", "-c", str(p)])
        assert res.returncode == 1, (r, res.stdout, res.stderr)
        assert needle in res.stderr and "c.yaml:" in res.stderr, res.stderr


def fleet_config(reco_addr, redis_addr, ttl="30s"):
    return config({"reco": reco_addr}, [
        agg_route([call("reco", "reco", "/reco", cache_ttl=ttl)], timeout="5s")],
        redis={"address": redis_addr}, aggregate_cache={"scope": "redis"})


def test_two_instances_share_one_cache_through_redis(ficus, backends):
    r = Redis()
    try:
        reco = backends({"r": 1})
        reco.delay = 0.3
        a = ficus(fleet_config(reco.addr, r.addr))
        b = ficus(fleet_config(reco.addr, r.addr))
        # Cold, at once on both instances: one upstream call for the fleet.
        with ThreadPoolExecutor(20) as ex:
            got = list(ex.map(lambda i: get(a if i % 2 else b), range(20)))
        assert all(x.status == 200 and x.json()["reco"]["r"] == 1 for x in got), got[0].body
        assert reco.count() == 1, "one upstream call fleet-wide per miss"
        assert get(b).json() == get(a).json() == {"reco": {"path": "/reco", "r": 1}}
        assert reco.count() == 1
        assert b'"r": 1' in r.command("GET", "ficus:agg:reco /reco")
        lookups = {}
        for f in (a, b):
            m = parse_metrics(f.metrics_text())
            for res in ("hit", "miss", "shared"):
                lookups[res] = lookups.get(res, 0) + (metric_value(
                    m, "ficus_aggregate_cache_lookups_total", result=res) or 0)
        assert lookups["miss"] == 1 and lookups["hit"] + lookups["shared"] == 21, lookups
    finally:
        r.stop()


def test_with_redis_down_the_instance_cache_serves_and_it_is_counted(ficus, backends):
    r = Redis()
    reco = backends({"r": 2})
    f = ficus(fleet_config(reco.addr, r.addr))
    r.stop()
    for _ in range(5):
        x = get(f)
        assert x.status == 200 and x.json() == {"reco": {"path": "/reco", "r": 2}}
    assert reco.count() == 1, "the instance's cache served"
    m = parse_metrics(f.metrics_text())
    # The miss could not ask the fleet (counted); the instance's cache
    # served the rest.
    assert metric_value(m, "ficus_aggregate_cache_lookups_total", result="redis_unavailable") == 1
    assert metric_value(m, "ficus_aggregate_cache_lookups_total", result="hit") == 4
    assert (metric_value(m, "ficus_redis_errors_total") or 0) >= 1


def test_the_fleet_cache_needs_redis(tmp_path, backends):
    a = backends()
    p = tmp_path / "c.yaml"
    p.write_text(to_yaml(config({"a": a.addr}, [agg_route([call("a", "a", "/a")])],
                                aggregate_cache={"scope": "redis"})))
    res = run_cli(["check", "-c", str(p)])
    assert res.returncode == 1 and "set redis.address" in res.stderr, res.stderr


def test_a_client_gone_mid_aggregation_leaves_nothing_behind(ficus, backends):
    slow, fast = backends({"s": 1}), backends({"f": 1})
    slow.delay = 0.5
    f = ficus(config({"slow": slow.addr, "fast": fast.addr}, [
        agg_route([call("s", "slow", "/s", cache_ttl="10s"), call("f", "fast", "/f")])]))
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", f.port), timeout=5)
        s.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        s.close()
    log = f.wait_access_log(3)
    assert [e["status"] for e in log] == [499, 499, 499]
    # The abandoned fetch of the cached call was let go: the next request
    # makes its own, and everything answers.
    slow.delay = 0
    r = get(f)
    assert r.status == 200 and r.json() == {"s": {"path": "/s", "s": 1},
                                            "f": {"path": "/f", "f": 1}}


def test_when_the_shared_fetch_fails_each_waiter_calls_itself(ficus, backends):
    flaky = backends({"ok": 1})
    flaky.delay = 0.3

    def answer(path, n):
        if n == 1:
            return 500, b"{}", "application/json"
        return 200, b'{"ok":1}', "application/json"
    flaky.answer = answer
    f = ficus(config({"flaky": flaky.addr}, [
        agg_route([call("c", "flaky", "/c", cache_ttl="10s", required=False)], timeout="5s")],
        server={"workers": 2}))
    with ThreadPoolExecutor(6) as ex:
        got = list(ex.map(lambda i: get(f), range(6)))
    bodies = [r.json() for r in got]
    assert sum(1 for b in bodies if b.get("_errors") == {"c": "status 500"}) == 1, bodies
    assert sum(1 for b in bodies if b["c"] == {"ok": 1}) == 5, bodies
    assert flaky.count() >= 2


def test_user_needed_but_not_signed_in(ficus, backends, tmp_path):
    key = Key("RS256", "k1")
    (tmp_path / "jwks.json").write_text(jwks(key))
    a, b = backends({"a": 1}), backends({"b": 1})
    f = ficus(config({"a": a.addr, "b": b.addr}, [
        agg_route([call("a", "a", "/a"), call("mine", "b", "/u/{user}", required=False)],
                  auth={"user": {"provider": "main"}})],
        jwt_providers={"main": {"issuer": "https://id.test", "audiences": ["shop"],
                                "algorithms": ["RS256"],
                                "jwks_file": str(tmp_path / "jwks.json")}}))
    r = get(f)
    assert r.status == 200
    assert r.json() == {"a": {"path": "/a", "a": 1}, "mine": None,
                        "_errors": {"mine": "no authenticated user for {user}"}}
    assert b.count() == 0


def test_a_large_answer_to_a_slow_reader(ficus, backends):
    # Answers bigger than the socket takes at once: the rest goes as the
    # client drains it, and a pipelined request waits its turn.
    big = [backends({"blob": "x" * 900_000, "i": i}) for i in range(3)]
    f = ficus(config({f"g{i}": b.addr for i, b in enumerate(big)}, [
        {"name": "home", "match": {"path": "/home"},
         "aggregate": {"timeout": "5s", "max_body_size": "2MiB",
                       "calls": [call(f"c{i}", f"g{i}", "/b") for i in range(3)]}}]))
    s = socket.create_connection(("127.0.0.1", f.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\n\r\nGET /home HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # ficus fills the socket and waits for it to drain
    data = b""
    deadline = time.monotonic() + scaled(60)
    while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}}"):
        assert time.monotonic() < deadline, len(data)
        chunk = s.recv(1 << 20)
        assert chunk, len(data)
        data += chunk
    s.close()
    first, second = data.split(b"HTTP/1.1 200 OK")[1:]
    for part in (first, second):
        head, body = part.split(b"\r\n\r\n", 1)
        n = int([ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")][0]
                .split(b":")[1])
        doc = json.loads(body[:n])
        assert [doc[f"c{i}"]["i"] for i in range(3)] == [0, 1, 2]
        assert len(doc["c2"]["blob"]) == 900_000


def test_a_large_body_is_shared_through_redis_too(ficus, backends):
    r = Redis()
    try:
        reco = backends({"blob": "y" * 200_000})
        a = ficus(fleet_config(reco.addr, r.addr))
        b = ficus(fleet_config(reco.addr, r.addr))
        first, second = get(a), get(b)
        assert first.status == second.status == 200
        assert first.json() == second.json()
        assert len(second.json()["reco"]["blob"]) == 200_000
        assert reco.count() == 1, "the second instance read it from redis"
    finally:
        r.stop()
