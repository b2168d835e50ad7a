"""Request smuggling (contract section 3, strict parsing): ficus re-frames
every message it forwards (one Transfer-Encoding: chunked or one
Content-Length, chunk sizes and the end written by ficus, CRLF only) and
refuses what it would have to guess about. A logging backend records the
exact bytes each upstream connection carried, so each test sees what a
backend behind ficus would have read."""

import socket
import threading
import time

import pytest

from harness import RawConn, config, http_request, route
from harness.client import ProtocolError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class LoggingBackend:
    """Answers each request it reads (framed by Content-Length, or chunked up
    to its last chunk) with `response`, and records every byte per
    connection."""

    def __init__(self, response=OK):
        self.response = response
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.conns = []  # bytearray per accepted connection
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            rec = bytearray()
            self.conns.append(rec)
            threading.Thread(target=self._serve, args=(c, rec), daemon=True).start()

    def _serve(self, c, rec):
        c.settimeout(3)
        buf = b""
        try:
            while not self._stop.is_set():
                end = self._message_end(buf)
                if end is None:
                    d = c.recv(65536)
                    if not d:
                        return
                    rec.extend(d)
                    buf += d
                    continue
                buf = buf[end:]
                c.sendall(self.response)
        except OSError:
            pass
        finally:
            c.close()

    @staticmethod
    def _message_end(buf):
        h = buf.find(b"\r\n\r\n")
        if h < 0:
            return None
        head = buf[:h].lower()
        body = h + 4
        if b"transfer-encoding: chunked" in head:
            t = buf.find(b"\r\n0\r\n\r\n", body - 2)
            return None if t < 0 else t + 7
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                n = int(line.split(b":", 1)[1])
                return body + n if len(buf) >= body + n else None
        return body

    def seen(self):
        return b"".join(bytes(r) for r in self.conns)

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def backend():
    started = []

    def start(response=OK):
        b = LoggingBackend(response)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def gw(ficus, backend):
    """ficus with an ip_deny route for /admin (the smuggled target)."""

    def start(response=OK):
        be = backend(response)
        f = ficus(config({"be": be.addr},
                         [route("admin", "/admin", "be", ip_deny=["127.0.0.0/8"]),
                          route("main", "/", "be")],
                         server={"max_header_size": "4KiB"}))
        return f, be

    return start


H = "Host: a\r\n"
SMUGGLED = "GET /admin/secret HTTP/1.1\r\nHost: a\r\n\r\n"


def answer(f, data, method="GET"):
    """Sends data on one connection; the first response (or None if the
    connection was cut without one)."""
    with RawConn(f.port) as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return c.read_final_response(method)
        except (EOFError, OSError, ProtocolError):
            return None


def refused(f, be, data, status):
    r = answer(f, data)
    assert r is not None and r.status == status, f"sent {data[:200]!r}: {r!r}"
    assert r.json()["error"], repr(r)
    time.sleep(0.1)
    assert b"/admin" not in be.seen(), be.seen()
    assert http_request(f.port, "GET", "/after").status == 200
    assert f.alive()
    return r


# -- 1. empty or whitespace-only Transfer-Encoding --------------------------

def test_empty_transfer_encoding_with_content_length(gw):
    f, be = gw()
    body = "0\r\n\r\n" + SMUGGLED
    refused(f, be, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: \r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}", 400)
    assert be.seen().count(b"POST") == 0


@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_empty_transfer_encoding_alone(gw, value):
    f, be = gw()
    refused(f, be, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: {value}\r\n\r\n"
                   f"{SMUGGLED}", 400)


# -- 2. bare LF ending a request's trailer section ---------------------------

def test_request_trailers_ended_by_bare_lf(gw):
    f, be = gw()
    refused(f, be, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n"
                   f"0\r\n\n{SMUGGLED}", 400)
    assert b"0\r\n\n" not in be.seen()


@pytest.mark.parametrize("chunks", ["5\nhello\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n",
                                    "0\r\nX-A: 1\n\r\n"],
                         ids=["size-line", "after-data", "trailer-line"])
