"""Upstreams that live in the test process. EchoBackend answers with what it
received (method, target, every header, a hash of the body) as JSON, and
obeys X-Echo-* request headers to return other statuses, big or chunked
bodies, or hop-by-hop response headers. RawBackend accepts connections and
then either never answers or cuts its response short."""

import hashlib
import json
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_pattern_cache = {}


def pattern_bytes(n):
    """n deterministic pseudo-random bytes: reordered or lost blocks change
    the hash, which a repeating pattern would not."""
    if n not in _pattern_cache:
        _pattern_cache[n] = random.Random(n).randbytes(n)
    return _pattern_cache[n]


# Hop-by-hop headers the echo backend adds to its response on X-Echo-Hop: 1.
ECHO_HOP_HEADERS = [
    ("Connection", "X-Up-Hop"),
    ("X-Up-Hop", "secret"),
    ("Keep-Alive", "timeout=5, max=100"),
    ("Proxy-Connection", "keep-alive"),
    ("Trailer", "X-Trailer-Thing"),
    ("Upgrade", "h2c"),
]


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo"
    # Head and body go out in separate writes: without this, Nagle and the
    # peer's delayed ACK add 40 ms to every response.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts), "chunked"
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
        cl = self.headers.get("Content-Length")
        if cl is not None:
            return self.rfile.read(int(cl)), "content-length"
        return b"", None

    def _handle(self):
        body, framing = self._read_body()
        backend = self.server.backend
        rec = {
            "name": backend.name,
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "framing": framing,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "peer_port": self.client_address[1],
        }
        backend.record(rec)
        status = int(self.headers.get("X-Echo-Status", "200"))
        delay = float(self.headers.get("X-Echo-Delay", backend.delay))
        if delay:
            time.sleep(delay)
        size = self.headers.get("X-Echo-Size")
        if size is not None:
            payload = pattern_bytes(int(size))
            ctype = "application/octet-stream"
        else:
            payload = json.dumps(rec).encode()
            ctype = "application/json"
        self.send_response(status)
        self.send_header("X-Echo-Name", backend.name)
        if self.headers.get("X-Echo-Close") == "1":
            self.send_header("Connection", "close")  # also makes the handler close
        if self.headers.get("X-Echo-Hop") == "1":
            for k, v in ECHO_HOP_HEADERS:
                self.send_header(k, v)
        if status in (204, 304) or 100 <= status < 200:
            self.end_headers()
            return
        self.send_header("Content-Type", ctype)
        head_only = self.command == "HEAD"
        if self.headers.get("X-Echo-Chunked") == "1":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if not head_only:
                step = 65536
                for i in range(0, len(payload), step):
                    piece = payload[i : i + step]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not head_only:
                step = 256 * 1024
                for i in range(0, len(payload), step):
                    self.wfile.write(payload[i : i + step])

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # The default prints a traceback; Python 3.11's traceback printing
        # runs ast.parse, which races with pytest's own use of it in the main
        # thread ("AST constructor recursion depth mismatch"). Record instead.
        self.backend.errors.append(repr(sys.exc_info()[1]))


class EchoBackend:
    """An HTTP/1.1 echo server in a thread on 127.0.0.1:PORT."""

    def __init__(self, name="echo"):
        self.name = name
        self.delay = 0.0  # seconds before every answer without X-Echo-Delay
        self.requests = []
        self.errors = []  # exceptions raised while handling (e.g. a bad chunk from ficus)
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _EchoHandler)
        self.server.backend = self
        self.port = self.server.server_address[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def record(self, rec):
        with self._lock:
            self.requests.append(rec)

    def count(self):
        with self._lock:
            return len(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def recv_head(c):
    """Reads from socket c up to the end of a message head: (head, bytes after
    it), or None if the peer closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            return None
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def echo_header(echo_json, name):
    """Values of a header as the echo backend saw it (case-insensitive)."""
    return [v for k, v in echo_json["headers"] if k.lower() == name.lower()]


def echo_headers(echo_json):
    """Every header the echo backend saw: lower-cased name -> its values."""
    out = {}
    for k, v in echo_json["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


class RawBackend:
    """A TCP listener that accepts and then, by mode:
    "hang"     - reads nothing, answers nothing, keeps the connection;
    "truncate" - reads the request head, sends a head announcing
                 Content-Length: 100000 and 1000 bytes, then closes;
    "close_delimited" - reads the request head, answers with neither
                 Content-Length nor chunked: CLOSE_BODY, then closes;
    "custom"   - reads the request head, sends `response` verbatim, closes."""

    CLOSE_BODY = pattern_bytes(200_000)

    def __init__(self, mode, response=None):
        assert mode in ("hang", "truncate", "close_delimited", "custom")
        assert (mode == "custom") == (response is not None)
        self.mode = mode
        self.response = response
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.accepted = 0
        self.conns = []
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
            self.accepted += 1
            self.conns.append(c)
            if self.mode != "hang":
                threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        c.settimeout(5)
        try:
            if recv_head(c) is None:
                return
            if self.mode == "truncate":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n"
                          b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 1000)
            elif self.mode == "custom":
                c.sendall(self.response)
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
                          b"Content-Type: application/octet-stream\r\n\r\n" + self.CLOSE_BODY)
            time.sleep(0.05)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
