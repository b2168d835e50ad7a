"""Connection limits (contract sections 2 and 5): many concurrent keep-alive
clients, server.max_connections (the extra clients wait in the backlog and
are served once others leave) and descriptor exhaustion under a low
RLIMIT_NOFILE (no crash, no spinning, service resumes)."""

import os
import select
import shutil
import time

import pytest

from harness import (
    RawConn,
    config,
    http_request,
    metric_value,
    parse_metrics,
    route,
    scaled,
    wait_until,
)


def nginx_gateway(ficus, nginx, server=None, **kw):
    n = nginx("up")
    return ficus(config({"up": n.addr}, [route("main", "/", "up")], server=server), **kw), n


def request_bytes(i):
    return f"GET /c/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def test_200_concurrent_keepalive_connections(ficus, nginx):
    f, _ = nginx_gateway(ficus, nginx)
    conns = [RawConn(f.port, timeout=10) for _ in range(200)]
    try:
        for rnd in range(2):
            for i, c in enumerate(conns):
                c.send(request_bytes(i))
            for i, c in enumerate(conns):
                r = c.read_final_response()
                assert r.status == 200, f"round {rnd}, connection {i}: {r!r}"
                assert r.body == b"hello from nginx\n", repr(r)
                assert r.header("X-Nginx-Name") == "up", repr(r)
    finally:
        for c in conns:
            c.close()
    assert f.alive()


def readable(conns, timeout):
    """The subset of conns with bytes (or EOF) waiting, after up to timeout."""
    ready, _, _ = select.select([c.sock for c in conns], [], [], timeout)
    return [c for c in conns if c.sock in ready or c.buf]


def test_max_connections_extra_clients_wait_then_get_served(ficus, nginx):
    f, _ = nginx_gateway(ficus, nginx, server={"max_connections": 50, "workers": 1})
    first = [RawConn(f.port, timeout=10) for _ in range(50)]
    extra = []
    try:
        for i, c in enumerate(first):
            c.send(request_bytes(i))
            r = c.read_final_response()
            assert r.status == 200, f"connection {i} of the first 50: {r!r}"
        extra = [RawConn(f.port, timeout=10) for _ in range(20)]
        for i, c in enumerate(extra):
            c.send(request_bytes(100 + i))
        early = readable(extra, 1.0)
        assert not early, f"{len(early)} connections beyond max_connections=50 were answered"
        for c in first[:20]:
            c.close()
        for i, c in enumerate(extra):
            r = c.read_final_response()
            assert r.status == 200, f"waiting connection {i} after 20 others closed: {r!r}"
        # The 30 survivors of the first batch still work.
        for i, c in enumerate(first[20:]):
            c.send(request_bytes(i))
            assert c.read_final_response().status == 200
    finally:
        for c in first + extra:
            c.close()
    assert f.alive()
    assert http_request(f.port, "GET", "/after").status == 200


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit not installed")
def test_descriptor_exhaustion_no_crash_no_spin(ficus, nginx):
    f, _ = nginx_gateway(ficus, nginx, server={"workers": 1},
                         wrapper=["prlimit", "--nofile=64:64"])
    conns = []
    try:
        # Connections that send nothing hold one descriptor each until the
        # header timeout, so accept itself runs out (requests would also open
        # upstream connections, and whichever of the two ran out first decided
        # whether accept ever saw EMFILE).
        for i in range(100):
            try:
                conns.append(RawConn(f.port, timeout=1))
            except OSError:
                pass  # shed by ficus, or its backlog is full: both allowed
        time.sleep(0.5)
        assert f.alive(), f"ficus died under descriptor exhaustion:\n{f.stderr[-3000:]}"
        before = cpu_seconds(f.pid)
        time.sleep(2.0)
        spent = cpu_seconds(f.pid) - before
        assert f.alive(), f"ficus died under descriptor exhaustion:\n{f.stderr[-3000:]}"
        # A spinning loop burns ~2 s of CPU here; an idle one almost none.
        assert spent < 0.5, f"ficus used {spent:.2f}s CPU in 2s while out of descriptors"
    finally:
        for c in conns:
            c.close()

    def serves():
        try:
            return http_request(f.port, "GET", "/after-exhaustion", timeout=2).status == 200
        except OSError:
            return False

    assert wait_until(serves, scaled(10), interval=0.2), \
        "ficus does not serve again after the connections closed"
    assert f.alive()
    s = parse_metrics(f.metrics_text())
    rejected = metric_value(s, "ficus_downstream_connections_rejected_total")
    assert rejected and rejected > 0, f"shed connections not counted (rejected_total={rejected})"


def test_concurrent_clients_get_their_own_responses(ficus, echo_backend):
    """No cross-talk: 8 keep-alive clients at once, each response must echo
    the exact request (path and body hash) that was sent on that connection."""
    import hashlib
    import http.client
    import random
    import threading

    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr}, [route("main", "/", "echo")]))
    problems = []

    def client(k):
        rnd = random.Random(k)
        conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=scaled(10))
        try:
            for i in range(40):
                body = rnd.randbytes(rnd.randrange(0, 20000))
                path = f"/t{k}/r{i}?n={len(body)}"
                r = http_request(f.port, "POST", path, body=body, conn=conn)
                seen = r.json() if r.status == 200 else {}
                if (r.status, seen.get("path"), seen.get("body_sha256")) != \
                        (200, path, hashlib.sha256(body).hexdigest()):
                    problems.append(f"client {k} request {i}: sent {path}, got {r!r}")
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            problems.append(f"client {k}: {e!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(60))
    assert not any(t.is_alive() for t in threads), "clients still running after 60s"
    assert not problems, "\n".join(problems[:5])
