"""Graceful shutdown (contract section 7): on SIGTERM /readyz turns 503 at
once, ficus keeps serving for drain_delay, then closes its listeners and idle
connections, answers in-flight requests (with Connection: close) and exits 0
when they are done, or at drain_timeout."""

import signal
import socket
import threading
import time

from harness import config, http_request, route, scaled, wait_until


def admin_status(f, path):
    host, port = f.admin_listen.rsplit(":", 1)
    try:
        return http_request(int(port), "GET", path).status
    except OSError:
        return None


def refused(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def test_sigterm_drains_in_flight_requests_and_exits_0(ficus, mock):
    slow = mock("slow", latency="1500ms")
    f = ficus(config({"slow": slow.addr}, [route("r", "/", "slow")],
                     server={"workers": 2, "drain_delay": "1s", "drain_timeout": "10s"}))
    assert admin_status(f, "/readyz") == 200
    results = {}

    def call(name, path):
        try:
            r = http_request(f.port, "GET", path, timeout=scaled(10))
            results[name] = (r.status, r.header("Connection"))
        except OSError as e:
            results[name] = ("error", repr(e))

    first = threading.Thread(target=call, args=("in_flight", "/a"))
    first.start()
    time.sleep(0.3)  # the request has reached ficus and the slow backend
    f.proc.send_signal(signal.SIGTERM)
    # Readiness fails at once, liveness stays.
    assert wait_until(lambda: admin_status(f, "/readyz") == 503, scaled(1))
    assert admin_status(f, "/healthz") == 200
    # Still serving during drain_delay, and saying the connection closes.
    during = threading.Thread(target=call, args=("during_delay", "/b"))
    during.start()
    first.join(scaled(10))
    during.join(scaled(10))
    assert results["in_flight"][0] == 200, results
    assert results["during_delay"][0] == 200, results
    assert (results["during_delay"][1] or "").lower() == "close", results
    # After the delay the listeners are closed, and the process exits 0.
    assert wait_until(lambda: refused(f.port), scaled(3))
    assert f.proc.wait(timeout=scaled(10)) == 0


def test_idle_keepalive_connections_are_closed_at_drain(ficus, mock):
    m = mock("m")
    f = ficus(config({"m": m.addr}, [route("r", "/", "m")],
                     server={"workers": 1, "drain_delay": "200ms", "drain_timeout": "10s"}))
    s = socket.create_connection(("127.0.0.1", f.port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    s.settimeout(scaled(3))
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    f.proc.send_signal(signal.SIGTERM)
    # The idle keep-alive connection is closed by ficus (EOF), and ficus exits.
    s.settimeout(scaled(5))
    assert s.recv(65536) == b""
    s.close()
    assert f.proc.wait(timeout=scaled(5)) == 0


def test_drain_timeout_bounds_the_shutdown(ficus, raw_backend):
    hang = raw_backend("hang")
    f = ficus(config({"h": hang.addr}, [route("r", "/", "h", timeout="60s")],
                     server={"workers": 1, "drain_delay": "100ms", "drain_timeout": "1s"}))
    s = socket.create_connection(("127.0.0.1", f.port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.2)
    start = time.monotonic()
    f.proc.send_signal(signal.SIGTERM)
    assert f.proc.wait(timeout=scaled(10)) == 0
    # drain_delay + drain_timeout, not the route's 60 s.
    assert time.monotonic() - start < scaled(5)
    s.close()


def test_dropped_access_log_lines_are_exposed(ficus, mock):
    from harness import metric_value, parse_metrics
    m = mock("m")
    f = ficus(config({"m": m.addr}, [route("r", "/", "m")]))
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_access_log_dropped_lines_total") == 0


def test_a_second_gateway_on_the_same_port_is_refused(ficus, mock, tmp_path):
    """SO_REUSEPORT would let a second `ficus run` bind the port and the
    kernel split the traffic between two configurations (section 7)."""
    from harness import free_port, run_cli, to_yaml
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    for listen, admin in ((f.listen, f"127.0.0.1:{free_port()}"),
                          (f"0.0.0.0:{f.port}", f"127.0.0.1:{free_port()}"),
                          (f"127.0.0.1:{free_port()}", f.admin_listen)):
        cfg = config({"a": a.addr}, [route("r", "/", "a")], server={"listen": [listen]})
        cfg["admin"] = {"listen": admin}
        path = tmp_path / "second.yaml"
        path.write_text(to_yaml(cfg))
        r = run_cli(["run", "-c", str(path)], timeout=10)
        assert r.returncode == 1, (listen, admin, r.stderr)
        assert "already" in r.stderr or "in use" in r.stderr, r.stderr
    # The first one is untouched and alone on its port.
    for _ in range(20):
        assert http_request(f.port, "GET", "/").status == 200
    assert f.alive()
