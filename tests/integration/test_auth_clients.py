"""API clients (contract sections 2 and 3): X-Api-Key checked against the
SHA-256 of each client's keys (several per client, from the file or the
environment), 401 missing/unknown, 403 for a client a route does not list,
the key stripped and X-Client-Id set upstream, a client-sent X-Client-Id
never passing, the client id in the access log, failures counted."""

import hashlib
import json

from harness import (config, echo_headers, http_request, metric_value, parse_metrics,
                     raw_request, route)

IOS_KEY = "ios-key-2026-aaaaaaaaaaaaaaaa"
IOS_NEXT = "ios-key-2027-bbbbbbbbbbbbbbbb"
WEB_KEY = "web-key-cccccccccccccccccccccc"
ENV_KEY = "partner-key-from-the-environment"


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


CLIENTS = [
    {"id": "ios-app", "api_keys_sha256": [sha(IOS_KEY), sha(IOS_NEXT).upper()]},
    {"id": "web", "api_keys_sha256": [sha(WEB_KEY)]},
    {"id": "partner", "api_keys_env": ["FICUS_TEST_PARTNER_KEY"]},
]


def start(ficus, echo_backend, monkeypatch):
    monkeypatch.setenv("FICUS_TEST_PARTNER_KEY", ENV_KEY)
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr}, [
        route("ios-only", "/ios", "echo", auth={"client": "required"}, clients=["ios-app"]),
        route("required", "/req", "echo", auth={"client": "required"}),
        route("optional", "/opt", "echo", auth={"client": "optional"}),
        route("open", "/", "echo"),
    ], clients=CLIENTS))
    return f, echo


def upstream_headers(r):
    return echo_headers(r.json())


def test_known_keys_pass_with_the_client_id_and_without_the_key(ficus, echo_backend,
                                                                 monkeypatch):
    f, _ = start(ficus, echo_backend, monkeypatch)
    for key, client in [(IOS_KEY, "ios-app"), (IOS_NEXT, "ios-app"), (WEB_KEY, "web"),
                        (ENV_KEY, "partner")]:
        r = http_request(f.port, "GET", "/req/x",
                         headers={"X-Api-Key": key, "X-Client-Id": "admin"})
        assert r.status == 200, (client, r)
        h = upstream_headers(r)
        assert h.get("x-client-id") == [client], h
        assert "x-api-key" not in h, h


def test_missing_and_unknown_keys_get_401_and_are_counted(ficus, echo_backend, monkeypatch):
    f, echo = start(ficus, echo_backend, monkeypatch)
    before = echo.count()
    cases = [({}, "missing_api_key"), ({"X-Api-Key": "nope"}, "invalid_api_key"),
             ({"X-Api-Key": IOS_KEY[:-1]}, "invalid_api_key"),
             ({"X-Api-Key": ""}, "invalid_api_key")]
    for headers, reason in cases:
        r = http_request(f.port, "GET", "/req/x", headers=headers)
        assert r.status == 401, (headers, r)
        body = r.json()
        assert body["error"] == "unauthorized" and body["request_id"], body
        assert r.header("X-Request-Id") == body["request_id"]
    # Two keys are no key, even when both are valid.
    r, c = raw_request(f.port, (f"GET /req/x HTTP/1.1\r\nHost: t\r\nX-Api-Key: {IOS_KEY}\r\n"
                                f"X-Api-Key: {WEB_KEY}\r\n\r\n").encode())
    c.close()
    assert r.status == 401, r
    assert echo.count() == before, "a refused request reached the backend"
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_auth_failures_total", route="required",
                        reason="missing_api_key") == 1
    assert metric_value(m, "ficus_auth_failures_total", route="required",
                        reason="invalid_api_key") == 4


def test_optional_client_auth(ficus, echo_backend, monkeypatch):
    f, _ = start(ficus, echo_backend, monkeypatch)
    r = http_request(f.port, "GET", "/opt", headers={"X-Client-Id": "ios-app"})
    assert r.status == 200, r
    assert "x-client-id" not in upstream_headers(r), "a client-sent X-Client-Id passed"
    r = http_request(f.port, "GET", "/opt", headers={"X-Api-Key": WEB_KEY})
    assert upstream_headers(r).get("x-client-id") == ["web"]
    r = http_request(f.port, "GET", "/opt", headers={"X-Api-Key": "wrong"})
    assert r.status == 401, "an invalid key is refused even where a key is optional"


def test_route_clients_list_gives_403_to_others(ficus, echo_backend, monkeypatch):
    f, echo = start(ficus, echo_backend, monkeypatch)
    r = http_request(f.port, "GET", "/ios/a", headers={"X-Api-Key": IOS_NEXT})
    assert r.status == 200, r
    before = echo.count()
    r = http_request(f.port, "GET", "/ios/a", headers={"X-Api-Key": WEB_KEY})
    assert r.status == 403, r
    assert r.json()["error"] == "forbidden"
    r = http_request(f.port, "GET", "/ios/a")
    assert r.status == 401, r
    assert echo.count() == before
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_auth_failures_total", route="ios-only",
                        reason="client_not_allowed") == 1


def test_open_route_strips_forged_identity(ficus, echo_backend, monkeypatch):
    f, _ = start(ficus, echo_backend, monkeypatch)
    r = http_request(f.port, "GET", "/", headers={"X-Client-Id": "ios-app",
                                                  "X-Api-Key": IOS_KEY})
    h = upstream_headers(r)
    assert "x-client-id" not in h and "x-api-key" not in h, h


def test_client_id_in_the_access_log(ficus, echo_backend, monkeypatch):
    f, _ = start(ficus, echo_backend, monkeypatch)
    http_request(f.port, "GET", "/req/1", headers={"X-Api-Key": WEB_KEY,
                                                   "X-Request-Id": "log-client"})
    http_request(f.port, "GET", "/req/2", headers={"X-Request-Id": "log-anon"})
    lines = {e["request_id"]: e for e in f.wait_access_log(2)}
    assert lines["log-client"]["client_id"] == "web"
    assert lines["log-anon"]["client_id"] is None
    assert lines["log-anon"]["status"] == 401 and lines["log-anon"]["error"] == "unauthorized"


def test_config_endpoint_redacts_key_hashes(ficus, echo_backend, monkeypatch):
    f, _ = start(ficus, echo_backend, monkeypatch)
    cfg = json.loads(f.admin_get("/config")[2])
    text = json.dumps(cfg)
    assert sha(IOS_KEY) not in text and sha(WEB_KEY) not in text
    clients = {c["id"]: c for c in cfg["clients"]}
    assert clients["ios-app"]["api_keys_sha256"] == "<redacted>"
    assert clients["partner"]["api_keys_env"] == ["FICUS_TEST_PARTNER_KEY"]
    assert ENV_KEY not in text
    routes = {r["name"]: r for r in cfg["routes"]}
    assert routes["ios-only"]["clients"] == ["ios-app"]
    assert routes["ios-only"]["auth"]["client"] == "required"
