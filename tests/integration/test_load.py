"""`ficus load` (contract 9): open-loop load at a fixed rate over keep-alive
connections, latency from each request's scheduled send time (a stall shows
in p99 as it does for the users), the final table and --json, --find-knee on
a backend of known capacity, --plan's arithmetic, --svg, and exit codes."""

import json
import math
import socket
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from harness import run_cli


def load(*args, timeout=120):
    return run_cli(["load", *args], timeout=timeout)


def test_the_achieved_rate_is_the_asked_rate(mock):
    m = mock("m")
    p = load(f"http://{m.addr}/x", "--rate", "2000", "--duration", "2s", "--connections", "8",
             "--json")
    assert p.returncode == 0, p.stderr
    run = json.loads(p.stdout)["run"]
    assert run["scheduled"] == 4000 and run["answered"] == 4000 and run["errors"] == 0
    assert abs(run["achieved_rate"] - 2000) / 2000 < 0.02, run
    assert run["status"] == {"200": 4000}
    assert 0 < run["latency_ms"]["p50"] <= run["latency_ms"]["p99"] <= run["latency_ms"]["max"]


def test_the_table(mock):
    m = mock("m", status=503)
    p = load(f"http://{m.addr}/x", "--rate", "200", "--duration", "1s", "--method", "POST",
             "--header", "X-Test: 1")
    assert p.returncode == 0, p.stderr
    assert "asked 200 req/s" in p.stdout and "503: 200" in p.stdout
    assert "p99.9" in p.stdout and "200 errors" in p.stdout


class StallingBackend:
    """HTTP/1.1 keep-alive on 127.0.0.1; after `after` requests the whole
    server stalls for `stall` seconds once (every connection waits)."""

    def __init__(self, after, stall):
        self.after, self.stall, self.count = after, stall, 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        self.accepted = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        d = c.recv(65536)
                    except OSError:
                        return
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                body = b"" if head.startswith(b"HEAD ") else b"ok"
                with self.lock:  # one at a time: a stall holds everyone
                    self.count += 1
                    if self.count == self.after:
                        time.sleep(self.stall)
                try:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + body)
                except OSError:
                    return

    def close(self):
        self.closed = True
        self.sock.close()


def test_a_stall_shows_in_p99_as_the_users_saw_it():
    b = StallingBackend(after=200, stall=1.0)
    try:
        p = load(f"http://127.0.0.1:{b.port}/", "--rate", "400", "--duration", "3s",
                 "--connections", "16", "--json")
    finally:
        b.close()
    assert p.returncode == 0, p.stderr
    run = json.loads(p.stdout)["run"]
    lat = run["latency_ms"]
    # Open loop: the ~400 requests scheduled during the 1 s stall all waited;
    # a closed-loop tool would have sent them late and shown a clean p99.
    assert lat["p50"] < 200, lat
    assert lat["p99"] >= 500, lat
    assert run["answered"] == run["scheduled"] == 1200


def test_the_knee_of_a_backend_of_known_capacity(mock, tmp_path):
    # 4 connections to a backend that answers after 10 ms: 400 req/s at most.
    m = mock("m", latency="10ms")
    plan = tmp_path / "events.yaml"
    plan.write_text("- {name: normal, peak: 1000}\n- {name: new year sale, peak: 8000}\n")
    svg = tmp_path / "knee.svg"
    p = load(f"http://{m.addr}/", "--rate", "100", "--duration", "1s", "--connections", "4",
             "--p99", "100ms", "--find-knee", "--plan", str(plan), "--headroom", "20%",
             "--svg", str(svg), "--json", timeout=180)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    knee = out["knee_rate"]
    assert 200 <= knee <= 400, out["steps"]
    # Every step above the knee missed; the knee step met the goal.
    assert all(not s["ok"] for s in out["steps"] if s["rate"] > knee)
    assert any(s["ok"] and s["rate"] == knee for s in out["steps"])
    assert out["capacity"] == knee and out["headroom"] == 0.2
    want = {e: max(1, math.ceil(peak / (knee * 0.8) - 1e-9))
            for e, peak in (("normal", 1000), ("new year sale", 8000))}
    assert {e["event"]: e["instances"] for e in out["plan"]} == want
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert any("knee" in (t.text or "") for t in root.iter() if t.tag.endswith("text"))


def test_exit_codes(mock, tmp_path):
    slow = mock("slow", latency="50ms")
    # --p99 missed: 1.
    p = load(f"http://{slow.addr}/", "--rate", "50", "--duration", "1s", "--p99", "10ms")
    assert p.returncode == 1 and "MISSED" in p.stdout, p.stdout
    p = load(f"http://{slow.addr}/", "--rate", "50", "--duration", "1s", "--p99", "500ms")
    assert p.returncode == 0 and "met" in p.stdout
    # Nothing listening: 2.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = load(f"http://127.0.0.1:{port}/", "--rate", "20", "--duration", "500ms")
    assert p.returncode == 2 and "no request was answered" in p.stderr
    # Usage: 2.
    for args in (["--rate", "0", "http://127.0.0.1:1/"], ["--find-knee", "http://127.0.0.1:1/"],
                 ["https://127.0.0.1:1/"], [], ["http://127.0.0.1:1/", "--headroom", "100%"],
                 ["http://127.0.0.1:1/", "--header", "no colon"]):
        p = load(*args)
        assert p.returncode == 2 and "usage: ficus load" in p.stderr, (args, p.stderr)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x, peak: -3}\n")
    p = load("http://127.0.0.1:1/", "--plan", str(bad))
    assert p.returncode == 2 and f"{bad}:1:" in p.stderr and "peak" in p.stderr


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_keep_alive_connections_are_reused(method):
    b = StallingBackend(after=0, stall=0)
    try:
        p = load(f"http://127.0.0.1:{b.port}/k", "--rate", "500", "--duration", "1s",
                 "--connections", "4", "--method", method, "--json")
    finally:
        b.close()
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["run"]["answered"] == 500
    assert b.count == 500 and b.accepted == 4
