"""Users by JWT (contract sections 2 and 3): bearer tokens verified against a
provider's keys (RS256, PS256, ES256, HS256, EdDSA) from a jwks_file or a
jwks_url that rotates; iss, aud (string or list), exp and nbf with leeway;
alg none and algorithm confusion refused; forward_claims as headers with
client-sent copies removed; failures counted by reason."""

import json
import time

import pytest

from harness import (config, echo_headers, http_request, metric_value, parse_metrics, route,
                     wait_until)
from harness.scripted import ScriptedServer
from harness.tokens import Key, b64u, jwks, token, unsigned

ISS = "https://id.test"


@pytest.fixture(scope="module")
def keys():
    return {k: Key(k, f"{k.lower()}-1") for k in ("RS256", "PS256", "ES256", "HS256", "EdDSA")}


def provider(source, algorithms=("RS256", "PS256", "ES256", "HS256", "EdDSA"), **extra):
    p = {"issuer": ISS, "audiences": ["shop", "admin-ui"], "algorithms": list(algorithms),
         "forward_claims": {"sub": "X-User-Id", "roles": "X-User-Roles"}}
    p.update(source)
    p.update(extra)
    return p


def start(ficus, echo_backend, tmp_path, keyset, **prov):
    path = tmp_path / "jwks.json"
    path.write_text(jwks(*keyset))
    echo = echo_backend("e1")
    f = ficus(config({"echo": echo.addr}, [
        route("users", "/u", "echo", auth={"user": {"provider": "main", "required": True}}),
        route("maybe", "/m", "echo", auth={"user": {"provider": "main"}}),
        route("open", "/", "echo"),
    ], jwt_providers={"main": provider({"jwks_file": str(path)}, **prov)}))
    return f, echo


def seen(r):
    return echo_headers(r.json())


def get(f, path, tok=None, headers=None):
    h = dict(headers or {})
    if tok is not None:
        h["Authorization"] = f"Bearer {tok}"
    return http_request(f.port, "GET", path, headers=h)


def test_every_algorithm_lets_its_user_in_with_claims_forwarded(ficus, echo_backend, tmp_path,
                                                                keys):
    f, _ = start(ficus, echo_backend, tmp_path, keys.values())
    for alg, key in keys.items():
        tok = token(key, {"sub": f"user-{alg}", "roles": ["buyer", "seller"]})
        r = get(f, "/u/x", tok, {"X-User-Id": "admin", "X-User-Roles": "root"})
        assert r.status == 200, (alg, r)
        h = seen(r)
        assert h["x-user-id"] == [f"user-{alg}"], h
        assert h["x-user-roles"] == ['["buyer","seller"]'], h
        assert h["authorization"] == [f"Bearer {tok}"], "the token goes on for the service"


def test_refused_tokens_get_401_counted_by_reason(ficus, echo_backend, tmp_path, keys):
    f, echo = start(ficus, echo_backend, tmp_path, [keys["RS256"], keys["ES256"]])
    rs = keys["RS256"]
    now = int(time.time())
    stranger = Key("RS256", "rs256-1")  # same kid, another key
    pem = rs.priv.public_key().public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["x"]).Encoding.PEM,
        __import__("cryptography.hazmat.primitives.serialization",
                   fromlist=["x"]).PublicFormat.SubjectPublicKeyInfo)
    confused = Key("HS256", "rs256-1")
    confused.secret = pem  # HS256 "signed" with the RSA public key: algorithm confusion
    cases = {
        "expired": token(rs, {"exp": now - 120}),
        "not_yet_valid": token(rs, {"nbf": now + 600}),
        "issuer": token(rs, {"iss": "https://evil.test"}),
        "audience": token(rs, {"aud": "other"}),
        "signature": token(stranger),
        "unknown_kid": token(rs, header={"kid": "nobody"}),
        "algorithm": token(confused, alg="HS256"),
        "malformed": "not.a.jwt",
    }
    before = echo.count()
    for reason, tok in cases.items():
        r = get(f, "/u", tok)
        assert r.status == 401, (reason, r)
        assert r.json()["error"] == "unauthorized"
    r = get(f, "/u", unsigned())
    assert r.status == 401, "alg none let in"
    tampered = token(rs, {"sub": "user-1"})
    head, body, sig = tampered.split(".")
    forged = head + "." + b64u(json.dumps({"iss": ISS, "aud": "shop", "sub": "admin",
                                           "exp": now + 300}).encode()) + "." + sig
    assert get(f, "/u", forged).status == 401, "a payload changed under a valid signature"
    assert echo.count() == before, "a refused token reached the backend"
    m = parse_metrics(f.metrics_text())
    for reason in cases:
        assert metric_value(m, "ficus_auth_failures_total", route="users", reason=reason) >= 1, \
            reason


