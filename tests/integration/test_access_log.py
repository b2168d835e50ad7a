"""The access log (contract section 6.2): one JSON object per request with
exactly the contract's fields, right values for proxied requests, 404s and
upstream timeouts; stdout, a file, off; SIGUSR1 reopens the file."""

import json
import os
import re
import signal
import time

from harness import config, free_port, http_request, route, scaled, wait_until

FIELDS = {
    "time", "request_id", "trace_id", "client_ip", "client_id", "method", "path", "route",
    "target_group", "target", "status", "upstream_status", "attempts", "fallback",
    "duration_ms", "upstream_ms", "bytes_in", "bytes_out", "user_agent", "error",
    "upstream_path", "protocol", "config", "shadow",
}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$")


def gateway(ficus, echo_backend, **top):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr}, [route("main", "/app", "echo")], **top))
    return f, echo


def by_id(lines, rid):
    found = [e for e in lines if e.get("request_id") == rid]
    assert len(found) == 1, f"{len(found)} log lines for request {rid}: {lines}"
    return found[0]


def test_one_line_per_request_with_exact_fields(ficus, echo_backend):
    f, echo = gateway(ficus, echo_backend)
    for i in range(5):
        http_request(f.port, "GET", f"/app/{i}")
    http_request(f.port, "GET", "/nothing-here")
    lines = f.wait_access_log(6)
    time.sleep(0.3)  # a seventh line would show up by now
    lines = f.access_log()
    assert len(lines) == 6, f"{len(lines)} JSON lines on stdout for 6 requests:\n" + "\n".join(f.stdout)
    for e in lines:
        assert set(e) == FIELDS, f"extra {set(e) - FIELDS}, missing {FIELDS - set(e)}"


def test_proxied_request_values(ficus, echo_backend):
    f, echo = gateway(ficus, echo_backend)
    body = b"z" * 123
    r = http_request(f.port, "POST", "/app/item?q=1", body=body,
                     headers={"User-Agent": "ficus-test/1.0", "X-Request-Id": "log-req-1"})
    assert r.status == 200, repr(r)
    lines = f.wait_access_log(1)
    e = by_id(lines, "log-req-1")
    assert RFC3339_MS.match(e["time"]), e["time"]
    assert e["trace_id"] is None or re.match(r"^[0-9a-f]{32}$", e["trace_id"]), e["trace_id"]
    assert e["client_ip"] == "127.0.0.1"
    assert e["client_id"] is None
    assert e["method"] == "POST"
    assert e["path"] in ("/app/item?q=1", "/app/item"), e["path"]
    assert e["route"] == "main"
    assert e["target_group"] == "echo"
    assert e["target"] == echo.addr
    assert e["status"] == 200
    assert e["upstream_status"] == 200
    assert e["attempts"] == 1
    assert e["fallback"] is False
    assert isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0
    assert isinstance(e["upstream_ms"], (int, float)) and 0 <= e["upstream_ms"] <= e["duration_ms"]
    assert isinstance(e["bytes_in"], int) and e["bytes_in"] >= len(body)
    assert isinstance(e["bytes_out"], int) and e["bytes_out"] >= len(r.body)
    assert e["user_agent"] == "ficus-test/1.0"
    assert e["error"] is None


def test_404_values(ficus, echo_backend):
    f, _ = gateway(ficus, echo_backend)
    r = http_request(f.port, "GET", "/nothing-here", headers={"X-Request-Id": "log-404"})
    assert r.status == 404
    e = by_id(f.wait_access_log(1), "log-404")
    assert e["status"] == 404
    assert e["method"] == "GET"
    assert e["path"] == "/nothing-here"
    for k in ("route", "target_group", "target", "upstream_status", "upstream_ms", "client_id"):
        assert e[k] is None, f"{k} = {e[k]!r} for a request that matched no route"
    assert e["attempts"] == 0
    assert e["fallback"] is False
    assert e["user_agent"] is None or isinstance(e["user_agent"], str)
    assert e["error"] is None or isinstance(e["error"], str)


