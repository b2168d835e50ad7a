"""Shadow traffic and response diffing (contract 10.1): a share of a route's
requests copied to another group once the client's body is whole, with
X-Ficus-Shadow: 1, the same request id and trace; the copy never delays,
changes or fails the client's answer; side-effecting methods only when
listed; copies in flight bounded. With `compare`, the copy's answer is
diffed against the client's (status, listed headers, JSON as values with
ignore/unordered pointers) and, with `noise`, differences between two
answers of the old system are learned and not blamed on the new one."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import config, http_request, metric_value, parse_metrics, route, wait_until


class JsonBackend:
    """An HTTP/1.1 server on 127.0.0.1 whose answer the test decides:
    answer(method, path, headers, body) -> (status, body object or bytes,
    extra headers, delay seconds). Every request is recorded."""

    def __init__(self, name, answer=None):
        self.name = name
        self.requests = []
        self.lock = threading.Lock()
        outer = self
        answer = answer or (lambda m, p, h, b: (200, {"name": name, "path": p}, {}, 0))

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    outer.requests.append({"method": self.command, "path": self.path,
                                           "headers": hdrs, "body": body})
                status, out, extra, delay = answer(self.command, self.path, hdrs, body)
                if delay:
                    time.sleep(delay)
                if not isinstance(out, bytes):
                    out = json.dumps(out).encode()
                    extra = {"Content-Type": "application/json", **extra}
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                chunked = extra.get("Transfer-Encoding") == "chunked"
                if not chunked:
                    self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if chunked:
                    for i in range(0, len(out), 7):
                        piece = out[i:i + 7]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _handle

        class S(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a copy ficus stopped waiting for (its timeout, a stop)

        self.srv = S(("127.0.0.1", 0), H)
        self.addr = f"127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, args=(0.05,), daemon=True).start()

    def count(self):
        with self.lock:
            return len(self.requests)

    def seen(self):
        with self.lock:
            return list(self.requests)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def backends(request, *specs):
    out = []
    for name, answer in specs:
        b = JsonBackend(name, answer)
        request.addfinalizer(b.stop)
        out.append(b)
    return out


def shadow_route(shadow, **extra):
    return route("orders", {"path_regex": "/orders/([0-9]+)"}, "old", shadow=shadow, **extra)


def shadow_log(f, n):
    lines = f.wait_access_log(n)
    return [e.get("shadow") for e in lines if e.get("route") == "orders"]


def shadow_counts(f):
    m = parse_metrics(f.metrics_text())
    return {r: metric_value(m, "ficus_shadow_requests_total", route="orders", result=r) or 0
            for r in ("match", "mismatch", "shadow_error", "dropped", "skipped")}


def test_copy_goes_with_shadow_header_same_id_and_rewritten_path(ficus, request):
    old, new = backends(request, ("old", None), ("new", None))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100,
                                    "path": "/v2/orders/$1"})]))
    r = http_request(f.port, "GET", "/orders/42?x=1",
                     headers={"traceparent":
                              "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert r.status == 200 and r.json()["name"] == "old", r
    assert wait_until(lambda: new.count() == 1, 5), "no copy reached the shadow group"
    prim, copy = old.seen()[0], new.seen()[0]
    assert copy["path"] == "/v2/orders/42?x=1"
    assert copy["headers"]["x-ficus-shadow"] == "1"
    assert "x-ficus-shadow" not in prim["headers"]
    assert copy["headers"]["x-request-id"] == prim["headers"]["x-request-id"]
    assert copy["headers"]["x-request-id"] == r.header("X-Request-Id")
    # Same trace, its own span.
    tp_p, tp_c = prim["headers"]["traceparent"], copy["headers"]["traceparent"]
    assert tp_c.split("-")[1] == tp_p.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    # Without compare the log says nothing of a result.
    assert shadow_log(f, 1) == [None]


def test_slow_shadow_adds_no_client_latency(ficus, request):
    old, new = backends(request, ("old", None),
                        ("new", lambda m, p, h, b: (200, {"name": "new"}, {}, 2.0)))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100},
                                   timeout="5s")]))
    t0 = time.monotonic()
    for i in range(3):
        r = http_request(f.port, "GET", f"/orders/{i}")
        assert r.status == 200 and r.json()["name"] == "old"
    # Three sequential answers while every copy sleeps 2 s: none waited for it.
    assert time.monotonic() - t0 < 1.5
    assert wait_until(lambda: new.count() == 3, 5)


def test_shadow_down_never_fails_the_client(ficus, request):
    (old,) = backends(request, ("old", None))
    f = ficus(config({"old": old.addr, "new": "127.0.0.1:1"},
                     [shadow_route({"target_group": "new", "percent": 100,
                                    "compare": {"max_body_size": "64KiB"}})]))
    for i in range(5):
        r = http_request(f.port, "GET", f"/orders/{i}")
        assert r.status == 200 and r.json()["name"] == "old", r
    assert shadow_log(f, 5) == ["error"] * 5
    assert wait_until(lambda: shadow_counts(f)["shadow_error"] == 5, 5), shadow_counts(f)


def test_post_not_copied_unless_listed(ficus, request):
    old, new = backends(request, ("old", None), ("new", None))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100}),
                      route("writes", "/writes/", "old",
                            shadow={"target_group": "new", "percent": 100,
                                    "methods": ["POST"]})]))
    assert http_request(f.port, "POST", "/orders/1", body=b"{}").status == 200
    assert http_request(f.port, "GET", "/orders/2").status == 200
    assert wait_until(lambda: new.count() == 1, 5)
    time.sleep(0.3)
    assert [x["method"] for x in new.seen()] == ["GET"]
    # Listed: the copy carries the whole body.
    body = b'{"qty": 3}' * 100
    assert http_request(f.port, "POST", "/writes/9", body=body).status == 200
    assert wait_until(lambda: new.count() == 2, 5)
    assert new.seen()[1]["method"] == "POST" and new.seen()[1]["body"] == body


def test_percent_by_request_id(ficus, request):
    old, new = backends(request, ("old", None), ("new", None))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 25})],
                     server={"workers": 2}))
    n = 400
    for i in range(n):
        assert http_request(f.port, "GET", f"/orders/{i}").status == 200
    time.sleep(0.5)
    share = new.count() / n
    assert 0.17 <= share <= 0.33, share
    # The same request id is always copied or always not (hash, not dice).
    rid = "fixed-id-123"
    before = new.count()
    for _ in range(5):
        http_request(f.port, "GET", "/orders/1", headers={"X-Request-Id": rid})
    time.sleep(0.3)
    assert new.count() - before in (0, 5)


def test_copies_beyond_max_in_flight_are_dropped_and_counted(ficus, request):
    old, new = backends(request, ("old", None),
                        ("new", lambda m, p, h, b: (200, {}, {}, 1.0)))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100,
                                    "max_in_flight": 2}, timeout="5s")],
                     server={"workers": 2}))
    for i in range(8):
        assert http_request(f.port, "GET", f"/orders/{i}").status == 200
    assert wait_until(lambda: shadow_counts(f)["dropped"] >= 6, 5), shadow_counts(f)
    assert new.count() <= 2


def test_compare_match_with_reordered_keys_and_number_formats(ficus, request):
    old, new = backends(
        request,
        ("old", lambda m, p, h, b: (200, b'{"id": 1, "price": 10, "tags": ["a", "b"]}',
                                    {"Content-Type": "application/json"}, 0)),
        ("new", lambda m, p, h, b: (200, b'{"tags":["a","b"],"price":10.0,"id":1}',
                                    {"Content-Type": "application/json; charset=utf-8"}, 0)))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100, "compare": {}})]))
    for i in range(3):
        assert http_request(f.port, "GET", f"/orders/{i}").status == 200
    assert shadow_log(f, 3) == ["match"] * 3
    assert wait_until(lambda: shadow_counts(f)["match"] == 3, 5), shadow_counts(f)


def test_mismatch_reported_by_pointer_with_ignore_and_unordered(ficus, request):
    def old_answer(m, p, h, b):
        return (200, {"items": [{"sku": "a", "price": 1, "etag": "x1"},
                                {"sku": "b", "price": 2, "etag": "x2"}],
                      "meta": {"generated_at": "t1"}, "ids": [1, 2, 3]}, {}, 0)

    def new_answer(m, p, h, b):
        return (200, {"items": [{"sku": "a", "price": 1, "etag": "y1"},
                                {"sku": "b", "price": 3, "etag": "y2"}],
                      "meta": {"generated_at": "t2"}, "ids": [3, 1, 2]}, {}, 0)

    old, new = backends(request, ("old", old_answer), ("new", new_answer))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100,
                                    "compare": {"ignore": ["/meta/generated_at",
                                                           "/items/*/etag"],
                                                "unordered": ["/ids"]}})]))
    assert http_request(f.port, "GET", "/orders/1").status == 200
    assert shadow_log(f, 1) == ["mismatch"]
    status, _, body = f.admin_get("/routes/orders/shadow")
    assert status == 200, body
    doc = json.loads(body)
    text = json.dumps(doc)
    assert "/items/*/price" in text
    assert "/meta/generated_at" not in text and "etag" not in text and "/ids" not in text


def test_status_and_listed_header_differences(ficus, request):
    old, new = backends(
        request,
        ("old", lambda m, p, h, b: (200, {"ok": True}, {"Cache-Control": "max-age=60"}, 0)),
        ("new", lambda m, p, h, b: (404 if p.endswith("/2") else 200, {"ok": True},
                                    {"Cache-Control": "no-store"}, 0)))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100,
                                    "compare": {"headers": ["cache-control"]}})]))
    assert http_request(f.port, "GET", "/orders/1").status == 200
    assert http_request(f.port, "GET", "/orders/2").status == 200
    assert shadow_log(f, 2) == ["mismatch", "mismatch"]
    _, _, body = f.admin_get("/routes/orders/shadow")
    text = json.dumps(json.loads(body))
    assert "header:cache-control" in text and "status" in text


def test_chunked_and_large_bodies_compared(ficus, request):
    big = {"rows": [{"i": i, "v": "x" * 40} for i in range(4000)]}  # ~230 KiB: thread pool
    old, new = backends(
        request,
        ("old", lambda m, p, h, b: (200, big if p.endswith("/big") else {"a": 1},
                                    {"Transfer-Encoding": "chunked"}, 0)),
        ("new", lambda m, p, h, b: (200, big if p.endswith("/big") else {"a": 1}, {}, 0)))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [route("orders", "/orders/", "old",
                            shadow={"target_group": "new", "percent": 100, "compare": {}})]))
    r = http_request(f.port, "GET", "/orders/small")
    assert r.status == 200 and r.json() == {"a": 1}
    r = http_request(f.port, "GET", "/orders/big")
    assert r.status == 200 and r.json() == big
    assert shadow_log(f, 2) == ["match", "match"]


def test_noise_learned_while_a_real_difference_is_still_found(ficus, request):
    import random

    def old_answer(m, p, h, b):
        return (200, {"id": 7, "served_at": random.random(), "total": 100}, {}, 0)

    def new_answer(m, p, h, b):
        return (200, {"id": 7, "served_at": random.random(), "total": 101}, {}, 0)

    old, new = backends(request, ("old", old_answer), ("new", new_answer))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100,
                                    "compare": {"noise": {"percent": 100}}})]))
    n = 20
    for i in range(n):
        assert http_request(f.port, "GET", f"/orders/{i}").status == 200
    assert wait_until(lambda: len(shadow_log(f, n)) == n, 5)
    # The old system got each request twice (the client's and the noise copy).
    assert wait_until(lambda: old.count() == 2 * n, 5)
    _, _, body = f.admin_get("/routes/orders/shadow")
    doc = json.loads(body)
    text = json.dumps(doc)
    assert "/total" in text
    fields = {x["field"]: x for x in doc["fields"]}
    assert fields["/served_at"]["counted"] is False, fields
    assert fields["/total"]["counted"] is True, fields
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_shadow_field_mismatches_total", route="orders",
                        field="/total") == n
    assert not metric_value(m, "ficus_shadow_field_mismatches_total", route="orders",
                            field="/served_at")


def test_hostile_or_broken_shadow_answers_are_errors_only(ficus, request, raw_backend):
    (old,) = backends(request, ("old", None))
    cases = [
        raw_backend("custom", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),  # cut short
        raw_backend("custom", b"NOT HTTP AT ALL\r\n\r\n"),
        raw_backend("custom", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        raw_backend("custom", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
    ]
    groups = {"old": old.addr}
    routes = []
    for i, c in enumerate(cases):
        groups[f"bad{i}"] = c.addr
        routes.append(route(f"r{i}", f"/r{i}/", "old",
                            shadow={"target_group": f"bad{i}", "percent": 100,
                                    "compare": {}}))
    f = ficus(config(groups, routes))
    for i in range(len(cases)):
        r = http_request(f.port, "GET", f"/r{i}/x")
        assert r.status == 200 and r.json()["name"] == "old", (i, r)
    lines = f.wait_access_log(len(cases))
    assert [e["shadow"] for e in lines] == ["error"] * len(cases), lines


def test_copy_outlives_a_reload_and_a_client_that_left(ficus, request):
    old, new = backends(request, ("old", None),
                        ("new", lambda m, p, h, b: (200, {"name": "old", "path": p}, {}, 1.0)))
    cfg = config({"old": old.addr, "new": new.addr},
                 [shadow_route({"target_group": "new", "percent": 100,
                                "path": "/orders/$1", "compare": {}}, timeout="5s")])
    f = ficus(cfg)
    assert http_request(f.port, "GET", "/orders/1").status == 200
    # A reload while the copy runs: it finishes on the configuration it began with.
    f.write_config(cfg)
    import signal
    f.signal(signal.SIGHUP)
    assert shadow_log(f, 1) == ["match"]
    assert wait_until(lambda: shadow_counts(f)["match"] == 1, 5), shadow_counts(f)
    lines = f.wait_access_log(1)
    assert lines[0]["config"] == "#1"


def test_client_that_leaves_leaves_nothing_to_compare(ficus, request):
    import socket
    old, new = backends(request, ("old", lambda m, p, h, b: (200, {"a": 1}, {}, 1.0)),
                        ("new", None))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [shadow_route({"target_group": "new", "percent": 100, "compare": {}},
                                   timeout="5s")]))
    s = socket.create_connection(("127.0.0.1", f.port))
    s.sendall(b"GET /orders/5 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_until(lambda: new.count() == 1, 5)
    s.close()
    assert wait_until(lambda: shadow_counts(f)["skipped"] == 1, 5), shadow_counts(f)
    lines = f.wait_access_log(1)
    assert lines[0]["status"] == 499 and lines[0]["shadow"] is None, lines


def test_a_request_the_shadow_group_serves_itself_is_not_copied(ficus, request):
    import http.client
    old, new = backends(request, ("old", None), ("new", None))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [route("orders", "/orders/", [("old", 1), ("new", 0)],
                            shadow={"target_group": "new", "percent": 100})]))
    assert http_request(f.port, "GET", "/orders/1").status == 200
    assert wait_until(lambda: new.count() == 1, 5)
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=5)
    c.request("PUT", "/routes/orders/weights", body=b'{"old": 0, "new": 1}')
    assert c.getresponse().status == 200
    for i in range(3):
        assert http_request(f.port, "GET", f"/orders/{i}").json()["name"] == "new"
    time.sleep(0.3)
    assert new.count() == 4 and old.count() == 1


def test_a_body_over_retry_buffer_size_is_not_copied(ficus, request):
    old, new = backends(request, ("old", None), ("new", None))
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [route("writes", "/w/", "old",
                            shadow={"target_group": "new", "percent": 100,
                                    "methods": ["POST"]})],
                     server={"retry_buffer_size": "1KiB"}))
    small, big = b"s" * 500, b"b" * 64 * 1024
    assert http_request(f.port, "POST", "/w/1", body=small).status == 200
    r = http_request(f.port, "POST", "/w/2", body=big)
    assert r.status == 200 and r.json()["path"] == "/w/2"
    assert wait_until(lambda: new.count() == 1, 5)

    def skipped():
        return metric_value(parse_metrics(f.metrics_text()), "ficus_shadow_requests_total",
                            route="writes", result="skipped") or 0

    assert wait_until(lambda: skipped() == 1, 5), skipped()
    time.sleep(0.3)
    assert [x["body"] for x in new.seen()] == [small]


class CaptureBackend:
    """Reads one request's raw bytes (up to the end of a chunked body) and
    answers 200; the bytes are kept as they came on the wire."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.raw = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.settimeout(5)
            data = b""
            try:
                while b"\r\n0\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.raw.append(data)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except OSError:
                pass
            c.close()

    def stop(self):
        self.sock.close()


