"""Downstream HTTP/2 (contract 3.2): prior knowledge on a cleartext
listener and ALPN h2 over TLS; each stream is one request through the same
path (HTTP/1.1 upstream); bodies both ways under flow control; ficus's own
answers; the access log says HTTP/2; the defences (rapid reset,
CONTINUATION flood, HPACK bomb, SETTINGS and PING floods, zero window) each
end the abuse and are counted in ficus_http2_protocol_errors_total{reason};
GOAWAY on drain lets the streams in flight finish."""

import hashlib
import json
import signal
import socket
import ssl
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame

from harness import config, metric_value, parse_metrics, route, scaled, wait_until
from harness.backends import pattern_bytes
from harness.procs import free_port, wait_ports
from test_tls import make_cert

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class H2:
    """A python-h2 client on one connection, driven by hand."""

    def __init__(self, port, ctx=None, settings=None, window=None):
        raw = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
        if ctx:
            raw = ctx.wrap_socket(raw, server_hostname="api.test")
            assert raw.selected_alpn_protocol() == "h2"
        self.sock = raw
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_inbound_headers=False,
            validate_outbound_headers=False))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        if window is not None:
            self.conn.increment_flow_control_window(window)
        self.flush()
        self.events = []
        self.responses = {}  # stream id -> {"headers":..., "body": bytes, "ended": bool, "reset": code}
        self.closed = False
        self.auto_ack = True

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True, authority="api.test"):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":path", path), (":scheme", "http"),
              (":authority", authority)] + list(headers)
        self.conn.send_headers(sid, hs, end_stream=end and body is None)
        self.responses[sid] = {"headers": None, "body": b"", "ended": False, "reset": None}
        self.flush()
        if body is not None:
            self.send_body(sid, body, end=end)
        return sid

    def send_body(self, sid, body, end=True):
        sent = 0
        while sent < len(body):
            w = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                    len(body) - sent)
            if w <= 0:
                self.pump()
                continue
            self.conn.send_data(sid, body[sent:sent + w],
                                end_stream=end and sent + w == len(body))
            sent += w
            self.flush()
        if end and not body:
            self.conn.end_stream(sid)
            self.flush()

    def pump(self, timeout=None):
        """Reads once; returns False at EOF."""
        self.sock.settimeout(timeout or scaled(5))
        try:
            data = self.sock.recv(1 << 16)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        for e in self.conn.receive_data(data):
            self.events.append(e)
            r = self.responses.get(getattr(e, "stream_id", None))
            if isinstance(e, h2.events.ResponseReceived):
                r["headers"] = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                r["body"] += e.data
                if self.auto_ack:
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.TrailersReceived):
                r["trailers"] = dict(e.headers)
            elif isinstance(e, h2.events.StreamEnded):
                r["ended"] = True
            elif isinstance(e, h2.events.StreamReset) and r is not None:
                r["reset"] = e.error_code
        try:
            self.flush()
        except OSError:
            pass
        return True

    def wait(self, sids, timeout=10):
        deadline = time.monotonic() + scaled(timeout)
        while not all(self.responses[s]["ended"] or self.responses[s]["reset"] is not None
                      for s in sids):
            assert time.monotonic() < deadline, "no answer in time"
            if not self.pump():
                break
        return [self.responses[s] for s in sids]

    def get(self, path, timeout=10, **kw):
        return self.wait([self.request(path, **kw)], timeout=timeout)[0]

    def goaway(self, timeout=10):
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            for e in self.events:
                if isinstance(e, h2.events.ConnectionTerminated):
                    return e
            if not self.pump():
                break
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)),
                    None)

    def close(self):
        self.sock.close()


def start(ficus, backend, tls=None, http2=None, **server):
    listen = [f"127.0.0.1:{free_port()}"]
    if tls:
        listen.append({"address": f"127.0.0.1:{free_port()}",
                       "tls": {"cert": str(tls["cert"]), "key": str(tls["key"])}})
    server = {"workers": 1, "listen": listen, **server}
    if http2 is not None:
        server["http2"] = http2
    f = ficus(config({"echo": backend.addr}, [route("all", "/", "echo")], server=server))
    if tls:
        f.tls_port = int(listen[1]["address"].rsplit(":", 1)[1])
        wait_ports([f.tls_port], f.proc, scaled(5), "the TLS listener")
    return f