def test_leeway_and_audience_list(ficus, echo_backend, tmp_path, keys):
    f, _ = start(ficus, echo_backend, tmp_path, [keys["ES256"]], leeway="60s")
    es = keys["ES256"]
    now = int(time.time())
    assert get(f, "/u", token(es, {"exp": now - 20})).status == 200, "within leeway"
    assert get(f, "/u", token(es, {"exp": now - 120})).status == 401
    assert get(f, "/u", token(es, {"nbf": now + 20})).status == 200
    assert get(f, "/u", token(es, {"aud": ["other", "admin-ui"]})).status == 200
    assert get(f, "/u", token(es, {"aud": ["other", "more"]})).status == 401


def test_user_optional_and_required(ficus, echo_backend, tmp_path, keys):
    f, _ = start(ficus, echo_backend, tmp_path, [keys["HS256"]])
    r = get(f, "/m", headers={"X-User-Id": "forged"})
    assert r.status == 200
    assert "x-user-id" not in seen(r), "a client-sent claim header passed"
    assert get(f, "/m", "garbage").status == 401, "an invalid token is 401 even when optional"
    r = get(f, "/u")
    assert r.status == 401 and r.json()["error"] == "unauthorized"
    r = get(f, "/", headers={"X-User-Id": "forged"})
    assert "x-user-id" not in seen(r), "claim headers are dropped on every route"
    r = http_request(f.port, "GET", "/u", headers={"Authorization": "Basic dTpw"})
    assert r.status == 401
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_auth_failures_total", route="users",
                        reason="missing_token") == 2


class JwksServer(ScriptedServer):
    """A JWKS URL whose keys the test changes; counts its GETs."""

    def __init__(self, doc):
        self.doc, self.status = doc, 200
        super().__init__("/jwks.json",
                         lambda h: (self.status, self.doc.encode(), "application/json"))


def start_url(ficus, echo_backend, srv, **prov):
    echo = echo_backend("e1")
    return ficus(config({"echo": echo.addr}, [
        route("users", "/u", "echo", auth={"user": {"provider": "main", "required": True}})],
        jwt_providers={"main": provider({"jwks_url": srv.url}, **prov)}))


def test_jwks_url_rotation_unknown_kid_refetched_once(ficus, echo_backend, keys):
    k1, k2, k3 = Key("ES256", "k1"), Key("ES256", "k2"), Key("ES256", "k3")
    srv = JwksServer(jwks(k1))
    try:
        f = start_url(ficus, echo_backend, srv, algorithms=["ES256"])
        assert get(f, "/u", token(k1)).status == 200
        first = srv.gets
        srv.doc = jwks(k1, k2)  # the issuer rotated: k2 signs new tokens
        r = get(f, "/u", token(k2))
        assert r.status == 200, f"a token of a new key was refused: {r!r}"
        assert srv.gets == first + 1
        # Another unknown kid right after: no second read within the interval.
        assert get(f, "/u", token(k3)).status == 401
        assert srv.gets == first + 1, "an unknown kid read the JWKS again at once"
        assert get(f, "/u", token(k2)).status == 200
    finally:
        srv.stop()


def test_jwks_url_failure_keeps_the_last_good_keys(ficus, echo_backend, keys):
    k1 = Key("RS256", "k1")
    srv = JwksServer(jwks(k1))
    try:
        f = start_url(ficus, echo_backend, srv, algorithms=["RS256"], jwks_refresh="1s")
        assert get(f, "/u", token(k1)).status == 200
        srv.status = 500
        srv.doc = "oops"
        n = srv.gets
        assert wait_until(lambda: srv.gets >= n + 2, 5), "the JWKS was not read again"
        assert get(f, "/u", token(k1, {"sub": "other"})).status == 200
    finally:
        srv.stop()


def test_a_key_removed_from_the_jwks_stops_its_cached_tokens(ficus, echo_backend):
    """Verified tokens are cached, but never past a read of the keys that
    dropped their key."""
    k1, k2 = Key("RS256", "k1"), Key("RS256", "k2")
    srv = JwksServer(jwks(k1, k2))
    try:
        f = start_url(ficus, echo_backend, srv, algorithms=["RS256"], jwks_refresh="1s")
        tok = token(k1)
        assert all(get(f, "/u", tok).status == 200 for _ in range(5))
        srv.doc = jwks(k2)  # k1 revoked
        n = srv.gets
        assert wait_until(lambda: srv.gets >= n + 1, 5)
        assert wait_until(lambda: get(f, "/u", tok).status == 401, 3), \
            "a token of a revoked key still passed"
        assert get(f, "/u", token(k2)).status == 200
    finally:
        srv.stop()


def test_check_reports_an_unreadable_jwks_file(tmp_path):
    import subprocess
    from harness import ficus_bin, to_yaml
    cfg = tmp_path / "f.yaml"
    cfg.write_text(to_yaml(config({"g": "127.0.0.1:9"}, [route("r", "/", "g")],
                                  jwt_providers={"main": {"jwks_file": "missing.json"}})))
    p = subprocess.run([ficus_bin(), "check", "-c", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 1, p
    assert f"{cfg}:" in p.stderr and "jwt_providers.main" in p.stderr and "missing.json" in \
        p.stderr, p.stderr