def test_copy_carries_the_body_as_ficus_framed_it(ficus, request):
    from harness import raw_request
    old, new = CaptureBackend(), CaptureBackend()
    request.addfinalizer(old.stop)
    request.addfinalizer(new.stop)
    f = ficus(config({"old": old.addr, "new": new.addr},
                     [route("w", "/w/", "old",
                            shadow={"target_group": "new", "percent": 100,
                                    "methods": ["POST"]})]))
    # Leading zeros, an extension and a trailer: ficus reads them and writes
    # its own framing, for the copy as for the primary.
    resp, conn = raw_request(f.port, b"POST /w/1 HTTP/1.1\r\nHost: x\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n"
                                     b"003;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
                             method="POST")
    conn.close()
    assert resp.status == 200, resp
    assert wait_until(lambda: len(new.raw) == 1 and len(old.raw) == 1, 5)
    prim, copy = old.raw[0], new.raw[0]
    body = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert prim.endswith(b"\r\n\r\n" + body), prim
    assert copy.endswith(b"\r\n\r\n" + body), copy
    assert copy.startswith(b"POST /w/1 HTTP/1.1\r\nX-Ficus-Shadow: 1\r\n"), copy
    # One framing, CRLF only: no bare LF anywhere in what the copy got.
    assert b"\n" not in copy.replace(b"\r\n", b""), copy
    assert copy.count(b"Transfer-Encoding: chunked") == 1 and b"Content-Length" not in copy
