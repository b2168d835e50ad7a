"""Black-box tests of `ficus mock`: answers, HTTP/1.x framing on raw sockets,
latency, injected failures and resets, /__mock/stats, workers, usage errors.
Self-contained: each test starts its own mock on a free port and stops it."""

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

FICUS_BIN = os.environ.get("FICUS_BIN", "/work/main/ficus")
SCALE = 3.0 if os.environ.get("FICUS_MODE") == "asan" else 1.0


def scaled(seconds):
    return seconds * SCALE


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MockProc:
    """`ficus mock` on a free port; stderr goes to a file (read by .stderr())."""

    def __init__(self, *args, wait=True):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.errf = tempfile.TemporaryFile()
        self.argv = [FICUS_BIN, "mock", "--listen", self.addr, *map(str, args)]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.errf)
        if wait:
            self.wait_listening()

    def wait_listening(self):
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mock exited {self.proc.returncode}: {self.stderr()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mock did not listen on {self.addr}: {self.stderr()}")

    def stderr(self):
        self.errf.seek(0)
        return self.errf.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def request(self, method="GET", path="/", body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(10))
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def stats(self):
        status, headers, body = self.request("GET", "/__mock/stats")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        return json.loads(body)

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=scaled(10))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s


@pytest.fixture
def start_mock():
    started = []

    def start(*args, **kw):
        m = MockProc(*args, **kw)
        started.append(m)
        return m

    yield start
    problems = []
    for m in started:
        rc = m.stop()
        err = m.stderr()
        if rc != 0 or "Sanitizer" in err or "runtime error" in err:
            problems.append(f"{m.argv}: exit {rc}\n{err[-3000:]}")
    if problems:
        pytest.fail("mock did not end cleanly:\n" + "\n".join(problems), pytrace=False)


