"""HTTP clients for the tests: a raw socket that sends exact bytes and parses
responses strictly (CRLF, Content-Length, chunked, close-delimited), and a thin
wrapper over http.client for keep-alive. Every read has a timeout."""

import http.client
import json
import socket
import time

from .procs import scaled


class Response:
    """One parsed HTTP response; headers keep their order and duplicates."""

    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name):
        """First value of a header (case-insensitive), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def has_header(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        hs = "".join(f"\n  {k}: {v}" for k, v in self.headers)
        body = self.body[:400]
        more = f"... ({len(self.body)} bytes)" if len(self.body) > 400 else ""
        return f"<{self.version} {self.status} {self.reason}{hs}\n  body={body!r}{more}>"


class ProtocolError(Exception):
    pass


def wait_until(pred, timeout, interval=0.05):
    """Polls pred until it returns a truthy value or timeout (already scaled
    by the caller) passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


class RawConn:
    """A client socket with a read buffer: exact bytes out, strict parsing in."""

    def __init__(self, port, timeout=5.0, host="127.0.0.1"):
        self.timeout = scaled(timeout)
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        self.buf = bytearray()  # bytes += would make big bodies quadratic
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            raise EOFError("connection closed by peer")
        try:
            data = self.sock.recv(256 * 1024)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise EOFError(f"connection closed by peer; unparsed bytes: {bytes(self.buf[:300])!r}")
        self.buf += data

    def read_line(self, limit=1 << 20):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > limit:
                raise ProtocolError(f"line longer than {limit}: {bytes(self.buf[:200])!r}")
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_to_close(self):
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def read_response(self, method="GET"):
        """Reads one response. A body without framing is read to the close."""
        line = self.read_line()
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {line!r} (then {bytes(self.buf[:200])!r})")
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        while True:
            h = self.read_line()
            if h == b"":
                break
            if b":" not in h:
                raise ProtocolError(f"bad header line {h!r}")
            k, v = h.split(b":", 1)
            headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
        resp = Response(version, status, reason, headers, b"")
        if 100 <= status < 200:
            return resp  # interim: the caller reads the final one
        if method == "HEAD" or status in (204, 304):
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if "chunked" in te:
            resp.body = self._read_chunked()
        elif cl is not None:
            resp.body = self.read_exact(int(cl))
        else:
            resp.body = self.read_to_close()
        return resp

    def read_final_response(self, method="GET"):
        while True:
            r = self.read_response(method)
            if not 100 <= r.status < 200:
                return r

    def _read_chunked(self):
        body = []
        while True:
            size_line = self.read_line()
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.read_line() != b"":  # trailers
                    pass
                return b"".join(body)
            body.append(self.read_exact(size))
            if self.read_line() != b"":
                raise ProtocolError("chunk not followed by CRLF")

    def closed_within(self, timeout):
        """True when the peer closes (FIN or RST) within timeout seconds
        (scaled here); bytes that arrive meanwhile are kept in self.buf."""
        deadline = time.monotonic() + scaled(timeout)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                try:
                    self._fill()
                except socket.timeout:
                    return False
        except EOFError:
            return True
        finally:
            self.sock.settimeout(self.timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_request(port, data, method="GET", timeout=5.0):
    """Opens a connection, sends data, returns (response, conn)."""
    c = RawConn(port, timeout)
    c.send(data)
    return c.read_final_response(method), c


def http_request(port, method, path, body=None, headers=None, timeout=5.0, conn=None):
    """One request over http.client (a new connection unless conn is given)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(timeout))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        version = {10: "HTTP/1.0", 11: "HTTP/1.1"}.get(r.version, str(r.version))
        return Response(version, r.status, r.reason, r.getheaders(), data)
    finally:
        if own:
            conn.close()