def errors(f, reason):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_http2_protocol_errors_total",
                        reason=reason)


@pytest.fixture
def pki(tmp_path):
    _, _, ca_cert, ca_key = make_cert(tmp_path, "ca", ["test ca"])
    cp, kp, _, _ = make_cert(tmp_path, "api", ["api.test", "localhost"], (ca_cert, ca_key))
    return {"ca": tmp_path / "ca.crt", "cert": cp, "key": kp}


def echo(resp):
    assert resp["headers"][":status"] == "200", resp
    return json.loads(resp["body"])


def header(rec, name):
    return next((v for k, v in rec["headers"] if k.lower() == name), None)


def test_prior_knowledge_get_goes_upstream_as_http11(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be)
    c = H2(f.port)
    rec = echo(c.get("/hello?x=1", headers=[("cookie", "a=1"), ("cookie", "b=2"),
                                           ("x-test", "yes")]))
    assert rec["method"] == "GET" and rec["path"] == "/hello?x=1"
    assert rec["version"] == "HTTP/1.1"
    assert header(rec, "host") == "api.test"  # from :authority
    assert header(rec, "cookie") == "a=1; b=2"  # crumbs joined (RFC 9113 8.2.3)
    assert header(rec, "x-test") == "yes"
    assert header(rec, "x-forwarded-proto") == "http"
    line = f.wait_access_log(1)[-1]
    assert line["protocol"] == "HTTP/2" and line["status"] == 200 and line["route"] == "all"


def test_alpn_h2_over_tls_with_curl(ficus, echo_backend, pki):
    be = echo_backend()
    f = start(ficus, be, tls=pki)
    out = subprocess.run(
        ["curl", "-s", "--http2", "--cacert", str(pki["ca"]), "--resolve",
         f"api.test:{f.tls_port}:127.0.0.1", "-w", "\n%{http_version}",
         f"https://api.test:{f.tls_port}/tls"], capture_output=True, timeout=scaled(10))
    body, version = out.stdout.rsplit(b"\n", 1)
    assert version == b"2"
    rec = json.loads(body)
    assert rec["path"] == "/tls" and header(rec, "x-forwarded-proto") == "https"
    # http/1.1 is still offered
    out = subprocess.run(
        ["curl", "-s", "--http1.1", "--cacert", str(pki["ca"]), "--resolve",
         f"api.test:{f.tls_port}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_version}",
         f"https://api.test:{f.tls_port}/tls"], capture_output=True, timeout=scaled(10))
    assert out.stdout == b"1.1"


def test_curl_prior_knowledge(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be)
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                          "%{http_code} %{http_version}", f"{f.url}/pk"],
                         capture_output=True, timeout=scaled(10))
    assert out.stdout == b"200 2"


