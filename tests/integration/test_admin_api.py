"""The admin API fit for a pod IP (contract sections 2 and 6): a bearer token
from admin.token_env on every endpoint but the probes and /metrics, 405 with
Allow, GET / listing the endpoints, garbage and TLS answered at once, /config
with the YAML's key names, and partial weight updates."""

import http.client
import json
import socket
import time

from harness import config, route, run_cli, scaled, to_yaml


def admin(f, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=scaled(5))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        c.close()


def test_token_protects_all_but_probes_and_metrics(ficus, mock, monkeypatch):
    monkeypatch.setenv("FICUS_TEST_ADMIN_TOKEN", "s3cret-token")
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")],
                     admin={"token_env": "FICUS_TEST_ADMIN_TOKEN"}))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert admin(f, "GET", path)[0] == 200, path
    for path in ("/", "/config", "/target_groups", "/routes/r/weights"):
        st, h, body = admin(f, "GET", path)
        assert st == 401, (path, st, body)
        assert h["www-authenticate"].startswith("Bearer"), h
        assert json.loads(body)["error"] == "unauthorized"
        st, _, _ = admin(f, "GET", path, headers={"Authorization": "Bearer wrong-token!"})
        assert st == 401
        st, _, body = admin(f, "GET", path, headers={"Authorization": "Bearer s3cret-token"})
        assert st == 200, (path, body)
    st, _, body = admin(f, "PUT", "/routes/r/weights", body=b'{"a":5}')
    assert st == 401
    st, _, body = admin(f, "GET", "/config", headers={"Authorization": "Bearer s3cret-token"})
    cfg = json.loads(body)
    assert cfg["admin"]["token_env"] == "FICUS_TEST_ADMIN_TOKEN"
    assert "s3cret-token" not in body


def test_token_env_must_be_set(tmp_path, monkeypatch):
    monkeypatch.delenv("FICUS_TEST_UNSET_TOKEN", raising=False)
    p = tmp_path / "c.yaml"
    p.write_text(to_yaml(config({"a": "127.0.0.1:9"}, [route("r", "/", "a")],
                                admin={"listen": "127.0.0.1:1",
                                       "token_env": "FICUS_TEST_UNSET_TOKEN"})))
    r = run_cli(["check", "-c", str(p)])
    assert r.returncode == 1 and "admin.token_env" in r.stderr, r.stderr


def test_wrong_method_is_405_with_allow(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    for method, path, allow in (("POST", "/healthz", "GET, HEAD"), ("DELETE", "/metrics", "GET, HEAD"),
                                ("POST", "/config", "GET"), ("PUT", "/target_groups", "GET"),
                                ("POST", "/routes/r/weights", "GET, PUT"), ("POST", "/", "GET, HEAD")):
        st, h, body = admin(f, method, path, body=b"")
        assert st == 405, (method, path, st)
        assert h.get("allow") == allow, (method, path, h)
        assert json.loads(body)["error"] == "method_not_allowed"
    st, _, body = admin(f, "GET", "/nope")
    assert st == 404 and json.loads(body)["error"] == "not_found"


def test_root_lists_the_endpoints(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    st, h, body = admin(f, "GET", "/")
    assert st == 200 and h["content-type"].startswith("application/json")
    eps = json.loads(body)["endpoints"]
    assert "GET /metrics" in eps and "PUT /routes/NAME/weights" in eps


def test_garbage_and_tls_are_answered_at_once(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    client_hello = bytes.fromhex("16030100a5010000a10303") + b"\x00" * 32
    for junk in (client_hello, b"\x00\x01\x02garbage", b"hello there\x07",
                 # a request line, then a header line that cannot be one
                 b"GET / HTTP/1.1\r\nHost x\r\n", b"GET / HTTP/1.1\r\n\x16\x03\x01\x00\xa5",
                 b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n"):
        s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=scaled(3))
        t0 = time.monotonic()
        s.sendall(junk)
        got = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
        s.close()
        # Closed long before the 10 s admin timeout (not a timing assertion
        # on ficus's speed: the read above would otherwise block for 10 s).
        assert time.monotonic() - t0 < scaled(5), junk
        assert got.startswith(b"HTTP/1.1 400"), got


def test_config_uses_the_yaml_key_names(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": {"targets": [a.addr], "connect_timeout": "250ms",
                            "keepalive": {"max_idle": 8, "idle_timeout": "2m"}}},
                     [route("r", "/", "a", timeout="5s",
                            retries={"attempts": 1, "per_try_timeout": "1s",
                                     "retry_on": ["5xx"], "backoff": "25ms"})],
                     server={"header_timeout": "10s", "max_body_size": "8MiB"}))
    cfg = json.loads(f.admin_get("/config")[2])
    s = cfg["server"]
    assert s["header_timeout"] == "10s" and s["max_body_size"] == "8MiB", s
    assert s["tunnel_idle_timeout"] == "1h"
    g = cfg["target_groups"]["a"]
    assert g["connect_timeout"] == "250ms" and g["keepalive"] == {"max_idle": 8,
                                                                  "idle_timeout": "2m"}, g
    r = cfg["routes"][0]
    assert r["timeout"] == "5s" and r["upgrades"] == ["websocket"]
    assert r["retries"]["per_try_timeout"] == "1s" and r["retries"]["backoff"] == "25ms"
    assert not any(k.endswith("_ms") for k in json.dumps(cfg).split('"')), cfg


