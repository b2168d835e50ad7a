"""gRPC through ficus (contract 3.2): a python-grpcio client speaks HTTP/2
to ficus, ficus speaks HTTP/2 (`protocol: h2`, cleartext prior knowledge)
to a python-grpcio server. Unary, server-streaming, client-streaming and
bidirectional calls are relayed with their trailers (the status and its
message, trailing metadata); a server's error status reaches the client; a
call's deadline goes upstream as grpc-timeout; ficus's own errors are gRPC
statuses; retry_on takes gRPC codes; the access log and metrics see the
calls."""

import threading
import time
from concurrent import futures

import grpc
import pytest

from harness import config, metric_value, parse_metrics, route, scaled, wait_until
from harness.procs import free_port

SERVICE = "test.Echo"


class Server:
    """A grpcio server with raw-bytes methods (no generated code)."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.calls = 0
        self.seen_timeouts = []
        self.fail_first = 0
        self._lock = threading.Lock()
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky),
            "Together": grpc.unary_unary_rpc_method_handler(self.together),
        }
        self.peers = set()
        self.together_barrier = None
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=40))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.server.add_insecure_port(self.addr)
        self.server.start()

    def _count(self, ctx):
        with self._lock:
            self.calls += 1
        self.seen_timeouts.append(ctx.time_remaining())

    def unary(self, req, ctx):
        self._count(ctx)
        ctx.set_trailing_metadata((("x-trailer", "t1"),))
        return b"echo:" + req

    def server_stream(self, req, ctx):
        self._count(ctx)
        n = int(req or b"3")
        for i in range(n):
            yield b"part-%d-" % i + b"x" * 1000

    def client_stream(self, it, ctx):
        self._count(ctx)
        return b"|".join(it)

    def bidi(self, it, ctx):
        self._count(ctx)
        for m in it:
            yield m.upper()

    def fail(self, req, ctx):
        self._count(ctx)
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def flaky(self, req, ctx):
        self._count(ctx)
        with self._lock:
            left = self.fail_first
            self.fail_first -= 1
        if left > 0:
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return b"ok"

    def together(self, req, ctx):
        """Answers once every call of the group is in flight at once (the
        barrier breaks after a bounded wait otherwise), noting the
        connection each came on."""
        with self._lock:
            self.peers.add(ctx.peer())
        try:
            self.together_barrier.wait()
        except threading.BrokenBarrierError:
            ctx.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "not all in flight at once")
        return req

    def stop(self):
        self.server.stop(0)


@pytest.fixture
def grpc_server():
    servers = []

    def start(port=None):
        s = Server(port)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def gateway(ficus, server, group_extra=None, **route_extra):
    return ficus(config({"svc": {"targets": [server.addr], "protocol": "h2", **(group_extra or {})}},
                        [route("grpc", f"/{SERVICE}/", "svc", **route_extra)],
                        server={"workers": 1}))


def method(ch, name, kind="unary_unary"):
    return getattr(ch, kind)(f"/{SERVICE}/{name}")


def test_unary_call_with_trailing_metadata(ficus, grpc_server):
    s = grpc_server()
    f = gateway(ficus, s)
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
        resp, call = method(ch, "Unary").with_call(b"hello", timeout=scaled(10))
        assert resp == b"echo:hello"
        assert call.code() == grpc.StatusCode.OK
        assert ("x-trailer", "t1") in call.trailing_metadata()
        # Many calls on the same client connection, and on ficus's pooled one.
        for i in range(20):
            assert method(ch, "Unary")(b"%d" % i, timeout=scaled(10)) == b"echo:%d" % i
    line = f.wait_access_log(1)[0]
    assert line["protocol"] == "HTTP/2" and line["status"] == 200 and line["route"] == "grpc"
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_upstream_requests_total", target_group="svc", code="200") == 21


def test_concurrent_calls_share_one_upstream_connection(ficus, grpc_server):
    """Streams are multiplexed (contract 3.2): 30 calls in flight at once
    through one worker reach the target as 30 streams of one connection,
    not 30 connections."""
    s = grpc_server()
    n = 30
    s.together_barrier = threading.Barrier(n, timeout=scaled(10))
    f = gateway(ficus, s)
    results = [None] * n
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
        call = method(ch, "Together")

        def one(i):
            try:
                results[i] = call(b"%d" % i, timeout=scaled(20))
            except grpc.RpcError as e:
                results[i] = e.code()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(scaled(30))
    assert results == [b"%d" % i for i in range(n)]
    assert len(s.peers) == 1, s.peers
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_upstream_requests_total", target_group="svc", code="200") == n


def test_health_checks_of_an_h2_group_speak_http2(ficus, grpc_server):
    """A gRPC server does not speak HTTP/1.1: the checks of a `protocol: h2`
    group are HTTP/2 streams (it answers a GET with HTTP 200 and a gRPC
    error status, which is up for a check). The target is down while
    nothing listens, up once the server starts, down again when it stops."""
    port = free_port()
    health = {"path": f"/{SERVICE}/Unary", "interval": "100ms", "timeout": "1s",
              "unhealthy_threshold": 2, "healthy_threshold": 1}
    f = ficus(config({"svc": {"targets": [f"127.0.0.1:{port}"], "protocol": "h2",
                              "health_check": health}},
                     [route("grpc", f"/{SERVICE}/", "svc")], server={"workers": 1}))
    assert wait_until(lambda: "is now unhealthy" in f.stderr, scaled(5)), f.stderr[-2000:]
    s = grpc_server(port)
    assert wait_until(lambda: "is now healthy" in f.stderr, scaled(5)), f.stderr[-2000:]
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
        assert method(ch, "Unary")(b"x", timeout=scaled(10)) == b"echo:x"
    s.stop()
    assert wait_until(lambda: f.stderr.count("is now unhealthy") >= 2, scaled(5)), \
        f.stderr[-2000:]


def test_streaming_calls_each_way(ficus, grpc_server):
    s = grpc_server()
    f = gateway(ficus, s)
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
        parts = list(method(ch, "ServerStream", "unary_stream")(b"200", timeout=scaled(20)))
        assert len(parts) == 200 and parts[199].startswith(b"part-199-")
        got = method(ch, "ClientStream", "stream_unary")(iter([b"a", b"b" * 70000, b"c"]),
                                                          timeout=scaled(20))
        assert got == b"a|" + b"b" * 70000 + b"|c"

        # Bidirectional: each answer comes before the next message is sent.
        q = []
        ev = threading.Event()

        def requests():
            for i in range(5):
                yield b"m%d" % i
                assert ev.wait(scaled(5))
                ev.clear()

        for r in method(ch, "Bidi", "stream_stream")(requests(), timeout=scaled(20)):
            q.append(r)
            ev.set()
        assert q == [b"M%d" % i for i in range(5)]


def test_server_errors_and_deadlines_reach_the_client(ficus, grpc_server):
    s = grpc_server()
    f = gateway(ficus, s)
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            method(ch, "Fail")(b"x", timeout=scaled(10))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert e.value.details() == "no such thing"
        method(ch, "Unary")(b"x", timeout=5)
    # The call's deadline (5 s, under the route's 15 s) went upstream as
    # grpc-timeout: the server sees it, not none and not the route's.
    assert s.seen_timeouts[-1] is not None and 0 < s.seen_timeouts[-1] < 6


def test_ficus_own_errors_are_grpc_statuses(ficus, grpc_server):
    s = grpc_server()
    dead = free_port()
    f = ficus(config({"svc": {"targets": [s.addr], "protocol": "h2"},
                      "down": {"targets": [f"127.0.0.1:{dead}"], "protocol": "h2"}},
                     [route("grpc", f"/{SERVICE}/", "svc"), route("down", "/down.Svc/", "down")],
                     server={"workers": 1}))
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/nowhere.Svc/Call")(b"x", timeout=scaled(10))
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/down.Svc/Call")(b"x", timeout=scaled(10))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_retry_on_unavailable(ficus, grpc_server):
    s = grpc_server()
    s.fail_first = 2
    f = gateway(ficus, s, retry_non_idempotent=True,
                retries={"attempts": 2, "retry_on": ["unavailable"], "backoff": "1ms"})
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
        assert method(ch, "Flaky")(b"x", timeout=scaled(10)) == b"ok"
    assert s.calls == 3
    assert f.wait_access_log(1)[-1]["attempts"] == 3


def test_a_target_that_goes_away_is_a_clean_unavailable(ficus, grpc_server):
    s = grpc_server()
    f = gateway(ficus, s)
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
        assert method(ch, "Unary")(b"a", timeout=scaled(10)) == b"echo:a"
        s.stop()
        time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as e:
            method(ch, "Unary")(b"b", timeout=scaled(10))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert wait_until(lambda: f.alive(), 1)


def test_grpc_over_tls_to_the_target_and_alpn_h2_required(ficus, tmp_path):
    from test_tls import make_cert
    ca, _, ca_cert, ca_key = make_cert(tmp_path, "ca", ["test ca"])
    crt, key, _, _ = make_cert(tmp_path, "svc", ["svc.internal"], (ca_cert, ca_key))
    creds = grpc.ssl_server_credentials([(key.read_bytes(), crt.read_bytes())])
    s = Server.__new__(Server)
    s.port = free_port()
    s.addr = f"127.0.0.1:{s.port}"
    s.calls, s.seen_timeouts, s.fail_first = 0, [], 0
    s._lock = threading.Lock()
    s.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    s.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(s.unary)}),))
    s.server.add_secure_port(s.addr, creds)
    s.server.start()
    # An HTTPS server that offers only http/1.1 by ALPN, for the refusal.
    import socket
    import ssl as _ssl
    h1 = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
    h1.load_cert_chain(crt, key)
    h1.set_alpn_protocols(["http/1.1"])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve_h1():
        while True:
            try:
                c, _ = ls.accept()
                h1.wrap_socket(c, server_side=True).close()
            except OSError:
                return

    threading.Thread(target=serve_h1, daemon=True).start()
    tls = {"ca": str(ca), "sni": "svc.internal"}
    try:
        f = ficus(config({"svc": {"targets": [s.addr], "protocol": "h2", "tls": tls},
                          "h1": {"targets": [f"127.0.0.1:{ls.getsockname()[1]}"],
                                 "protocol": "h2", "tls": tls}},
                         [route("grpc", f"/{SERVICE}/", "svc"), route("h1", "/h1.Svc/", "h1")],
                         server={"workers": 1}))
        with grpc.insecure_channel(f"127.0.0.1:{f.port}") as ch:
            resp, call = method(ch, "Unary").with_call(b"tls", timeout=scaled(10))
            assert resp == b"echo:tls" and ("x-trailer", "t1") in call.trailing_metadata()
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/h1.Svc/Call")(b"x", timeout=scaled(10))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # no h2 by ALPN: no guessing
        # ficus's log says why (read from its stderr as it comes).
        assert wait_until(lambda: "did not agree to h2" in f.stderr, scaled(5)), f.stderr
    finally:
        s.stop()
        ls.close()