@pytest.mark.parametrize("with_length", [True, False])
def test_request_bodies_stream_under_flow_control(ficus, echo_backend, with_length):
    be = echo_backend()
    f = start(ficus, be)
    c = H2(f.port)
    body = pattern_bytes(700_000)  # ten times the stream window
    hs = [("content-length", str(len(body)))] if with_length else []
    sid = c.request("/up", method="PUT", headers=hs, body=body)
    rec = echo(c.wait([sid])[0])
    assert rec["body_len"] == len(body)
    assert rec["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert rec["framing"] == ("content-length" if with_length else "chunked")


@pytest.mark.parametrize("chunked", ["0", "1"])
def test_large_responses_both_framings(ficus, echo_backend, chunked):
    be = echo_backend()
    f = start(ficus, be)
    c = H2(f.port)
    n = 3_000_000
    r = c.get("/big", headers=[("x-echo-size", str(n)), ("x-echo-chunked", chunked)])
    assert r["headers"][":status"] == "200"
    assert "transfer-encoding" not in r["headers"] and "connection" not in r["headers"]
    assert hashlib.sha256(r["body"]).digest() == hashlib.sha256(pattern_bytes(n)).digest()


def test_many_streams_at_once_on_one_connection(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be)
    c = H2(f.port)
    sids = [c.request(f"/s/{i}") for i in range(60)]
    for sid, r in zip(sids, c.wait(sids, timeout=20)):
        assert echo(r)["path"] == f"/s/{sids.index(sid)}"
    assert be.count() == 60


def test_head_own_errors_and_connection_specific_fields(ficus, echo_backend):
    be = echo_backend()
    f = ficus(config({"echo": be.addr}, [route("api", "/api", "echo")],
                     server={"workers": 1}))
    c = H2(f.port)
    r = c.get("/api/x", method="HEAD")
    assert r["headers"][":status"] == "200" and r["body"] == b""
    assert int(r["headers"]["content-length"]) > 0
    r = c.get("/api/hop", headers=[("x-echo-hop", "1")])
    for name in ("connection", "keep-alive", "proxy-connection", "upgrade", "transfer-encoding"):
        assert name not in r["headers"]
    r = c.get("/nowhere")  # no route: ficus's own answer, on the same connection
    assert r["headers"][":status"] == "404"
    assert json.loads(r["body"])["error"] == "no_route"
    r = c.get("/api/after")
    assert r["headers"][":status"] == "200"


def test_host_that_contradicts_authority_is_malformed(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be)
    c = H2(f.port)
    r = c.get("/x", headers=[("host", "other.test")])
    assert r["headers"][":status"] == "400"
    assert be.count() == 0


def test_disabled_http2_refuses_the_preface(ficus, echo_backend, pki):
    be = echo_backend()
    f = start(ficus, be, tls=pki, http2={"enabled": False})
    s = socket.create_connection(("127.0.0.1", f.port), timeout=scaled(5))
    s.sendall(PREFACE)
    assert s.recv(100).startswith(b"HTTP/1.1 505")
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", f.tls_port)),
                        server_hostname="api.test")
    assert t.selected_alpn_protocol() == "http/1.1"


def test_settings_announce_the_configured_limits(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be, http2={"max_concurrent_streams": 7, "initial_window_size": "32KiB",
                                "max_header_list_size": "8KiB"})
    c = H2(f.port)
    c.get("/x")
    remote = c.conn.remote_settings
    assert remote[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    assert remote[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 32768
    assert remote[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 8192


def test_header_list_over_the_limit_is_431_and_a_bomb_cuts_the_connection(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be, http2={"max_header_list_size": "4KiB"})
    c = H2(f.port)
    r = c.get("/x", headers=[("x-big", "a" * 5000)])
    assert r["headers"][":status"] == "431"
    assert errors(f, "hpack_bomb") == 1
    # The same field again and again: a few bytes each on the wire (HPACK's
    # table), far over the limit decoded.
    c = H2(f.port)
    c.request("/x", headers=[("x-bomb", "b" * 3000)] * 40)
    ev = c.goaway()
    assert ev is not None and ev.error_code == 11  # ENHANCE_YOUR_CALM
    assert errors(f, "hpack_bomb") == 2
    assert be.count() == 0


def test_rapid_reset_closes_the_connection(ficus, echo_backend):
    be = echo_backend()
    be.delay = 0.5
    f = start(ficus, be, http2={"max_concurrent_streams": 10})
    c = H2(f.port)
    for _ in range(200):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "GET"), (":path", "/r"), (":scheme", "http"),
                                  (":authority", "x")], end_stream=True)
        c.conn.reset_stream(sid)
        try:
            c.flush()
        except OSError:
            break
    ev = c.goaway()
    assert ev is not None and ev.error_code == 11
    assert errors(f, "rapid_reset") == 1
    # ficus goes on serving others
    assert echo(H2(f.port).get("/after"))["path"] == "/after"


