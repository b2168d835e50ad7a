"""Malformed and abusive requests on raw sockets (contract section 3, strict
parsing; section 2 limits): each gets a 4xx JSON error and a closed
connection, and ficus serves the next normal request. Slow and idle clients
are cut off by header_timeout and idle_timeout."""

import time

import pytest

from harness import RawConn, config, http_request, route, scaled
from harness.client import ProtocolError


@pytest.fixture
def gw(ficus, echo_backend):
    echo = echo_backend("e1")
    return ficus(config({"echo": echo.addr}, [route("main", "/", "echo")],
                        server={"max_header_size": "4KiB", "max_body_size": "1KiB",
                                "header_timeout": "1s", "idle_timeout": "1s"}))


def expect_rejected(f, data, status, method="GET"):
    """Sends data on a new connection: the answer must be status with a JSON
    error body, then the connection closes; a normal request still works."""
    with RawConn(f.port) as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # ficus may answer and close before it read everything
        try:
            r = c.read_final_response(method)
        except (EOFError, OSError, ProtocolError) as e:
            pytest.fail(f"sent {data[:300]!r}\n expected {status}, got no response: {e!r}")
        assert r.status == status, f"sent {data[:300]!r}\n got {r!r}"
        body = r.json()
        assert {"error", "message", "request_id"} <= set(body), repr(r)
        assert r.header("X-Request-Id") == body["request_id"], repr(r)
        assert c.closed_within(3), f"connection left open after {status}: sent {data[:200]!r}"
    ok = http_request(f.port, "GET", "/after-abuse")
    assert ok.status == 200, repr(ok)
    assert f.alive()
    return r


H = "Host: t\r\n"


def test_content_length_and_transfer_encoding(gw):
    expect_rejected(gw, f"POST / HTTP/1.1\r\n{H}Content-Length: 5\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)


def test_two_different_content_lengths(gw):
    expect_rejected(gw, f"POST / HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
                        "hello!", 400)


def test_content_length_list(gw):
    expect_rejected(gw, f"POST / HTTP/1.1\r\n{H}Content-Length: 5, 6\r\n\r\nhello!", 400)


def test_invalid_chunk_size(gw):
    expect_rejected(gw, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n"
                        "zz\r\nhello\r\n0\r\n\r\n", 400)


def test_chunk_size_overflow(gw):
    expect_rejected(gw, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n"
                        "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400)


def test_bare_lf_line_endings(gw):
    expect_rejected(gw, "GET / HTTP/1.1\nHost: t\nX-A: b\n\n", 400)


def test_obs_fold(gw):
    expect_rejected(gw, f"GET / HTTP/1.1\r\n{H}X-Folded: first\r\n  second\r\n\r\n", 400)


def test_header_too_large_gives_431(gw):
    expect_rejected(gw, f"GET / HTTP/1.1\r\n{H}X-Big: {'a' * 8000}\r\n\r\n", 431)


def test_too_many_headers_gives_431(gw):
    many = "".join(f"X-H{i}: v\r\n" for i in range(200))
    expect_rejected(gw, f"GET / HTTP/1.1\r\n{H}{many}\r\n", 431)


def test_content_length_over_max_body_size_rejected_before_body(gw):
    # Only the head is sent: the 413 must not wait for a body that never comes.
    expect_rejected(gw, f"POST / HTTP/1.1\r\n{H}Content-Length: 10000\r\n\r\n", 413)


def test_chunked_body_over_max_body_size(gw):
    chunk = "200\r\n" + "x" * 512 + "\r\n"
    expect_rejected(gw, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n"
                        + chunk * 4 + "0\r\n\r\n", 413)


def test_body_at_max_body_size_is_accepted(gw):
    r = http_request(gw.port, "POST", "/exact-limit", body=b"y" * 1024)
    assert r.status == 200, repr(r)
    assert r.json()["body_len"] == 1024


def test_http11_without_host(gw):
    expect_rejected(gw, "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400)


def test_two_host_headers(gw):
    expect_rejected(gw, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)


def test_invalid_host_header(gw):
    expect_rejected(gw, "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0"])
def test_unsupported_http_version(gw, version):
    with RawConn(gw.port) as c:
        c.send(f"GET / {version}\r\nHost: t\r\n\r\n")
        r = c.read_final_response()
    assert r.status in (400, 505), f"GET / {version}: {r!r}"


def test_garbage_bytes(gw):
    expect_rejected(gw, b"\x00\x01\x02\xffgarbage\r\n\r\n", 400)


def test_absolute_form_request_target_is_routed_by_its_authority(gw):
    # RFC 9112 3.2.2: a server accepts absolute-form; its authority replaces
    # Host, and the path is what is routed and forwarded.
    with RawConn(gw.port) as c:
        c.send(f"GET http://example.com/abs/x?q=1 HTTP/1.1\r\n{H}Connection: close\r\n\r\n")
        r = c.read_final_response()
    assert r.status == 200, repr(r)
    echo = r.json()
    assert echo["path"] == "/abs/x?q=1", echo
    hosts = [v for k, v in echo["headers"] if k.lower() == "host"]
    assert hosts == ["example.com"], echo


def test_target_that_is_neither_origin_nor_absolute_form(gw):
    expect_rejected(gw, f"GET example.com/x HTTP/1.1\r\n{H}\r\n", 400)


def test_space_in_path(gw):
    expect_rejected(gw, f"GET /a b HTTP/1.1\r\n{H}\r\n", 400)


def test_slowloris_head_is_cut_at_header_timeout(gw):
    with RawConn(gw.port) as c:
        c.send("GET /slow HTTP/1.1\r\nHost: t\r\n")
        start = time.monotonic()
        closed = False
        # Trickle a header line every 200 ms; the whole head is due within 1s.
        for i in range(int(scaled(8) / 0.2)):
            try:
                c.send(f"X-Slow-{i}: a\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if c.closed_within(0.2 / scaled(1)):
                closed = True
                break
        elapsed = time.monotonic() - start
    assert closed, f"a head trickled for {elapsed:.1f}s was never cut (header_timeout: 1s)"
    if c.buf:
        assert c.buf.startswith(b"HTTP/1.1 408"), f"expected nothing or 408, got {c.buf[:300]!r}"
    ok = http_request(gw.port, "GET", "/after-slowloris")
    assert ok.status == 200, repr(ok)


def test_idle_keepalive_connection_closed_after_idle_timeout(gw):
    with RawConn(gw.port) as c:
        c.send("GET /idle HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_final_response()
        assert r.status == 200, repr(r)
        start = time.monotonic()
        closed = c.closed_within(6)
        elapsed = time.monotonic() - start
    assert closed, "idle keep-alive connection still open 6s after its response (idle_timeout: 1s)"
    assert elapsed >= 0.5, f"closed after {elapsed:.2f}s: well before idle_timeout (1s)"
    assert c.buf == b"", f"unexpected bytes on an idle connection: {c.buf[:200]!r}"
