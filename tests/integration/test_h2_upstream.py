"""HTTP/2 to targets (contract 3.2, `protocol: h2`): requests are streams
multiplexed over a few connections per target, within the target's
SETTINGS_MAX_CONCURRENT_STREAMS and the group's max_connections; a target's
GOAWAY drains its connection (the streams it refused are sent again); a
reset fails one stream alone; one slow client does not stall the other
streams of its connection; request bodies of concurrent streams arrive
whole. The target is a python-h2 server that holds its answers until the
test lets them go, so every concurrency here is made, not hoped for."""

import http.client
import selectors
import socket
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
import pytest

from harness import RawConn, config, parse_metrics, metric_value, route, scaled, wait_until

BIG = 32 << 20  # more than loopback's socket buffers take


class Target:
    """A cleartext HTTP/2 server. Each connection records its streams and
    the most open at once. Answers wait for `release` (set from the start
    unless hold=True). Paths: /reset (reset at once), /big (BIG bytes under
    flow control), anything else answers `len=<request body bytes>`; every
    answer carries x-conn, the connection's index."""

    def __init__(self, max_streams=None, hold=False):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.max_streams = max_streams
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.lock = threading.Lock()
        self.conns = []  # per connection: {"streams", "open", "max_open", "paths"}
        self.goaway_at = {}  # connection index -> last stream id to send in a GOAWAY
        self.big_blocked = threading.Event()  # /big's stream window reached 0
        self.big_left = None  # bytes of /big not sent yet
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def open_now(self):
        with self.lock:
            return sum(c["open"] for c in self.conns)

    def goaway(self, conn, last_stream_id):
        with self.lock:
            self.goaway_at[conn] = last_stream_id

    def close(self):
        self.stop = True
        self.release.set()
        self.lsock.close()

    def _accept(self):
        while not self.stop:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                idx = len(self.conns)
                self.conns.append({"streams": 0, "open": 0, "max_open": 0, "paths": [],
                                   "goaway": None})
            threading.Thread(target=self._serve, args=(s, idx), daemon=True).start()

    def _serve(self, sock, idx):
        settings = {}
        if self.max_streams:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = self.max_streams
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        c.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        c.initiate_connection()
        sock.sendall(c.data_to_send())
        st = self.conns[idx]
        bodies = {}   # stream -> request body bytes
        paths = {}    # stream -> its path
        ready = []    # streams whose request ended, to answer
        big = {}      # stream -> bytes of /big left to send
        refused_after = None
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + scaled(60)
        try:
            while not self.stop and time.monotonic() < deadline:
                for _ in sel.select(0.02):
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    for e in c.receive_data(data):
                        if isinstance(e, h2.events.RequestReceived):
                            path = dict(e.headers)[b":path"].decode()
                            with self.lock:
                                st["streams"] += 1
                                st["open"] += 1
                                st["max_open"] = max(st["max_open"], st["open"])
                                st["paths"].append(path)
                            bodies[e.stream_id] = 0
                            paths[e.stream_id] = path
                            if path == "/reset":
                                c.reset_stream(e.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
                                with self.lock:
                                    st["open"] -= 1
                                bodies.pop(e.stream_id)
                        elif isinstance(e, h2.events.DataReceived):
                            c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                            if e.stream_id in bodies:
                                bodies[e.stream_id] += len(e.data)
                        elif isinstance(e, h2.events.StreamEnded) and e.stream_id in bodies:
                            ready.append(e.stream_id)
                        elif isinstance(e, h2.events.ConnectionTerminated):
                            with self.lock:
                                st["goaway"] = int(e.error_code)
                        elif isinstance(e, h2.events.StreamReset):
                            if bodies.pop(e.stream_id, None) is not None or e.stream_id in big:
                                big.pop(e.stream_id, None)
                                with self.lock:
                                    st["open"] -= 1
                with self.lock:
                    last = self.goaway_at.pop(idx, None)
                if last is not None:
                    # Raw, so python-h2 goes on answering the streams it kept.
                    sock.sendall(hyperframe.frame.GoAwayFrame(
                        0, last_stream_id=last, error_code=0).serialize())
                    refused_after = last
                if self.release.is_set():
                    for sid in ready:
                        if refused_after is not None and sid > refused_after:
                            continue  # refused: never processed, never answered
                        self._answer(c, sid, paths.pop(sid, ""), bodies, big, idx)
                    ready = []
                for sid in list(big):
                    while big.get(sid):
                        window = c.local_flow_control_window(sid)
                        n = min(big[sid], window, c.max_outbound_frame_size)
                        if n <= 0:
                            self.big_blocked.set()
                            break
                        big[sid] -= n
                        self.big_left = big[sid]
                        c.send_data(sid, b"x" * n, end_stream=big[sid] == 0)
                    if big.get(sid) == 0:
                        del big[sid]
                        with self.lock:
                            st["open"] -= 1
                out = c.data_to_send()
                if out:
                    sock.sendall(out)
        except (OSError, h2.exceptions.H2Error):
            return
        finally:
            sock.close()

    def _answer(self, c, sid, path, bodies, big, idx):
        st = self.conns[idx]
        headers = [(":status", "200"), ("x-conn", str(idx))]
        if path == "/big":
            c.send_headers(sid, headers + [("content-length", str(BIG))])
            big[sid] = BIG
            bodies.pop(sid, None)
            return
        body = b"len=%d" % bodies.pop(sid, 0)
        c.send_headers(sid, headers + [("content-length", str(len(body)))])
        c.send_data(sid, body, end_stream=True)
        with self.lock:
            st["open"] -= 1


@pytest.fixture
def target():
    made = []

    def make(**kw):
        t = Target(**kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def gateway(ficus, t, **group):
    return ficus(config({"svc": {"targets": [t.addr], "protocol": "h2", **group}},
                        [route("all", "/", "svc")], server={"workers": 1}))


def request(port, path="/", method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(30))
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.getheader("x-conn"), r.read()
    finally:
        conn.close()


def in_parallel(port, paths, method="GET", body=None):
    """Sends every request at once; returns their results in order."""
    out = [None] * len(paths)

    def one(i):
        try:
            out[i] = request(port, paths[i], method, body)
        except OSError as e:
            out[i] = (None, None, repr(e).encode())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for th in threads:
        th.start()
    return out, threads


def join(threads):
    for th in threads:
        th.join(scaled(40))


def held_burst(t, f, n):
    """n requests at once, answered only once all n are open at the target."""
    out, threads = in_parallel(f.port, ["/r%d" % i for i in range(n)])
    held = wait_until(lambda: t.open_now() == n, scaled(10))
    t.release.set()
    join(threads)
    assert held, t.conns
    assert [o[0] for o in out] == [200] * n, out
    return out


def test_concurrent_requests_are_streams_of_one_connection(ficus, target):
    t = target(hold=True)
    out = held_burst(t, gateway(ficus, t), 20)
    assert len(t.conns) == 1 and t.conns[0]["max_open"] == 20, t.conns
    assert {o[1] for o in out} == {"0"}


def test_the_targets_stream_limit_opens_more_connections(ficus, target):
    t = target(max_streams=5, hold=True)
    held_burst(t, gateway(ficus, t), 20)
    assert max(c["max_open"] for c in t.conns) <= 5, t.conns
    assert len(t.conns) == 4, t.conns


def test_max_connections_bounds_them_and_the_rest_fail_fast(ficus, target):
    t = target(max_streams=5, hold=True)
    f = gateway(ficus, t, max_connections=1)
    out, threads = in_parallel(f.port, ["/r%d" % i for i in range(8)])
    # Three find every stream of the one connection taken: 503 at once,
    # while the target still holds the other five.
    refused = wait_until(lambda: sum(1 for o in out if o and o[0] == 503) == 3, scaled(10))
    open_then = t.open_now()
    t.release.set()
    join(threads)
    assert refused, out
    assert open_then == 5
    assert sorted(o[0] for o in out) == [200] * 5 + [503] * 3, out
    assert len(t.conns) == 1, t.conns
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_circuit_breaker_rejections_total", target_group="svc",
                        limit="max_connections") == 3


def test_goaway_drains_the_connection(ficus, target):
    t = target(hold=True)
    f = gateway(ficus, t)
    out, threads = in_parallel(f.port, ["/r%d" % i for i in range(5)])
    assert wait_until(lambda: t.open_now() == 5, scaled(10)), t.conns
    t.goaway(0, 9)  # streams 1..9: all five accepted; it goes before the answers
    t.release.set()
    join(threads)
    assert [o[0] for o in out] == [200] * 5, out
    assert {o[1] for o in out} == {"0"}
    # The drained connection takes no new stream: the next request opens another.
    status, conn, _ = request(f.port, "/after")
    assert (status, conn) == (200, "1")
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_upstream_requests_total", target_group="svc", code="200") == 6


def test_streams_a_goaway_refused_are_sent_again(ficus, target):
    t = target(hold=True)
    f = gateway(ficus, t)
    out, threads = in_parallel(f.port, ["/r%d" % i for i in range(5)])
    assert wait_until(lambda: t.open_now() == 5, scaled(10)), t.conns
    t.goaway(0, 1)  # only stream 1 accepted; 3, 5, 7, 9 refused
    # The refused four come again, on a new connection.
    resent = wait_until(lambda: len(t.conns) == 2 and t.conns[1]["streams"] == 4, scaled(10))
    t.release.set()
    join(threads)
    assert resent, t.conns
    assert [o[0] for o in out] == [200] * 5, out
    assert sorted(o[1] for o in out) == ["0", "1", "1", "1", "1"], out
    assert sorted(t.conns[1]["paths"]) == sorted(set(t.conns[0]["paths"]) - {t.conns[0]["paths"][0]})
    # Not failures of the target: it is not ejected, no 5xx was counted.
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_requests_total", route="all", code="200") == 5


def test_a_reset_fails_that_request_alone(ficus, target):
    t = target(hold=True)
    f = gateway(ficus, t)
    out, threads = in_parallel(f.port, ["/a", "/b", "/reset", "/c", "/d"])
    assert wait_until(lambda: t.open_now() == 4 and t.conns[0]["streams"] == 5, scaled(10)), \
        t.conns
    t.release.set()
    join(threads)
    by_path = dict(zip(["/a", "/b", "/reset", "/c", "/d"], out))
    assert by_path["/reset"][0] == 502, out
    assert all(by_path[p][0] == 200 and by_path[p][1] == "0" for p in "/a /b /c /d".split()), out
    assert len(t.conns) == 1


def test_a_slow_client_does_not_stall_the_other_streams(ficus, target):
    t = target()
    f = gateway(ficus, t)
    slow = RawConn(f.port, timeout=30)
    slow.send("GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    # The slow client reads nothing: ficus stops taking the stream's bytes,
    # its window closes, and the target can send it no more.
    assert t.big_blocked.wait(scaled(20))
    status, conn, body = request(f.port, "/small", "POST", b"y" * 100_000)
    assert (status, conn, body) == (200, "0", b"len=100000")
    assert len(t.conns) == 1
    # /big still stalls meanwhile: the target holds most of it back.
    assert t.big_left > BIG // 2, t.big_left
    # Then the slow client takes it all, whole.
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = slow.sock.recv(65536)
        assert data, bytes(buf[:200])
        buf += data
    assert buf.startswith(b"HTTP/1.1 200 ")
    got = len(buf) - buf.index(b"\r\n\r\n") - 4
    while got < BIG:
        data = slow.sock.recv(1 << 20)
        assert data, got
        got += len(data)
    assert got == BIG


def test_request_bodies_of_concurrent_streams_arrive_whole(ficus, target):
    t = target()
    f = gateway(ficus, t)
    body = b"z" * (1 << 20)
    out, threads = in_parallel(f.port, ["/echo%d" % i for i in range(10)], "POST", body)
    join(threads)
    assert [o[0] for o in out] == [200] * 10, out
    assert all(o[2] == b"len=%d" % len(body) for o in out), out
    assert len(t.conns) <= 2, t.conns
    lines = f.wait_access_log(10)
    assert sorted(line["status"] for line in lines) == [200] * 10


def test_an_idle_connection_is_closed_with_a_goaway(ficus, target):
    """ficus closes an idle HTTP/2 connection (keepalive.idle_timeout) with
    a GOAWAY NO_ERROR first: the target sees an orderly end, not a failure."""
    t = target()
    f = gateway(ficus, t, keepalive={"idle_timeout": "200ms"})
    assert request(f.port, "/once")[0] == 200
    assert wait_until(lambda: t.conns[0]["goaway"] is not None, scaled(5)), t.conns
    assert t.conns[0]["goaway"] == 0
