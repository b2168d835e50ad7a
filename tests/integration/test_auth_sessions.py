"""Gateway-distributed sessions (contract section 2, session_exchange): the
opaque session token (cookie or header) exchanged with the session service
for a JWT, verified, forwarded as Authorization: Bearer with the session
cookie removed; one exchange per token however many requests carry it;
cached up to cache_ttl and never past the JWT's exp; the service's 401/404,
failures, slowness and absence each handled as the contract says, counted in
ficus_session_exchange_failures_total{reason}, never letting a request on as
a user it did not prove."""

import collections
import threading
import time

from harness import (config, echo_headers, free_port, http_request, metric_value, parse_metrics,
                     route, wait_until)
from harness.scripted import ScriptedServer
from harness.tokens import Key, jwks, token


class SessionService(ScriptedServer):
    """GET /v1/jwt with X-Session-Token: the JWT of a known session (200),
    404 for others; `status` forces an answer, `delay` slows every answer."""

    def __init__(self):
        self.sessions, self.calls = {}, collections.Counter()
        self.status, self.delay, self.body = None, 0.0, None
        super().__init__("/v1/jwt", self.answer)

    def answer(self, h):
        tok = h.headers.get("X-Session-Token", "")
        self.calls[tok] += 1
        if self.delay:
            time.sleep(self.delay)
        status = self.status or (200 if tok in self.sessions else 404)
        body = self.body if self.body is not None else self.sessions.get(tok, "no such session")
        return status, body.encode(), "text/plain"


KEY = Key("ES256", "s1")


def start(ficus, echo_backend, tmp_path, url, cache_ttl="30s", timeout="1s", **se):
    keys = tmp_path / "jwks.json"
    keys.write_text(jwks(KEY))
    echo = echo_backend("e1")
    sx = {"cookie": "sid", "url": url, "provider": "main", "cache_ttl": cache_ttl,
          "timeout": timeout}
    sx.update(se)
    f = ficus(config({"echo": echo.addr}, [
        route("must", "/must", "echo", auth={"user": {"provider": "main", "required": True}}),
        route("may", "/may", "echo", auth={"user": {"provider": "main"}}),
        route("open", "/", "echo"),
    ], server={"workers": 2},
        jwt_providers={"main": {"issuer": "https://id.test", "audiences": ["shop"],
                                "jwks_file": str(keys), "algorithms": ["ES256"],
                                "forward_claims": {"sub": "X-User-Id"}}},
        session_exchange=sx))
    return f, echo


def seen(r):
    return echo_headers(r.json())


def get(f, path, cookie=None, headers=None):
    h = dict(headers or {})
    if cookie:
        h["Cookie"] = cookie
    return http_request(f.port, "GET", path, headers=h, timeout=10)


def failures(f, reason):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_session_exchange_failures_total",
                        reason=reason) or 0


def test_session_becomes_a_bearer_jwt_and_the_cookie_goes(ficus, echo_backend, tmp_path):
    svc = SessionService()
    try:
        jwt = token(KEY, {"sub": "u-42"})
        svc.sessions["opaque-1"] = jwt
        f, _ = start(ficus, echo_backend, tmp_path, svc.url)
        r = get(f, "/must", "theme=dark; sid=opaque-1; lang=ja",
                {"Authorization": "Bearer forged", "X-User-Id": "admin"})
        assert r.status == 200, r
        h = seen(r)
        assert h["authorization"] == [f"Bearer {jwt}"], h
        assert h["x-user-id"] == ["u-42"], h
        assert h["cookie"] == ["theme=dark; lang=ja"], h
        # Cached: more requests, no more calls.
        for _ in range(5):
            assert get(f, "/must", "sid=opaque-1").status == 200
        assert svc.calls["opaque-1"] == 1, svc.calls
    finally:
        svc.stop()