def test_continuation_flood_closes_the_connection(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be)
    s = socket.create_connection(("127.0.0.1", f.port), timeout=scaled(5))
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    hf = HeadersFrame(1)
    hf.data = b"\x82"  # :method GET, indexed; no END_HEADERS
    hf.flags.add("END_STREAM")
    out = hf.serialize()
    for _ in range(100):
        out += ContinuationFrame(1, data=b"").serialize()
    try:
        s.sendall(out)
    except OSError:
        pass
    got = b""
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline:
        try:
            d = s.recv(4096)
        except OSError:
            break
        if not d:
            break
        got += d
    assert b"\x00\x00\x00\x0b" in got  # a GOAWAY with ENHANCE_YOUR_CALM
    assert errors(f, "continuation_flood") == 1


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_floods_close_the_connection(ficus, echo_backend, kind):
    be = echo_backend()
    f = start(ficus, be)
    s = socket.create_connection(("127.0.0.1", f.port), timeout=scaled(5))
    frame = (PingFrame(0, opaque_data=b"12345678") if kind == "ping" else SettingsFrame(0))
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    try:
        s.sendall(frame.serialize() * 2000)
    except OSError:
        pass
    wait_until(lambda: errors(f, f"{kind}_flood") == 1, scaled(5))


def test_zero_window_stall_is_reset_after_idle_timeout(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be, idle_timeout="1s")
    c = H2(f.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    r = c.get("/stall", headers=[("x-echo-size", "100000")], timeout=20)
    assert r["reset"] == 8  # CANCEL
    assert r["body"] == b""
    assert errors(f, "zero_window") == 1
    line = f.wait_access_log(1)[-1]
    assert line["error"] == "client_closed" and line["protocol"] == "HTTP/2"


def test_small_client_window_still_gets_everything(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be)
    c = H2(f.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    n = 300_000
    r = c.get("/w", headers=[("x-echo-size", str(n))])
    assert r["body"] == pattern_bytes(n)


def test_client_reset_ends_the_request_as_client_closed(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be)
    c = H2(f.port)
    sid = c.request("/slow", headers=[("x-echo-delay", "0.5")])
    wait_until(lambda: be.count() == 1, scaled(5))
    c.conn.reset_stream(sid)
    c.flush()
    line = f.wait_access_log(1)[-1]
    assert line["status"] == 499 and line["error"] == "client_closed"
    assert echo(c.get("/next"))["path"] == "/next"


def test_drain_sends_goaway_and_lets_streams_finish(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be, drain_delay="0s", drain_timeout="10s")
    # nghttp2's own client: it reads a stream's answer after a GOAWAY.
    cli = subprocess.Popen(["nghttp", "-v", "-H", "x-echo-delay: 1", f"{f.url}/slow"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_until(lambda: be.count() == 1, scaled(5))
    f.proc.send_signal(signal.SIGTERM)
    out = cli.communicate(timeout=scaled(15))[0].decode()
    assert "recv GOAWAY" in out and "error_code=NO_ERROR" in out
    assert "last_stream_id=2147483647" in out  # the notice first (RFC 9113 6.8)
    assert "(stream_id=13) :status: 200" in out and '"/slow"' in out
    f.proc.wait(timeout=scaled(10))


def test_garbage_after_the_preface_is_a_protocol_error(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be)
    s = socket.create_connection(("127.0.0.1", f.port), timeout=scaled(5))
    s.sendall(PREFACE + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + b"junk" * 10)
    s.settimeout(scaled(5))
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    wait_until(lambda: errors(f, "protocol") >= 1, scaled(5))
    assert echo(H2(f.port).get("/fine"))["path"] == "/fine"


GRPC = [("content-type", "application/grpc"), ("te", "trailers")]


@pytest.mark.parametrize("case,code", [("no_route", 12), ("unavailable", 14), ("timeout", 4)])
def test_ficus_errors_to_grpc_calls_are_trailers_only(ficus, raw_backend, case, code):
    hang = raw_backend("hang")
    dead = free_port()  # nothing listens there
    f = ficus(config({"hang": hang.addr, "dead": f"127.0.0.1:{dead}"},
                     [route("slow", "/slow.Svc/", "hang", timeout="300ms"),
                      route("down", "/down.Svc/", "dead")], server={"workers": 1}))
    c = H2(f.port)
    path = {"no_route": "/nowhere.Svc/Call", "unavailable": "/down.Svc/Call",
            "timeout": "/slow.Svc/Call"}[case]
    r = c.get(path, method="POST", headers=GRPC, body=b"\x00\x00\x00\x00\x00")
    h = r["headers"]
    assert h[":status"] == "200" and h["content-type"] == "application/grpc"
    assert h["grpc-status"] == str(code) and h["grpc-message"]
    assert r["body"] == b""
    # The same error to a client that is not gRPC stays JSON.
    r = c.get(path, method="POST", body=b"{}")
    assert r["headers"][":status"] in ("404", "502", "503", "504")
    line = f.wait_access_log(2)[-2]
    assert line["status"] >= 400  # the log keeps ficus's verdict


def test_retry_on_grpc_unavailable(ficus, raw_backend):
    be = raw_backend("custom", response=(b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
                                         b"grpc-status: 14\r\ngrpc-message: down\r\n"
                                         b"content-length: 0\r\n\r\n"))
    f = ficus(config({"g": be.addr},
                     [route("g", "/", "g", retry_non_idempotent=True,
                            retries={"attempts": 2, "retry_on": ["unavailable"],
                                     "backoff": "1ms"})],
                     server={"workers": 1}))
    c = H2(f.port)
    r = c.get("/pkg.Svc/Call", method="POST", headers=GRPC, body=b"\x00\x00\x00\x00\x00")
    assert r["headers"]["grpc-status"] == "14"
    assert be.accepted == 3  # the first try and two retries
    line = f.wait_access_log(1)[-1]
    assert line["attempts"] == 3


TRAILED = (b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
           b"transfer-encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\nGrpc-Message: all good\r\n\r\n")


def test_trailers_reach_http2_clients_and_grpc_calls(ficus, raw_backend):
    be = raw_backend("custom", response=TRAILED)
    f = ficus(config({"g": be.addr}, [route("g", "/", "g")], server={"workers": 1}))
    c = H2(f.port)
    r = c.get("/pkg.Svc/Call", method="POST", headers=GRPC, body=b"\x00\x00\x00\x00\x00")
    assert r["headers"][":status"] == "200" and r["body"] == b"hello"
    assert r["trailers"] == {"grpc-status": "0", "grpc-message": "all good"}
    # An HTTP/2 client that is not gRPC gets them too (they are end to end).
    r = c.get("/plain")
    assert r["trailers"]["grpc-status"] == "0"
    # HTTP/1.1: a gRPC call gets them in the chunked body; another client not.
    raw = socket.create_connection(("127.0.0.1", f.port), timeout=scaled(5))
    raw.sendall(b"POST /pkg.Svc/Call HTTP/1.1\r\nHost: a\r\ncontent-type: application/grpc\r\n"
                b"content-length: 0\r\n\r\nGET /plain HTTP/1.1\r\nHost: a\r\n"
                b"Connection: close\r\n\r\n")
    got = b""
    while True:
        d = raw.recv(65536)
        if not d:
            break
        got += d
    first, second = got.split(b"HTTP/1.1 200", 2)[1:]
    assert b"0\r\ngrpc-status: 0\r\nGrpc-Message: all good\r\n\r\n" in first
    assert second.endswith(b"5\r\nhello\r\n0\r\n\r\n")


def test_streams_over_the_limit_are_refused_not_protocol_errors(ficus, echo_backend):
    be = echo_backend()
    be.delay = 0.3
    f = start(ficus, be, http2={"max_concurrent_streams": 2})
    c = H2(f.port)
    # Opened before ficus's SETTINGS are read: the client does not know the limit yet.
    sids = [c.request(f"/r/{i}") for i in range(8)]
    got = c.wait(sids, timeout=20)
    refused = [r for r in got if r["reset"] == 7]  # REFUSED_STREAM: safe to retry
    answered = [r for r in got if r["ended"]]
    assert refused and answered and len(refused) + len(answered) == 8
    assert errors(f, "refused_stream") == len(refused)
    assert errors(f, "protocol") == 0


def test_an_idle_connection_gets_goaway_after_idle_timeout(ficus, echo_backend):
    be = echo_backend()
    f = start(ficus, be, idle_timeout="1s")
    c = H2(f.port)
    assert echo(c.get("/once"))["path"] == "/once"
    t0 = time.monotonic()
    ev = c.goaway(timeout=10)
    assert ev is not None and ev.error_code == 0  # NO_ERROR: a clean goodbye
    assert time.monotonic() - t0 >= 0.5
    wait_until(lambda: not c.pump(timeout=scaled(5)), scaled(5))  # then closed