def test_upstream_timeout_logged(ficus, echo_backend, raw_backend):
    echo = echo_backend("e1")
    hang = raw_backend("hang")
    f = ficus(config({"echo": echo.addr, "hang": hang.addr},
                     [route("slow", "/slow", "hang", timeout="1s"), route("main", "/", "echo")]))
    r = http_request(f.port, "GET", "/slow", headers={"X-Request-Id": "log-504"}, timeout=10)
    assert r.status == 504, repr(r)
    e = by_id(f.wait_access_log(1), "log-504")
    assert e["status"] == 504
    assert e["route"] == "slow"
    assert e["target_group"] == "hang"
    assert e["upstream_status"] is None
    assert e["error"] == "upstream_timeout"
    assert e["attempts"] == 1


def test_connect_failure_logged(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr, "dead": f"127.0.0.1:{free_port()}"},
                     [route("dead", "/dead", "dead"), route("main", "/", "echo")]))
    r = http_request(f.port, "GET", "/dead", headers={"X-Request-Id": "log-502"})
    assert r.status == 502, repr(r)
    e = by_id(f.wait_access_log(1), "log-502")
    assert e["status"] == 502
    assert e["upstream_status"] is None
    assert isinstance(e["error"], str) and e["error"], e


def test_log_to_file(ficus, echo_backend, tmp_path):
    path = tmp_path / "access.log"
    f, _ = gateway(ficus, echo_backend, access_log={"path": str(path)})
    for i in range(3):
        http_request(f.port, "GET", f"/app/{i}", headers={"X-Request-Id": f"file-{i}"})
    got = wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= 3, scaled(5))
    assert got, f"access log file has {path.read_text() if path.exists() else 'no file'}"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    # Workers flush their own buffers: lines of different workers may interleave.
    assert sorted(e["request_id"] for e in lines) == ["file-0", "file-1", "file-2"]
    assert f.access_log() == [], "access log lines on stdout although path is a file"


def test_log_off(ficus, echo_backend, tmp_path):
    f, _ = gateway(ficus, echo_backend, access_log={"path": "off"})
    for i in range(3):
        assert http_request(f.port, "GET", f"/app/{i}").status == 200
    time.sleep(0.5)  # several flush intervals
    assert f.access_log() == []
    assert not (tmp_path / "off").exists(), "access_log.path: off created a file named off"


def test_log_off_unquoted_in_handwritten_yaml(ficus, echo_backend, tmp_path):
    # What a user writes: plain `off`, which YAML 1.1 would read as false.
    echo = echo_backend("e1")
    f = ficus(f"""\
server:
  listen: ["@LISTEN@"]
  drain_delay: 0s
admin: {{listen: "@ADMIN@"}}
access_log:
  path: off
target_groups:
  echo: {{targets: ["{echo.addr}"]}}
routes:
  - name: main
    match: {{path_prefix: /}}
    backends: [{{target_group: echo, weight: 1}}]
""")
    for i in range(3):
        assert http_request(f.port, "GET", f"/plain/{i}").status == 200
    time.sleep(0.5)
    assert f.access_log() == []
    assert not (tmp_path / "off").exists(), "path: off wrote a file named off"
    assert not (tmp_path / "false").exists(), "path: off wrote a file named false"


