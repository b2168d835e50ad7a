"""Proxying (contract section 3): methods and bodies both ways, keep-alive,
pipelining, HTTP/1.0, HEAD and bodiless statuses, the headers ficus adds,
keeps and strips in each direction, and upstream failures (502/504, a
response cut short)."""

import hashlib
import json
import re
import subprocess
import time

import pytest

from harness import (
    RawConn,
    config,
    echo_header,
    free_port,
    http_request,
    pattern_bytes,
    route,
    scaled,
)

SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
HOP_BY_HOP = ["connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection",
              "transfer-encoding"]


def start_echo(ficus, echo_backend, **route_extra):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr}, [route("main", "/", "echo", **route_extra)]))
    return f, echo


def assert_serves(f, path="/still-alive"):
    assert f.alive(), f"ficus exited ({f.proc.returncode}); stderr:\n{f.stderr[-2000:]}"
    r = http_request(f.port, "GET", path)
    assert r.status == 200, f"GET {path} after the previous test step: {r!r}"


def assert_json_error(r, status):
    assert r.status == status, repr(r)
    body = r.json()
    assert {"error", "message", "request_id"} <= set(body), repr(r)
    assert body["request_id"] == r.header("X-Request-Id"), repr(r)
    return body


# --- methods and bodies -------------------------------------------------------


