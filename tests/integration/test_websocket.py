"""WebSocket and other upgrades (contract section 3.1): the upgrade request
is routed like any other and forwarded with its Upgrade header; after the
upstream's 101 ficus relays bytes both ways until either side closes (a
half-close is passed on), closes idle tunnels, keeps them across a reload
and through a drain, logs each when it closes and counts open ones."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

websockets = pytest.importorskip("websockets")

from harness.backends import recv_head  # noqa: E402
from harness import (RawConn, config, http_request, metric_value, parse_metrics,  # noqa: E402
                     route, scaled, wait_until)


class WsEcho:
    """A websockets echo server on its own event loop thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.paths = []

        async def echo(ws, path=None):
            self.paths.append(path if path is not None else ws.path)
            async for msg in ws:
                await ws.send(msg)

        async def main():
            self.server = await websockets.serve(echo, "127.0.0.1", 0, max_size=None)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            await self.server.wait_closed()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),),
                                       daemon=True)
        self.thread.start()
        assert ready.wait(5)
        self.addr = f"127.0.0.1:{self.port}"

    def stop(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(timeout=5)


class RawUpgrade:
    """Answers the first request head with 101 (websocket), then echoes what it
    reads prefixed by 'got:' once the client half-closes, then closes."""

    def __init__(self, response=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.response = response or (b"HTTP/1.1 101 Switching Protocols\r\n"
                                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        self.heads = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        c.settimeout(5)
        try:
            got = recv_head(c)
            if got is None:
                return
            head, rest = got
            self.heads.append(head)
            c.sendall(self.response)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                rest += d
            c.sendall(b"got:" + rest)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.sock.close()


@pytest.fixture
def ws_echo():
    servers = []

    def start():
        s = WsEcho()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def run(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, scaled(timeout)))


def tunnels(f, name="ws"):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_tunnels", route=name) or 0


def ws_config(addr, server=None, **route_extra):
    return config({"ws": addr}, [route("ws", "/ws", "ws", **route_extra),
                                 route("other", "/", "ws")], server=server)


def test_websocket_echo_through_ficus(ficus, ws_echo):
    e = ws_echo()
    f = ficus(ws_config(e.addr))

    async def talk():
        async with websockets.connect(f"ws://127.0.0.1:{f.port}/ws/chat?room=1",
                                      max_size=None) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01binary\xff")
            assert await ws.recv() == b"\x00\x01binary\xff"
            big = os.urandom(1 << 20)  # incompressible: 1 MiB on the wire
            await ws.send(big)
            assert await ws.recv() == big
            open_now = tunnels(f)
            return open_now, f.metrics_text()

    open_now, text = run(talk())
    assert open_now == 1
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=scaled(10))
        assert p.returncode == 0, f"promtool: {p.stdout}{p.stderr}"
    assert e.paths == ["/ws/chat?room=1"]
    assert wait_until(lambda: tunnels(f) == 0, scaled(5)), f.metrics_text()
    # One access-log line, written when the tunnel closed.
    assert wait_until(lambda: any(r.get("status") == 101 for r in f.access_log()), scaled(5))
    rec = [r for r in f.access_log() if r.get("status") == 101][0]
    assert rec["route"] == "ws" and rec["upstream_status"] == 101
    assert rec["bytes_in"] > (1 << 20) and rec["bytes_out"] > (1 << 20), rec
    assert rec["error"] is None, rec


def test_101_to_a_request_without_upgrade_is_502(ficus):
    be = RawUpgrade()
    f = ficus(ws_config(be.addr))
    r = http_request(f.port, "GET", "/ws")
    assert r.status == 502, repr(r)
    assert r.json()["error"] == "bad_gateway"
    assert "101 Switching Protocols to a request that asked for no upgrade" in \
        r.json()["message"], repr(r)
    be.stop()


def test_101_to_another_protocol_is_502(ficus):
    be = RawUpgrade(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                    b"Connection: Upgrade\r\n\r\n")
    f = ficus(ws_config(be.addr))
    r = http_request(f.port, "GET", "/ws", headers={"Connection": "Upgrade",
                                                    "Upgrade": "websocket"})
    assert r.status == 502, repr(r)
    assert "another protocol than the request asked for" in r.json()["message"], repr(r)
    be.stop()


def test_upgrades_refused_on_a_route_with_none(ficus, ws_echo):
    e = ws_echo()
    f = ficus(ws_config(e.addr, upgrades=[]))
    r = http_request(f.port, "GET", "/ws", headers={"Connection": "Upgrade",
                                                    "Upgrade": "websocket"})
    assert r.status == 400, repr(r)
    assert "upgrade" in r.json()["message"]


def test_a_normal_answer_to_an_upgrade_is_relayed(ficus, mock):
    m = mock("plain")
    f = ficus(ws_config(m.addr))
    r = http_request(f.port, "GET", "/ws", headers={"Connection": "Upgrade",
                                                    "Upgrade": "websocket"})
    assert r.status == 200, repr(r)
    assert r.header("X-Mock-Name") == "plain"


def test_half_close_is_passed_on_and_early_bytes_kept(ficus):
    be = RawUpgrade()
    f = ficus(ws_config(be.addr))
    with RawConn(f.port) as c:
        # Bytes right behind the head must reach the upstream after the 101.
        c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
               b"Upgrade: websocket\r\n\r\nearly-")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += c.read_exact(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"upgrade: websocket" in head.lower() and b"connection: upgrade" in head.lower()
        c.send(b"hello")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.read_to_close() == b"got:early-hello"
    assert b"upgrade: websocket" in be.heads[0].lower()
    assert b"connection: upgrade" in be.heads[0].lower()
    be.stop()


def test_idle_tunnel_is_closed(ficus, ws_echo):
    e = ws_echo()
    f = ficus(ws_config(e.addr, server={"tunnel_idle_timeout": "300ms"}))

    async def idle():
        async with websockets.connect(f"ws://127.0.0.1:{f.port}/ws", ping_interval=None) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), scaled(10))

    run(idle())
    assert wait_until(lambda: any(r.get("error") == "tunnel_idle_timeout"
                                  for r in f.access_log()), scaled(5)), f.access_log()