def test_request_bare_lf_in_chunk_framing(gw, chunks):
    f, be = gw()
    refused(f, be, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{chunks}", 400)


# -- 3. bare LF ending a response's trailer section -------------------------

def test_response_trailers_ended_by_bare_lf(gw):
    f, _ = gw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\nok\r\n0\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
    s = socket.create_connection(("127.0.0.1", f.port), timeout=1)
    s.sendall(f"GET / HTTP/1.1\r\n{H}\r\n".encode())
    got = b""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        got += d
    s.close()
    # A clean 502 when the whole answer came in one read; else the
    # connection is cut. Never the upstream's framing.
    assert b"0\r\n\n" not in got and b"evil" not in got, got
    assert got == b"" or got.startswith(b"HTTP/1.1 502") or b"0\r\n\r\n" not in got, got


# -- 4. Transfer-Encoding other than exactly chunked -------------------------

@pytest.mark.parametrize("te,status", [
    ("Transfer-Encoding: ,chunked", 400),
    ("Transfer-Encoding: chunked,", 400),
    ("Transfer-Encoding: identity, chunked", 501),
    ("Transfer-Encoding: gzip, chunked", 501),
    ("Transfer-Encoding: chunked\r\nTransfer-Encoding: ", 400),
    ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 400),
], ids=["leading-comma", "trailing-comma", "identity", "gzip", "chunked-then-empty",
        "twice"])
def test_transfer_encoding_not_exactly_chunked(gw, te, status):
    f, be = gw()
    refused(f, be, f"POST / HTTP/1.1\r\n{H}{te}\r\n\r\n0\r\n\r\n{SMUGGLED}", status)


# -- 5. trailer fields are checked and bounded ------------------------------

@pytest.mark.parametrize("trailers", ["X-A: 1\r\n folded\r\n", ": empty-name\r\n",
                                      "X-Big: " + "x" * (1 << 20) + "\r\n"],
                         ids=["obs-fold", "empty-name", "1MiB"])
def test_bad_request_trailers(gw, trailers):
    f, be = gw()
    refused(f, be, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n"
                   f"0\r\n{trailers}\r\n", 400)


# -- re-framing ---------------------------------------------------------------

def test_chunk_framing_written_by_ficus(gw):
    """Zero-padded sizes, extensions and trailers never reach the backend:
    it reads sizes, CRLFs and the end as ficus wrote them."""
    f, be = gw()
    r = answer(f, f"POST /up HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n"
                  f"{'0' * 25}5;name=\"v\"\r\nhello\r\n"
                  f"0000000000000000000000006 ; a=b\r\n world\r\n"
                  f"0;last\r\nX-Checksum: abc\r\n\r\n")
    assert r is not None and r.status == 200, repr(r)
    seen = be.seen()
    body = seen[seen.index(b"\r\n\r\n") + 4:]
    assert body == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", body
    assert seen.count(b"Transfer-Encoding") == 1


def test_huge_chunk_extension_refused(gw):
    f, be = gw()
    refused(f, be, f"POST / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n"
                   f"5;{'x' * (1 << 20)}\r\nhello\r\n0\r\n\r\n", 400)


def test_response_chunks_reframed(gw):
    f, _ = gw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"00000000003;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")
    with RawConn(f.port) as c:
        c.send(f"GET / HTTP/1.1\r\n{H}\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += c.read_exact(1)
        assert b"transfer-encoding: chunked" in head.lower(), head
        assert c.read_exact(len(b"3\r\nabc\r\n0\r\n\r\n")) == b"3\r\nabc\r\n0\r\n\r\n"


def test_http10_with_transfer_encoding_refused_and_closed(gw):
    f, be = gw()
    refused(f, be, f"POST / HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n"
                   f"0\r\n\r\n{SMUGGLED}", 400)


@pytest.mark.parametrize("te", [b"chunked, chunked", b"chunked, gzip, chunked",
                                b"chunked, gzip", b"gzip"])
def test_response_transfer_encoding_not_exactly_chunked(gw, te):
    f, _ = gw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te +
              b"\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    r = http_request(f.port, "GET", "/")
    assert r.status == 502, repr(r)


def test_oversized_response_head(gw):
    f, _ = gw(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"y" * 70000 +
              b"\r\nContent-Length: 2\r\n\r\nok")
    r = http_request(f.port, "GET", "/")
    assert r.status == 502, repr(r)


def test_connect_refused(gw):
    f, be = gw()
    r = refused(f, be, "CONNECT a:80 HTTP/1.1\r\nHost: a:80\r\n\r\n", 501)
    assert "CONNECT" in r.json()["message"]
    refusal = [e for e in f.wait_access_log(2) if e["status"] == 501]
    assert refusal and refusal[0]["error"] == "not_implemented", f.access_log()
    assert b"CONNECT" not in be.seen()