class RawReader:
    """Reads HTTP/1.1 responses off a raw socket (Content-Length framing only,
    which is all the mock sends)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def response(self, head_request=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = 0 if head_request else int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def at_eof(self):
        """True when the server closed (FIN) with nothing more to read."""
        if self.buf:
            return False
        return self.sock.recv(1) == b""


# ---- answers --------------------------------------------------------------

def test_status_body_and_name(start_mock):
    m = start_mock("--status", 201, "--body", "hello world", "--name", "alpha")
    status, headers, body = m.request("GET", "/x")
    assert status == 201
    assert body == b"hello world"
    assert headers["X-Mock-Name"] == "alpha"
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Length"] == str(len(b"hello world"))


def test_defaults(start_mock):
    m = start_mock()
    status, headers, body = m.request()
    assert (status, body, headers["X-Mock-Name"]) == (200, b"ok\n", "mock")


def test_body_file(start_mock, tmp_path):
    payload = bytes(range(256)) * 300  # binary and larger than one read buffer
    f = tmp_path / "body.bin"
    f.write_bytes(payload)
    m = start_mock("--body-file", f)
    status, headers, body = m.request()
    assert status == 200
    assert body == payload
    assert headers["Content-Length"] == str(len(payload))


def test_large_body_pipelined_arrives_whole(start_mock, tmp_path):
    payload = os.urandom(4 * 1024 * 1024)  # far more than a socket buffer takes at once
    f = tmp_path / "big.bin"
    f.write_bytes(payload)
    m = start_mock("--body-file", f)
    s = m.connect()
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    r = RawReader(s)
    for _ in range(3):
        status, _, body = r.response()
        assert status == 200 and body == payload
    s.close()


def test_log_line_at_start(start_mock):
    m = start_mock("--name", "loggy")
    assert f"mock loggy listening on {m.addr}" in m.stderr()


def test_head_gets_no_body(start_mock):
    m = start_mock("--body", "twelve bytes")
    s = m.connect()
    s.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
    r = RawReader(s)
    status, headers, body = r.response(head_request=True)
    assert status == 200 and body == b""
    assert headers["content-length"] == "12"
    # The next answer starts right after the head: no body bytes were sent.
    status, headers, body = r.response()
    assert body == b"twelve bytes"
    s.close()


# ---- HTTP/1.x framing on raw sockets ------------------------------------------

def test_keepalive_and_pipelining_in_order(start_mock):
    m = start_mock("--body", "abc")
    s = m.connect()
    r = RawReader(s)
    # Pipelined: the answers must come in order; HEAD (no body) and the stats
    # request (JSON, counting the three before it) make the order visible.
    s.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n"
              b"HEAD /p2 HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /p3?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /__mock/stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.response()[2] == b"abc"
    assert r.response(head_request=True)[2] == b""
    assert r.response()[2] == b"abc"
    status, headers, body = r.response()
    assert headers["content-type"] == "application/json"
    stats = json.loads(body)
    assert stats["total"] == 3
    assert stats["by_path"] == {"/p1": 1, "/p2": 1, "/p3": 1}
    # Still open: keep-alive.
    s.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.response()[0] == 200
    s.close()


def test_deep_pipeline_with_a_slow_reader(start_mock):
    """Far more pipelined requests than the mock queues per connection, sent
    while nobody reads: backpressure must hold, and every answer arrive."""
    m = start_mock("--body", "x" * 200)
    n = 20000
    s = m.connect()
    req = b"GET /deep HTTP/1.1\r\nHost: x\r\n\r\n"

    def send():
        s.sendall(req * n)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.3)  # let the server's send buffer fill before reading
    r = RawReader(s)
    for _ in range(n):
        status, _, body = r.response()
        assert status == 200 and len(body) == 200
    t.join()
    s.close()
    assert m.stats()["by_path"]["/deep"] == n


def test_http10_closes_unless_keepalive(start_mock):
    m = start_mock()
    s = m.connect()
    s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
    r = RawReader(s)
    status, headers, body = r.response()
    assert status == 200 and body == b"ok\n"
    assert headers.get("connection") == "close"
    assert r.at_eof()
    s.close()

    s = m.connect()
    r = RawReader(s)
    s.sendall(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = r.response()
    assert headers.get("connection") == "keep-alive"
    s.sendall(b"GET /old2 HTTP/1.0\r\n\r\n")
    assert r.response()[0] == 200
    assert r.at_eof()
    s.close()


def test_connection_close_ignores_what_follows(start_mock):
    m = start_mock()
    s = m.connect()
    s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
              b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    r = RawReader(s)
    status, headers, _ = r.response()
    assert status == 200 and headers["connection"] == "close"
    assert r.at_eof()
    s.close()
    assert m.stats()["by_path"] == {"/a": 1}


def test_request_bodies_are_consumed(start_mock):
    m = start_mock("--body", "done")
    s = m.connect()
    r = RawReader(s)
    # Chunked, split across writes, followed by another request.
    s.sendall(b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n")
    time.sleep(0.05)
    s.sendall(b"6\r\n world\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.response()[2] == b"done"
    assert r.response()[2] == b"done"
    # Content-Length body that looks like a request must not be taken for one.
    fake = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    s.sendall(b"PUT /cl HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(fake) + fake)
    assert r.response()[0] == 200
    s.close()
    stats = m.stats()
    assert stats["by_path"] == {"/chunked": 1, "/after": 1, "/cl": 1}
    assert stats["by_method"] == {"POST": 1, "GET": 1, "PUT": 1}


def test_half_closed_client_still_gets_its_answers(start_mock):
    m = start_mock("--latency", "50ms")
    s = m.connect()
    s.sendall(b"GET /h1 HTTP/1.1\r\nHost: x\r\n\r\nGET /h2 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    r = RawReader(s)
    assert r.response()[0] == 200
    assert r.response()[0] == 200
    assert r.at_eof()
    s.close()


def test_upgrade_is_answered_then_closed(start_mock):
    m = start_mock()
    s = m.connect()
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
              b"\x81\x05hello")
    r = RawReader(s)
    status, headers, _ = r.response()
    assert status == 200 and headers["connection"] == "close"
    assert r.at_eof()
    s.close()


def test_overlong_path_counts_as_other(start_mock):
    m = start_mock()
    assert m.request("GET", "/" + "a" * 3000)[0] == 200
    assert m.stats()["by_path"] == {"_other": 1}


def test_malformed_request_gets_400_and_close(start_mock):
    m = start_mock()
    s = m.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
    r = RawReader(s)
    status, headers, _ = r.response()
    assert status == 400
    assert headers["connection"] == "close"
    assert headers["x-mock-name"] == "mock"
    assert r.at_eof()
    s.close()
    # And it still serves.
    assert m.request()[0] == 200


# ---- latency, failures, resets ------------------------------------------------

def test_latency(start_mock):
    m = start_mock("--latency", "200ms")
    t0 = time.monotonic()
    status, _, _ = m.request()
    assert status == 200
    assert time.monotonic() - t0 >= 0.2


def test_latency_pipelined_requests_queue(start_mock):
    m = start_mock("--latency", "150ms", "--body", "z")
    s = m.connect()
    r = RawReader(s)
    t0 = time.monotonic()
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.response()[2] == b"z"
    assert r.response()[2] == b"z"
    assert time.monotonic() - t0 >= 0.15
    # A request sent later waits its own full latency.
    t1 = time.monotonic()
    s.sendall(b"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.response()[0] == 200
    assert time.monotonic() - t1 >= 0.15
    s.close()


def test_stats_are_not_delayed_by_latency(start_mock):
    m = start_mock("--latency", "5s")
    # Only the stats endpoint answers at once; a mock request would take 5s.
    assert m.stats()["total"] == 0


@pytest.mark.parametrize("args,expected", [
    (("--fail-rate", "1.0"), 503),
    (("--fail-rate", "1", "--fail-status", "500"), 500),
    (("--fail-rate", "0.0"), 200),
])
def test_fail_rate(start_mock, args, expected):
    m = start_mock(*args, "--name", "f")
    for _ in range(20):
        status, headers, _ = m.request()
        assert status == expected
        assert headers["X-Mock-Name"] == "f"


def test_fail_rate_share(start_mock):
    m = start_mock("--fail-rate", "0.5")
    s = m.connect()
    r = RawReader(s)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 400)
    codes = [r.response()[0] for _ in range(400)]
    s.close()
    assert set(codes) == {200, 503}
    # Binomial(400, 0.5): outside 120..280 has a probability far below 1e-15.
    assert 120 < codes.count(503) < 280


def test_reset_rate_one_resets(start_mock):
    m = start_mock("--reset-rate", "1.0")
    s = m.connect()
    s.sendall(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ConnectionResetError):
        # A reset, not an answer and not a clean close (which would return b"").
        while True:
            if s.recv(4096) == b"":
                pytest.fail("clean close instead of a reset")
    s.close()
    assert m.stats()["by_path"] == {"/r": 1}


def test_reset_rate_zero_never_resets(start_mock):
    m = start_mock("--reset-rate", "0")
    for _ in range(20):
        assert m.request()[0] == 200


# ---- stats ----------------------------------------------------------------------

def test_stats_by_path_and_method(start_mock):
    m = start_mock()
    assert m.stats() == {"total": 0, "by_path": {}, "by_method": {}}
    m.request("GET", "/a?x=1")
    m.request("GET", "/a?x=2")
    m.request("POST", "/b", body=b"data")
    m.request("DELETE", "/a")
    m.request("GET", "http://example.com/abs?q")  # absolute form: counted by path
    stats = m.stats()
    assert stats["total"] == 5
    assert stats["by_path"] == {"/a": 3, "/b": 1, "/abs": 1}
    assert stats["by_method"] == {"GET": 3, "POST": 1, "DELETE": 1}
    # Stats requests themselves are not counted.
    assert m.stats()["total"] == 5
    status, _, body = m.request("POST", "/__mock/reset")
    assert status == 200
    assert m.stats() == {"total": 0, "by_path": {}, "by_method": {}}
    m.request("GET", "/c")
    assert m.stats()["by_path"] == {"/c": 1}


def test_stats_count_failed_and_reset_requests(start_mock):
    m = start_mock("--fail-rate", "1.0")
    for _ in range(3):
        m.request("GET", "/f")
    assert m.stats()["by_path"] == {"/f": 3}


def test_stats_path_table_is_bounded(start_mock):
    m = start_mock()
    s = m.connect()
    r = RawReader(s)
    n = 10050
    batch = 500
    for base in range(0, n, batch):
        s.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
                           for i in range(base, min(n, base + batch))))
        for _ in range(base, min(n, base + batch)):
            r.response()
    s.close()
    stats = m.stats()
    assert stats["total"] == n
    assert len(stats["by_path"]) == 10001  # 10,000 paths and "_other"
    assert stats["by_path"]["_other"] == 50
    assert sum(stats["by_path"].values()) == n


def test_workers_share_stats(start_mock):
    m = start_mock("--workers", "2", "--name", "w2")
    assert "(2 workers)" in m.stderr()
    n = 60
    for i in range(n):
        # A new connection each time, so SO_REUSEPORT spreads them over both workers.
        status, headers, _ = m.request("GET", f"/w{i % 3}")
        assert status == 200 and headers["X-Mock-Name"] == "w2"
    stats = m.stats()
    assert stats["total"] == n
    assert stats["by_path"] == {"/w0": 20, "/w1": 20, "/w2": 20}
    assert m.request("POST", "/__mock/reset")[0] == 200
    assert m.stats()["total"] == 0
    assert m.stop() == 0


# ---- lifecycle and usage ------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exits_zero_on_signal(start_mock, sig):
    m = start_mock()
    s = m.connect()  # an open idle connection must not hold up the exit
    assert m.stop(sig) == 0
    s.close()


def test_help():
    p = subprocess.run([FICUS_BIN, "mock", "--help"], capture_output=True, timeout=scaled(10))
    assert p.returncode == 0
    assert b"--listen" in p.stdout and b"--fail-rate" in p.stdout


@pytest.mark.parametrize("args,message", [
    ([], "--listen is required"),
    (["--listen", "127.0.0.1:1", "--bogus"], "unknown option"),
    (["--listen", "127.0.0.1:1", "--status"], "needs a value"),
    (["--listen", "127.0.0.1:1", "--status", "abc"], "--status"),
    (["--listen", "127.0.0.1:1", "--status", "99"], "--status"),
    (["--listen", "127.0.0.1:1", "--fail-rate", "1.5"], "--fail-rate"),
    (["--listen", "127.0.0.1:1", "--reset-rate", "-0.1"], "--reset-rate"),
    (["--listen", "127.0.0.1:1", "--latency", "abc"], "--latency"),
    (["--listen", "127.0.0.1:1", "--workers", "0"], "--workers"),
    (["--listen", "127.0.0.1:1", "--body", "a", "--body-file", "/etc/hostname"], "exclude"),
    (["--listen", "127.0.0.1:1", "extra"], "unexpected argument"),
])
def test_bad_usage_exits_2(args, message):
    p = subprocess.run([FICUS_BIN, "mock", *args], capture_output=True, timeout=scaled(10))
    assert p.returncode == 2
    err = p.stderr.decode()
    assert message in err
    assert "usage: ficus mock" in err


def test_listen_failure_exits_1():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = subprocess.run([FICUS_BIN, "mock", "--listen", f"127.0.0.1:{port}"],
                           capture_output=True, timeout=scaled(10))
    assert p.returncode == 1
    assert b"cannot listen" in p.stderr