def test_get_reaches_upstream_with_path_and_query(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    r = http_request(f.port, "GET", "/hello/world?x=1&y=%20z")
    assert r.status == 200, repr(r)
    assert r.header("X-Echo-Name") == "e1", repr(r)
    seen = r.json()
    assert seen["method"] == "GET"
    assert seen["path"] == "/hello/world?x=1&y=%20z"
    assert seen["version"] == "HTTP/1.1"


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_content_length_body_arrives_intact(ficus, echo_backend, method):
    f, _ = start_echo(ficus, echo_backend)
    body = pattern_bytes(100_000)
    r = http_request(f.port, method, "/upload", body=body,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, repr(r)
    seen = r.json()
    assert seen["method"] == method
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def _chunked(data, sizes):
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        piece = data[i : i + n]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        i += n
        k += 1
    out.append(b"0\r\n\r\n")
    return b"".join(out)


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_small_chunked_body_arrives_intact(ficus, echo_backend, method):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send(f"{method} /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    seen = r.json()
    assert seen["method"] == method
    assert seen["body_len"] == 11
    assert seen["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()


def test_1mib_chunked_upload_arrives_intact(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    data = pattern_bytes(1 << 20)
    with RawConn(f.port, timeout=20) as c:
        c.send(b"POST /big-upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/octet-stream\r\n\r\n"
               + _chunked(data, [1, 8191, 65536, 1000, 33333, 70000]))
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    seen = r.json()
    assert seen["body_len"] == len(data), seen
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_5mib_response_streams_intact(ficus, echo_backend, chunked):
    f, _ = start_echo(ficus, echo_backend)
    size = 5 << 20
    headers = {"X-Echo-Size": str(size)}
    if chunked:
        headers["X-Echo-Chunked"] = "1"
    r = http_request(f.port, "GET", "/big", headers=headers, timeout=30)
    assert r.status == 200, repr(r)
    assert len(r.body) == size
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(pattern_bytes(size)).hexdigest()


# --- connections ----------------------------------------------------------------


def test_keepalive_serves_several_requests_on_one_socket(ficus, echo_backend):
    import http.client

    f, _ = start_echo(ficus, echo_backend)
    conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=scaled(5))
    try:
        socks, local_ports = set(), set()
        for i in range(5):
            r = http_request(f.port, "GET", f"/ka/{i}", conn=conn)
            assert r.status == 200, repr(r)
            assert r.json()["path"] == f"/ka/{i}"
            # http.client reconnects silently when the server closed: the
            # socket object and local port tell us whether it had to.
            assert conn.sock is not None, f"ficus closed the connection after request {i}: {r!r}"
            socks.add(id(conn.sock))
            local_ports.add(conn.sock.getsockname()[1])
        assert len(socks) == 1 and len(local_ports) == 1
    finally:
        conn.close()


def test_pipelined_requests_answered_in_order(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send("".join(f"GET /pipe/{i} HTTP/1.1\r\nHost: t\r\n\r\n" for i in range(1, 4)))
        paths = []
        for _ in range(3):
            r = c.read_final_response()
            assert r.status == 200, f"response {len(paths) + 1} of 3: {r!r}"
            paths.append(r.json()["path"])
    assert paths == ["/pipe/1", "/pipe/2", "/pipe/3"]


def test_pipelined_post_bodies_and_gets_in_order(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send("POST /p/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
               "GET /p/2 HTTP/1.1\r\nHost: t\r\n\r\n"
               "POST /p/3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n")
        got = []
        for _ in range(3):
            r = c.read_final_response()
            assert r.status == 200, f"response {len(got) + 1} of 3: {r!r}"
            got.append(r.json())
    assert [(s["path"], s["body_len"]) for s in got] == [("/p/1", 3), ("/p/2", 0), ("/p/3", 2)]


def test_deep_pipeline_answered_in_order(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    n = 50
    with RawConn(f.port, timeout=10) as c:
        c.send("".join(f"GET /deep/{i} HTTP/1.1\r\nHost: t\r\n\r\n" for i in range(n)))
        paths = []
        for _ in range(n):
            r = c.read_final_response()
            assert r.status == 200, f"response {len(paths) + 1} of {n}: {r!r}"
            paths.append(r.json()["path"])
    assert paths == [f"/deep/{i}" for i in range(n)]


def test_pipelined_slow_then_fast_keeps_order(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port, timeout=10) as c:
        c.send("GET /slow HTTP/1.1\r\nHost: t\r\nX-Echo-Delay: 0.5\r\n\r\n"
               "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        first, second = c.read_final_response(), c.read_final_response()
    assert (first.status, second.status) == (200, 200), (first, second)
    assert [first.json()["path"], second.json()["path"]] == ["/slow", "/fast"]


def test_connection_close_request_closes_after_response(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send("GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        r = c.read_final_response()
        assert r.status == 200, repr(r)
        assert c.closed_within(3), "Connection: close: ficus kept the connection open"


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_reader_does_not_make_ficus_buffer_the_response(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    size = 64 << 20
    expected = hashlib.sha256(pattern_bytes(size)).hexdigest()
    with RawConn(f.port, timeout=30) as c:
        c.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
        before = rss_bytes(f.pid)
        c.send(f"GET /huge HTTP/1.1\r\nHost: t\r\nX-Echo-Size: {size}\r\n\r\n")
        time.sleep(1.5)  # not reading: only backpressure keeps ficus from buffering it all
        grown = rss_bytes(f.pid) - before
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    assert hashlib.sha256(r.body).hexdigest() == expected
    assert grown < 24 << 20, f"ficus grew by {grown >> 20} MiB while the client read nothing"


def test_http10_request_gets_response_then_close(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send("GET /ten HTTP/1.0\r\nHost: t\r\n\r\n")
        r = c.read_final_response()
        assert r.status == 200, repr(r)
        assert r.json()["path"] == "/ten"
        assert c.closed_within(3), "HTTP/1.0 without keep-alive: ficus kept the connection open"


def test_http10_keepalive_keeps_connection(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        for i in range(2):
            c.send(f"GET /ten-ka/{i} HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_final_response()
            assert r.status == 200, repr(r)
            assert "chunked" not in (r.header("Transfer-Encoding") or "").lower(), repr(r)
            assert r.header("Content-Length") is not None, \
                f"a kept-alive HTTP/1.0 response needs Content-Length: {r!r}"
            assert r.json()["path"] == f"/ten-ka/{i}"


def test_http10_client_never_gets_chunked_encoding(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    size = 100_000
    with RawConn(f.port) as c:
        c.send(f"GET /ten-chunked HTTP/1.0\r\nHost: t\r\nX-Echo-Size: {size}\r\n"
               "X-Echo-Chunked: 1\r\n\r\n")
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    assert "chunked" not in (r.header("Transfer-Encoding") or "").lower(), repr(r)
    assert r.body == pattern_bytes(size)


def test_head_has_no_body_and_connection_stays_usable(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        # Any body bytes after the HEAD response would corrupt the next one.
        c.send("HEAD /head HTTP/1.1\r\nHost: t\r\n\r\nGET /after-head HTTP/1.1\r\nHost: t\r\n\r\n")
        h = c.read_final_response("HEAD")
        assert h.status == 200, repr(h)
        g = c.read_final_response()
    assert g.status == 200, repr(g)
    assert g.json()["path"] == "/after-head"
    assert g.json()["method"] == "GET"


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_upstream_status_has_no_body(ficus, echo_backend, status):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send(f"GET /nobody HTTP/1.1\r\nHost: t\r\nX-Echo-Status: {status}\r\n\r\n"
               "GET /after HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_final_response()
        assert r.status == status, repr(r)
        assert not r.has_header("Transfer-Encoding"), repr(r)
        assert (r.header("Content-Length") or "0") == "0" or status == 304, repr(r)
        nxt = c.read_final_response()
    assert nxt.status == 200, repr(nxt)
    assert nxt.json()["path"] == "/after"


def test_expect_100_continue_body_arrives(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send("POST /expect HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
               "Expect: 100-continue\r\n\r\n")
        # A client sends the body after a 100 or after waiting a while (curl: 1s).
        c.closed_within(1.0)
        assert not c.eof, "ficus closed the connection on Expect: 100-continue"
        if c.buf.startswith(b"HTTP/1.1 100"):
            interim = c.read_response()
            assert interim.status == 100, repr(interim)
        else:
            assert c.buf == b"", f"final answer before the body was sent: {c.buf[:300]!r}"
        c.send("0123456789")
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    assert r.json()["body_len"] == 10


def test_close_delimited_upstream_body_reaches_http11_client(ficus, echo_backend, raw_backend):
    echo = echo_backend("e1")
    up = raw_backend("close_delimited")
    f = ficus(config({"echo": echo.addr, "up": up.addr},
                     [route("cd", "/cd", "up"), route("main", "/", "echo")]))
    with RawConn(f.port, timeout=10) as c:
        c.send("GET /cd HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    assert r.body == up.CLOSE_BODY, f"got {len(r.body)} of {len(up.CLOSE_BODY)} bytes"
    assert_serves(f)


def test_upstream_connections_are_reused(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr}, [route("main", "/", "echo")], server={"workers": 1}))
    ports = set()
    for i in range(5):
        r = http_request(f.port, "GET", f"/reuse/{i}")
        assert r.status == 200, repr(r)
        ports.add(r.json()["peer_port"])
    assert len(ports) == 1, f"5 sequential requests used {len(ports)} upstream connections"


def test_upstream_closing_after_each_response_is_not_an_error(ficus, echo_backend):
    f, echo = start_echo(ficus, echo_backend)
    for i in range(5):
        r = http_request(f.port, "GET", f"/close/{i}", headers={"X-Echo-Close": "1"})
        assert r.status == 200, f"request {i}: {r!r}"
        assert r.json()["path"] == f"/close/{i}"
    assert echo.count() == 5


def test_stale_pooled_upstream_connection_is_not_a_502(ficus, nginx):
    # nginx drops idle keep-alive connections after 300 ms; ficus must not
    # hand a request to a connection the upstream already closed.
    n = nginx("up", keepalive_timeout="300ms")
    f = ficus(config({"up": n.addr}, [route("main", "/", "up")], server={"workers": 1}))
    for i in range(4):
        r = http_request(f.port, "GET", f"/stale/{i}")
        assert r.status == 200, f"request {i} (after {0.6 * i:.1f}s of idle pool): {r!r}"
        time.sleep(0.6)


def test_several_listeners(ficus, echo_backend):
    echo = echo_backend("e1")
    ports = [free_port(), free_port()]
    f = ficus(config({"echo": echo.addr}, [route("main", "/", "echo")],
                     server={"listen": [f"127.0.0.1:{p}" for p in ports]}))
    assert f.port == ports[0]
    for port in ports:
        r = http_request(port, "GET", "/multi")
        assert r.status == 200, f"listener {port}: {r!r}"


# --- headers sent upstream --------------------------------------------------------


def test_hop_by_hop_request_headers_are_removed(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send("GET /hop HTTP/1.1\r\nHost: t\r\n"
               "Connection: keep-alive, X-Custom-Hop\r\n"
               "X-Custom-Hop: must-not-pass\r\n"
               "Keep-Alive: timeout=5\r\n"
               "TE: trailers\r\n"
               "Trailer: X-Foo\r\n"
               "Upgrade: h2c\r\n"
               "Proxy-Connection: keep-alive\r\n"
               "X-End-To-End: kept\r\n\r\n")
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    seen = r.json()
    names = {k.lower() for k, _ in seen["headers"]}
    for h in ["keep-alive", "te", "trailer", "upgrade", "proxy-connection", "x-custom-hop"]:
        assert h not in names, f"{h} reached upstream: {seen['headers']}"
    for v in echo_header(seen, "Connection"):
        tokens = {t.strip().lower() for t in v.split(",")}
        assert tokens <= {"keep-alive", "close"}, f"client's Connection passed through: {v!r}"
    assert echo_header(seen, "X-End-To-End") == ["kept"]


@pytest.mark.parametrize("sent,expected", [
    (None, "127.0.0.1"),
    ("1.2.3.4", "1.2.3.4, 127.0.0.1"),
    ("10.0.0.1, 1.2.3.4", "10.0.0.1, 1.2.3.4, 127.0.0.1"),
])
def test_x_forwarded_for_appended(ficus, echo_backend, sent, expected):
    f, _ = start_echo(ficus, echo_backend)
    headers = {"X-Forwarded-For": sent} if sent else {}
    r = http_request(f.port, "GET", "/xff", headers=headers)
    assert r.status == 200, repr(r)
    got = ", ".join(echo_header(r.json(), "X-Forwarded-For"))
    assert got == expected


def test_x_forwarded_proto_and_host(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    r = http_request(f.port, "GET", "/xf", headers={"Host": "front.example.com",
                                                      "X-Forwarded-Proto": "https",
                                                      "X-Forwarded-Host": "spoofed.example"})
    assert r.status == 200, repr(r)
    seen = r.json()
    assert echo_header(seen, "X-Forwarded-Proto") == ["http"], seen["headers"]
    assert echo_header(seen, "X-Forwarded-Host") == ["front.example.com"], seen["headers"]


@pytest.mark.parametrize("rid", ["abc", "req-ABC_123.x:y", "a" * 128, "0"])
def test_sane_request_id_is_kept(ficus, echo_backend, rid):
    f, _ = start_echo(ficus, echo_backend)
    r = http_request(f.port, "GET", "/rid", headers={"X-Request-Id": rid})
    assert r.status == 200, repr(r)
    assert echo_header(r.json(), "X-Request-Id") == [rid]
    assert r.header("X-Request-Id") == rid, repr(r)


@pytest.mark.parametrize("rid", ["a" * 129, "bad id", "abc/def", "id;drop", "ä-umlaut", ""],
                         ids=["too-long", "space", "slash", "semicolon", "non-ascii", "empty"])
def test_insane_request_id_is_replaced(ficus, echo_backend, rid):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send(b"GET /rid HTTP/1.1\r\nHost: t\r\nX-Request-Id: " + rid.encode() + b"\r\n\r\n")
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    upstream = echo_header(r.json(), "X-Request-Id")
    assert len(upstream) == 1, f"upstream saw X-Request-Id {upstream}"
    assert upstream[0] != rid
    assert SANE_ID.match(upstream[0]), upstream
    assert r.header("X-Request-Id") == upstream[0], repr(r)


def test_request_id_generated_when_absent_and_unique(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    ids = set()
    for _ in range(5):
        r = http_request(f.port, "GET", "/rid-new")
        upstream = echo_header(r.json(), "X-Request-Id")
        assert len(upstream) == 1 and SANE_ID.match(upstream[0]), upstream
        assert r.header("X-Request-Id") == upstream[0], repr(r)
        ids.add(upstream[0])
    assert len(ids) == 5, f"request ids repeat: {ids}"


def test_api_key_and_client_id_are_removed(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    r = http_request(f.port, "GET", "/secret", headers={"X-Api-Key": "k-123",
                                                        "X-Client-Id": "forged-client"})
    assert r.status == 200, repr(r)
    names = {k.lower() for k, _ in r.json()["headers"]}
    assert "x-api-key" not in names
    assert "x-client-id" not in names


def test_route_request_headers_set_and_remove(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend, request_headers={
        "set": {"X-From": "ficus", "X-Added": "yes"}, "remove": ["X-Internal"]})
    r = http_request(f.port, "GET", "/rh", headers={"X-From": "client", "X-Internal": "secret",
                                                     "X-Other": "kept"})
    assert r.status == 200, repr(r)
    seen = r.json()
    assert echo_header(seen, "X-From") == ["ficus"], seen["headers"]
    assert echo_header(seen, "X-Added") == ["yes"], seen["headers"]
    assert echo_header(seen, "X-Internal") == [], seen["headers"]
    assert echo_header(seen, "X-Other") == ["kept"], seen["headers"]


# --- response headers ---------------------------------------------------------------


def test_hop_by_hop_response_headers_are_removed(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    r = http_request(f.port, "GET", "/hop-resp", headers={"X-Echo-Hop": "1"})
    assert r.status == 200, repr(r)
    assert r.header("X-Echo-Name") == "e1", repr(r)
    for h in ["X-Up-Hop", "Keep-Alive", "Proxy-Connection", "Trailer", "Upgrade"]:
        assert not r.has_header(h), f"{h} from upstream reached the client: {r!r}"
    for v in r.header_all("Connection"):
        tokens = {t.strip().lower() for t in v.split(",")}
        assert tokens <= {"keep-alive", "close"}, f"upstream's Connection passed through: {r!r}"


def test_request_id_on_proxied_and_error_responses(ficus, echo_backend):
    echo = echo_backend("e1")
    dead = f"127.0.0.1:{free_port()}"
    f = ficus(config({"echo": echo.addr, "dead": dead},
                     [route("ok", {"path": "/ok"}, "echo"),
                      route("dead", {"path": "/dead"}, "dead")]))
    ok = http_request(f.port, "GET", "/ok", headers={"X-Request-Id": "given-1"})
    assert ok.header("X-Request-Id") == "given-1", repr(ok)
    nf = http_request(f.port, "GET", "/nowhere")
    assert nf.status == 404 and SANE_ID.match(nf.header("X-Request-Id") or ""), repr(nf)
    nf2 = http_request(f.port, "GET", "/nowhere", headers={"X-Request-Id": "given-2"})
    assert nf2.header("X-Request-Id") == "given-2", repr(nf2)
    bad = http_request(f.port, "GET", "/dead")
    assert bad.status == 502 and SANE_ID.match(bad.header("X-Request-Id") or ""), repr(bad)
    with RawConn(f.port) as c:
        c.send("GET /a b HTTP/1.1\r\nHost: t\r\n\r\n")
        r400 = c.read_final_response()
    assert r400.status == 400 and SANE_ID.match(r400.header("X-Request-Id") or ""), repr(r400)


# --- upstream failures ----------------------------------------------------------------


def failure_config(echo, bad_addr, **bad_route):
    return config({"echo": echo.addr, "bad": bad_addr},
                  [route("bad", "/bad", "bad", **bad_route), route("main", "/", "echo")])


def test_connect_refused_gives_502_json(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(failure_config(echo, f"127.0.0.1:{free_port()}"))
    r = http_request(f.port, "GET", "/bad/x")
    assert_json_error(r, 502)
    assert "json" in (r.header("Content-Type") or ""), repr(r)
    assert_serves(f)


def test_upstream_never_answering_gives_504_after_route_timeout(ficus, echo_backend, raw_backend):
    echo = echo_backend("e1")
    hang = raw_backend("hang")
    f = ficus(failure_config(echo, hang.addr, timeout="1s"))
    r = http_request(f.port, "GET", "/bad/slow", timeout=10)
    assert_json_error(r, 504)
    assert hang.accepted >= 1
    assert_serves(f)


def test_mock_latency_below_timeout_gives_200(ficus, echo_backend, mock):
    echo = echo_backend("e1")
    m = mock("slowish", latency="200ms")
    f = ficus(failure_config(echo, m.addr, timeout="2s"))
    r = http_request(f.port, "GET", "/bad/latency", timeout=10)
    assert r.status == 200, repr(r)
    assert r.header("X-Mock-Name") == "slowish", repr(r)


def test_upstream_closing_mid_response_closes_client(ficus, echo_backend, raw_backend):
    echo = echo_backend("e1")
    cut = raw_backend("truncate")
    f = ficus(failure_config(echo, cut.addr))
    with RawConn(f.port, timeout=10) as c:
        c.send("GET /bad/cut HTTP/1.1\r\nHost: t\r\n\r\n")
        closed = c.closed_within(5)
        got = c.buf
    assert closed, f"client connection still open 5s after upstream cut the response; got {got[:300]!r}"
    if got.startswith(b"HTTP/1.1 200"):
        head, _, body = got.partition(b"\r\n\r\n")
        assert len(body) < 100_000, "a cut response must not look complete"
    else:
        assert got == b"" or got.startswith(b"HTTP/1.1 502"), got[:300]
    assert_serves(f)


# --- invalid upstream responses ------------------------------------------------------


BAD_RESPONSES = {
    "invalid-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!",
    "garbage-status-line": b"HELLO THERE\r\n\r\n",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("kind", list(BAD_RESPONSES))
def test_invalid_upstream_response_is_502_or_cut(ficus, echo_backend, raw_backend, kind):
    echo = echo_backend("e1")
    up = raw_backend("custom", response=BAD_RESPONSES[kind])
    f = ficus(failure_config(echo, up.addr))
    with RawConn(f.port, timeout=10) as c:
        c.send("GET /bad/resp HTTP/1.1\r\nHost: t\r\n\r\n")
        closed = False
        for _ in range(50):  # up to 5 s: a whole 502 head, or the close
            closed = c.closed_within(0.1 / scaled(1))
            if closed or (c.buf.startswith(b"HTTP/1.1 502") and b"\r\n\r\n" in c.buf):
                break
        got = bytes(c.buf)
    assert got or closed, "no answer and no close within 5s"
    if got.startswith(b"HTTP/1.1 502"):
        pass  # caught before anything went to the client
    elif got.startswith(b"HTTP/1.1 200"):
        # Only a body error may surface after a 200 head went out: then the
        # client must see the close, not a made-up complete body.
        assert kind == "bad-chunk" and closed, got[:300]
        assert not got.endswith(b"0\r\n\r\n"), "a broken upstream body looked complete"
    else:
        pytest.fail(f"upstream sent {BAD_RESPONSES[kind]!r}; the client got {got[:300]!r} "
                    f"(connection closed: {closed}); expected a 502 JSON error")
    assert_serves(f)


def test_upstream_content_length_and_chunked_never_both_reach_client(ficus, echo_backend,
                                                                      raw_backend):
    echo = echo_backend("e1")
    up = raw_backend("custom", response=b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    f = ficus(failure_config(echo, up.addr))
    with RawConn(f.port, timeout=10) as c:
        c.send("GET /bad/both HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_final_response()
    if r.status == 200:
        assert not (r.has_header("Content-Length") and r.has_header("Transfer-Encoding")), repr(r)
        assert r.body == b"hello", repr(r)
    else:
        assert r.status == 502, repr(r)
    assert_serves(f)


def test_upstream_interim_100_then_final_response(ficus, echo_backend, raw_backend):
    echo = echo_backend("e1")
    up = raw_backend("custom", response=b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhello")
    f = ficus(failure_config(echo, up.addr))
    with RawConn(f.port, timeout=10) as c:
        c.send("GET /bad/interim HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_final_response()
        assert r.status == 200 and r.header("X-Final") == "yes" and r.body == b"hello", repr(r)
        # Nothing left over that would be read as the next response.
        c.send("GET /fine HTTP/1.1\r\nHost: t\r\n\r\n")
        nxt = c.read_final_response()
    assert nxt.status == 200 and nxt.json()["path"] == "/fine", repr(nxt)


# --- a real client ------------------------------------------------------------------------


def test_curl_verbose_round_trip(ficus, echo_backend, tmp_path):
    f, _ = start_echo(ficus, echo_backend)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(pattern_bytes(300_000))
    p = subprocess.run(
        ["curl", "-sv", "--max-time", str(scaled(10)), "-H", "X-Forwarded-For: 1.2.3.4",
         "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{upload}",
         f"{f.url}/curl?q=1"],
        capture_output=True, text=True, timeout=scaled(20))
    assert p.returncode == 0, p.stderr
    assert re.search(r"^< HTTP/1\.1 200", p.stderr, re.M), p.stderr
    assert re.search(r"^< x-request-id: [A-Za-z0-9._:-]+", p.stderr, re.M | re.I), p.stderr
    seen = json.loads(p.stdout)
    assert seen["path"] == "/curl?q=1"
    assert seen["method"] == "POST"
    assert seen["body_sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
    assert ", ".join(echo_header(seen, "X-Forwarded-For")) == "1.2.3.4, 127.0.0.1"


def test_broken_first_chunk_gets_502_and_one_sample_per_try(ficus, echo_backend, raw_backend):
    # Head and a broken first chunk in one packet: nothing has reached the
    # client yet, so it gets a clean 502, and the try is counted once.
    echo = echo_backend("e1")
    up = raw_backend("custom", response=BAD_RESPONSES["bad-chunk"])
    f = ficus(failure_config(echo, up.addr))
    r = http_request(f.port, "GET", "/bad/chunk")
    assert_json_error(r, 502)
    from harness import metric_value, parse_metrics
    samples = parse_metrics(f.metrics_text())
    tries = metric_value(samples, "ficus_upstream_requests_total", target_group="bad")
    assert tries == 1, [s for s in samples if s[0] == "ficus_upstream_requests_total"]
    assert_serves(f)


def test_fragment_is_not_forwarded(ficus, echo_backend):
    f, _ = start_echo(ficus, echo_backend)
    with RawConn(f.port) as c:
        c.send("GET /frag/x?q=1#section HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    assert r.json()["path"] == "/frag/x?q=1", r.json()