def test_sigusr1_reopens_file(ficus, echo_backend, tmp_path):
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    f, _ = gateway(ficus, echo_backend, access_log={"path": str(path)})
    for i in range(2):
        http_request(f.port, "GET", f"/app/{i}", headers={"X-Request-Id": f"before-{i}"})
    assert wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= 2,
                      scaled(5)), "first lines never written"
    os.rename(path, rotated)
    f.signal(signal.SIGUSR1)
    sent = 0
    for i in range(int(scaled(5) / 0.1)):
        http_request(f.port, "GET", f"/app/after-{i}", headers={"X-Request-Id": f"after-{i}"})
        sent += 1
        time.sleep(0.1)
        if path.exists() and path.read_text().strip():
            break
    assert path.exists() and path.read_text().strip(), \
        "after rename + SIGUSR1, no new file at the original path"
    assert f.alive(), "SIGUSR1 killed ficus"
    time.sleep(0.3)
    old = [json.loads(x)["request_id"] for x in rotated.read_text().splitlines()]
    new = [json.loads(x)["request_id"] for x in path.read_text().splitlines()]
    assert {"before-0", "before-1"} <= set(old), old
    assert all(rid.startswith("after-") for rid in new), new
    assert sorted(old + new) == sorted([f"before-{i}" for i in range(2)]
                                       + [f"after-{i}" for i in range(sent)])


def test_client_gone_before_response_is_499(ficus, echo_backend, raw_backend):
    echo = echo_backend("e1")
    hang = raw_backend("hang")
    f = ficus(config({"echo": echo.addr, "hang": hang.addr},
                     [route("slow", "/slow", "hang", timeout="10s"), route("main", "/", "echo")]))
    from harness import RawConn

    c = RawConn(f.port)
    c.send("GET /slow HTTP/1.1\r\nHost: t\r\nX-Request-Id: log-499\r\n\r\n")
    assert wait_until(lambda: hang.accepted >= 1, scaled(3)), "request never reached upstream"
    c.close()
    lines = f.wait_access_log(1, timeout=5)
    e = by_id(lines, "log-499")
    assert e["status"] == 499, e
    assert e["error"] == "client_closed", e


def test_upstream_path_protocol_and_config(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr},
                     [route("main", "/app", "echo", rewrite_prefix="/v2/app")]))
    r = http_request(f.port, "GET", "/app/x?q=1", headers={"X-Request-Id": "log-up-1"})
    assert r.status == 200
    e = by_id(f.wait_access_log(1), "log-up-1")
    assert e["upstream_path"] == "/v2/app/x?q=1", e
    assert e["protocol"] == "HTTP/1.1" and e["config"] == "#1", e
    # After a reload the next request says which configuration served it.
    f.write_config(config({"echo": echo.addr}, [route("main", "/app", "echo")]))
    import signal as sig
    f.signal(sig.SIGHUP)
    assert wait_until(lambda: "configuration #2 loaded" in f.stderr, scaled(5)), f.stderr
    http_request(f.port, "GET", "/app/y", headers={"X-Request-Id": "log-up-2"})
    assert wait_until(lambda: any(x.get("request_id") == "log-up-2" for x in f.access_log()),
                      scaled(5))
    e2 = by_id(f.access_log(), "log-up-2")
    assert e2["config"] == "#2" and e2["upstream_path"] == "/app/y", e2


def test_never_read_method_and_path_are_null(ficus, echo_backend):
    from harness import RawConn
    f, _ = gateway(ficus, echo_backend, server={"header_timeout": "300ms"})
    with RawConn(f.port) as c:
        c.send(b"GET /app/slow")  # never finished: 408 at header_timeout
        r = c.read_final_response()
        assert r.status == 408
    lines = f.wait_access_log(1)
    e = lines[-1]
    assert e["status"] == 408 and e["method"] is None and e["path"] is None, e
    assert e["protocol"] is None and e["upstream_path"] is None, e


def test_client_ip_is_the_one_the_ip_rules_used(ficus, echo_backend):
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr}, [route("main", "/", "echo")],
                     server={"trusted_proxies": ["127.0.0.0/8"]}))
    http_request(f.port, "GET", "/", headers={"X-Forwarded-For": "203.0.113.9, 127.0.0.5",
                                              "X-Request-Id": "xff-1"})
    e = by_id(f.wait_access_log(1), "xff-1")
    assert e["client_ip"] == "203.0.113.9", e