def test_a_reload_keeps_an_open_tunnel(ficus, ws_echo, mock):
    e = ws_echo()
    m = mock("new")
    f = ficus(ws_config(e.addr))

    async def across_reload():
        async with websockets.connect(f"ws://127.0.0.1:{f.port}/ws") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            f.write_config(config({"ws": m.addr}, [route("ws", "/ws", "ws")]))
            f.signal(signal.SIGHUP)
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(lambda: "configuration #2 loaded" in f.stderr,
                                         scaled(5)))
            assert http_request(f.port, "GET", "/ws").header("X-Mock-Name") == "new"
            await ws.send("after")
            assert await ws.recv() == "after"

    run(across_reload())


def test_a_tunnel_lives_through_the_drain_then_closes(ficus, ws_echo):
    e = ws_echo()
    f = ficus(ws_config(e.addr, server={"drain_delay": "0s", "drain_timeout": "2s"}))

    async def through_drain():
        async with websockets.connect(f"ws://127.0.0.1:{f.port}/ws", ping_interval=None) as ws:
            f.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            await ws.send("still")
            assert await ws.recv() == "still"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), scaled(10))

    run(through_drain())
    assert wait_until(lambda: not f.alive(), scaled(10))
    assert f.proc.returncode == 0


def test_http2_preface_gets_a_clear_error_when_http2_is_off(ficus, mock):
    m = mock("a")
    f = ficus(ws_config(m.addr, server={"http2": {"enabled": False}}))
    with RawConn(f.port) as c:
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        r = c.read_final_response()
        assert r.status == 505, repr(r)
        assert "HTTP/2 is not enabled" in r.json()["message"]
        assert c.closed_within(3)
    lines = f.wait_access_log(1)
    assert lines and lines[-1]["status"] == 505, lines
    assert lines[-1]["error"] == "http_version_not_supported", lines