def test_partial_weight_update_keeps_the_others(ficus, mock):
    a, b, c = mock("a"), mock("b"), mock("c")
    f = ficus(config({"a": a.addr, "b": b.addr, "c": c.addr},
                     [route("r", "/", [("a", 80), ("b", 10), ("c", 10)])]))
    st, _, body = admin(f, "PUT", "/routes/r/weights", body=b'{"b":30}')
    assert st == 200, body
    assert json.loads(body)["weights"] == {"a": 80, "b": 30, "c": 10}


def same_keys_and_values(written, shown, where=""):
    """Every key the file wrote is in /config under the same name, with the
    value as the file wrote it."""
    if isinstance(written, dict):
        assert isinstance(shown, dict), f"{where}: {shown!r}"
        for k, v in written.items():
            assert k in shown, f"{where}.{k} missing from /config ({sorted(shown)})"
            same_keys_and_values(v, shown[k], f"{where}.{k}")
    elif isinstance(written, list):
        assert isinstance(shown, list) and len(shown) == len(written), f"{where}: {shown!r}"
        for i, (a, b) in enumerate(zip(written, shown)):
            same_keys_and_values(a, b, f"{where}[{i}]")
    else:
        assert written == shown, f"{where}: file {written!r}, /config {shown!r}"


def test_config_diffs_clean_against_the_file(ficus, mock, tmp_path):
    """Every key of a file that sets most of them reads back unchanged: what
    a diff of /config against the file (as JSON) shows is only defaults."""
    m = mock("m")
    members = tmp_path / "shops.txt"
    members.write_text("acme\n")
    group = {"targets": [m.addr], "dns_refresh": "30s", "balance": "least_request",
             "connect_timeout": "1500ms", "max_connections": 100, "max_pending": 10,
             "max_requests": 50, "keepalive": {"max_idle": 8, "idle_timeout": "1m"},
             "health_check": {"path": "/", "interval": "5s", "timeout": "1s",
                              "healthy_threshold": 2, "unhealthy_threshold": 3},
             "outlier_detection": {"consecutive_errors": 5, "base_ejection_time": "30s",
                                   "max_ejection_percent": 50},
             "required": False}
    shop = route("shop", {"path_regex": "^/shop/(?<shop>[a-z]+)", "methods": ["GET"],
                          "in_set": {"capture": "shop", "set": "shops"}}, "g",
                 timeout="5s", sticky="header:x-user",
                 retries={"attempts": 2, "per_try_timeout": "2s",
                          "retry_on": ["5xx", "connect-failure"], "backoff": "25ms",
                          "budget_percent": 20},
                 retry_non_idempotent=True, ip_allow=["10.0.0.0/8"], ip_deny=["10.9.0.0/16"],
                 request_headers={"set": {"x-from": "ficus"}, "remove": ["x-internal"]})
    rest = route("rest", "/api", "g", rewrite_prefix="/v1")
    written = config({"g": group}, [shop, rest],
                     server={"workers": 1, "max_connections": 500, "header_timeout": "10s",
                             "idle_timeout": "1m", "max_header_size": "16KiB",
                             "max_body_size": "1GiB", "retry_buffer_size": 1000,
                             "drain_delay": "0s", "drain_timeout": "1s",
                             "trusted_proxies": ["10.0.0.0/8"]},
                     sets={"shops": {"file": str(members), "refresh": "30s"}},
                     tracing={"service_name": "edge", "sample_ratio": 0.5,
                              "propagation": ["w3c"]})
    f = ficus(written)
    status, _, text = admin(f, "GET", "/config")
    assert status == 200, text
    written["server"]["listen"] = [f.listen]
    written["admin"] = {"listen": f.admin_listen}
    same_keys_and_values(written, json.loads(text))