def test_one_exchange_for_many_concurrent_requests(ficus, echo_backend, tmp_path):
    svc = SessionService()
    try:
        svc.sessions["busy"] = token(KEY, {"sub": "u-7"})
        svc.delay = 0.5
        f, echo = start(ficus, echo_backend, tmp_path, svc.url)
        results = []

        def call():
            results.append(get(f, "/must", "sid=busy").status)

        threads = [threading.Thread(target=call) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 40, collections.Counter(results)
        assert svc.calls["busy"] == 1, f"{svc.calls['busy']} exchanges for one token"
    finally:
        svc.stop()


def test_no_user_from_the_service(ficus, echo_backend, tmp_path):
    svc = SessionService()
    try:
        f, _ = start(ficus, echo_backend, tmp_path, svc.url)
        r = get(f, "/must", "sid=unknown-session")
        assert r.status == 401, r
        r = get(f, "/may", "sid=unknown-session; a=b")
        assert r.status == 200, r
        h = seen(r)
        assert "authorization" not in h and "x-user-id" not in h, h
        assert h["cookie"] == ["a=b"], "the session cookie went upstream"
        assert get(f, "/may", "sid=unknown-session").status == 200
        assert svc.calls["unknown-session"] == 1, "a 404 was not cached"
    finally:
        svc.stop()


def test_service_failures_503_where_required_else_anonymous(ficus, echo_backend, tmp_path):
    svc = SessionService()
    try:
        svc.sessions["s1"] = token(KEY)
        f, echo = start(ficus, echo_backend, tmp_path, svc.url, timeout="300ms")
        svc.status = 500
        r = get(f, "/must", "sid=s1")
        assert r.status == 503, r
        assert r.json()["error"] == "auth_unavailable"
        assert failures(f, "status") == 1
        svc.status = None
        svc.body = "<html>not a jwt</html>"
        svc.sessions["s3"] = "x"
        r = get(f, "/must", "sid=s3")
        assert r.status == 503, r
        assert failures(f, "invalid_answer") >= 1
        svc.body = None
        svc.delay = 1.0
        before = echo.count()
        r = get(f, "/may", "sid=slow-one")
        assert r.status == 200, "a slow service blocks optional users"
        assert "authorization" not in seen(r)
        assert echo.count() == before + 1
        assert failures(f, "timeout") == 1
    finally:
        svc.stop()


def test_service_down(ficus, echo_backend, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1/jwt"
    f, _ = start(ficus, echo_backend, tmp_path, url)
    assert get(f, "/must", "sid=abc").status == 503
    r = get(f, "/may", "sid=def")
    assert r.status == 200 and "x-user-id" not in seen(r)
    assert failures(f, "connect_error") == 2


def test_a_forged_or_expired_jwt_from_the_service_is_not_a_user(ficus, echo_backend, tmp_path):
    svc = SessionService()
    try:
        svc.sessions["evil"] = token(Key("ES256", "s1"), {"sub": "admin"})  # not our key
        svc.sessions["old"] = token(KEY, {"exp": int(time.time()) - 3600})
        f, echo = start(ficus, echo_backend, tmp_path, svc.url)
        before = echo.count()
        assert get(f, "/must", "sid=evil").status == 503
        assert get(f, "/must", "sid=old").status == 503
        assert echo.count() == before
        assert failures(f, "invalid_jwt") == 2
    finally:
        svc.stop()


def test_cache_never_outlives_the_jwt(ficus, echo_backend, tmp_path):
    svc = SessionService()
    try:
        svc.sessions["short"] = token(KEY, {"exp": int(time.time()) + 2})
        f, _ = start(ficus, echo_backend, tmp_path, svc.url, cache_ttl="1h")
        assert get(f, "/must", "sid=short").status == 200
        assert svc.calls["short"] == 1
        svc.sessions["short"] = token(KEY, {"exp": int(time.time()) + 300})
        assert wait_until(lambda: get(f, "/must", "sid=short").status == 200 and
                          svc.calls["short"] == 2, 6), svc.calls
    finally:
        svc.stop()


def test_session_header_mode(ficus, echo_backend, tmp_path):
    svc = SessionService()
    try:
        svc.sessions["hdr"] = token(KEY, {"sub": "u-h"})
        keys = tmp_path / "jwks.json"
        keys.write_text(jwks(KEY))
        echo = echo_backend("e1")
        f = ficus(config({"echo": echo.addr}, [
            route("must", "/", "echo", auth={"user": {"provider": "main", "required": True}})],
            jwt_providers={"main": {"issuer": "https://id.test", "audiences": ["shop"],
                                    "jwks_file": str(keys), "algorithms": ["ES256"],
                                    "forward_claims": {"sub": "X-User-Id"}}},
            session_exchange={"header": "X-Session-Token", "url": svc.url, "provider": "main"}))
        r = get(f, "/", headers={"X-Session-Token": "hdr"})
        assert r.status == 200, r
        h = seen(r)
        assert h["x-user-id"] == ["u-h"] and "x-session-token" not in h, h
    finally:
        svc.stop()
