"""A listener's tls block (contract 3.3): several certificates chosen by SNI
(the first the default), min_version, alpn (h2 configured but not offered
until ficus serves HTTP/2), client_ca with client_auth optional/required,
and clients[].certificate_cn: a verified client certificate's subject CN
names the API client as an API key would. Every bad key is a `ficus check`
error at its file:line:col."""

import hashlib
import json
import signal
import socket
import ssl

import pytest

from harness import (config, echo_headers, metric_value, parse_metrics, route, run_cli, scaled,
                     wait_until)
from harness.procs import free_port, wait_ports
from test_tls import handshakes, https_get, make_cert

API_KEY = "orders-key-aaaaaaaaaaaaaaaaaaaa"


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


@pytest.fixture
def pki2(tmp_path):
    """A CA with two server certificates (api.test, www.test) and two client
    certificates (svc-orders, svc-unknown); a second CA with a client
    certificate of its own (svc-orders too: same name, not trusted)."""
    ca_path, _, ca_cert, ca_key = make_cert(tmp_path, "ca", ["test ca"])
    ca = (ca_cert, ca_key)
    api = make_cert(tmp_path, "api", ["api.test", "localhost"], ca)
    www = make_cert(tmp_path, "www", ["www.test", "*.www.test"], ca)
    orders = make_cert(tmp_path, "orders", ["svc-orders"], ca)
    billing = make_cert(tmp_path, "billing", ["svc-billing"], ca)
    unknown = make_cert(tmp_path, "unknown", ["svc-unknown"], ca)
    rogue_ca = make_cert(tmp_path, "rogue-ca", ["rogue ca"])
    rogue = make_cert(tmp_path, "rogue", ["svc-orders"], (rogue_ca[2], rogue_ca[3]))
    return {"dir": tmp_path, "ca": ca_path, "api": api, "www": www, "orders": orders,
            "billing": billing, "unknown": unknown, "rogue": rogue}


CLIENTS = [
    {"id": "orders", "api_keys_sha256": [sha(API_KEY)], "certificate_cn": ["svc-orders"]},
    {"id": "billing", "certificate_cn": ["svc-billing"]},
    {"id": "web", "api_keys_sha256": [sha("web-key-bbbbbbbbbbbbbbbbbbbbbb")]},
]
WEB_KEY = "web-key-bbbbbbbbbbbbbbbbbbbbbb"


def start(ficus, backend, tls, **top):
    """ficus with a TLS listener (f.tls_port) given tls; routes /req (client
    required), /opt (optional), /web-only (required, clients [web]), / (open)."""
    plain, port = free_port(), free_port()
    server = {"workers": 2, "listen": [f"127.0.0.1:{plain}",
                                       {"address": f"127.0.0.1:{port}", "tls": tls}]}
    routes = [route("req", "/req", "echo", auth={"client": "required"}),
              route("opt", "/opt", "echo", auth={"client": "optional"}),
              route("web-only", "/web-only", "echo", auth={"client": "required"},
                    clients=["web"]),
              route("open", "/", "echo")]
    f = ficus(config({"echo": backend.addr}, routes, server=server, clients=CLIENTS, **top))
    wait_ports([port], f.proc, scaled(5), "the TLS listener")
    f.tls_port = port
    return f


def ctx_for(pki2, cert=None, verify_name=True, **kw):
    ctx = ssl.create_default_context(cafile=str(pki2["ca"]))
    ctx.check_hostname = verify_name
    if cert:
        ctx.load_cert_chain(str(pki2[cert][0]), str(pki2[cert][1]))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def connect(port, ctx, host="api.test"):
    raw = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    return ctx.wrap_socket(raw, server_hostname=host)


def get(port, ctx, path="/", host="api.test", headers=None):
    """(status, upstream headers seen by the echo backend or None, raw bytes)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    data = https_get(port, ctx, path, host, extra=extra)[0]
    status = int(data.split(b" ", 2)[1])
    body = data.split(b"\r\n\r\n", 1)[1]
    seen = echo_headers(json.loads(body)) if status == 200 else None
    return status, seen, data


def refused(port, ctx, host="api.test"):
    """Whether the server refuses the connection: a failed handshake (or, in
    TLS 1.3, an alert in place of the first answer)."""
    try:
        s = connect(port, ctx, host)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        got = s.recv(100)
        s.close()
        return got == b""
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True


def peer_names(port, ctx, host):
    s = connect(port, ctx, host)
    der = s.getpeercert(binary_form=True)
    s.close()
    from cryptography import x509
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    return cn, san.value.get_values_for_type(x509.DNSName)


def two_certs(pki2):
    return {"certificates": [{"cert": str(pki2["api"][0]), "key": str(pki2["api"][1])},
                             {"cert": str(pki2["www"][0]), "key": str(pki2["www"][1])}]}


# ------------------------------------------------------------- certificates


def test_sni_picks_the_certificate_and_the_first_is_the_default(ficus, echo_backend, pki2):
    f = start(ficus, echo_backend("e"), two_certs(pki2))
    strict = ctx_for(pki2)
    assert peer_names(f.tls_port, strict, "www.test")[0] == "www.test"
    assert peer_names(f.tls_port, strict, "a.www.test")[0] == "www.test"  # the wildcard
    assert peer_names(f.tls_port, strict, "api.test")[0] == "api.test"
    assert peer_names(f.tls_port, strict, "LOCALHOST")[0] == "api.test"
    loose = ctx_for(pki2, verify_name=False)
    cn, sans = peer_names(f.tls_port, loose, "unknown.test")
    assert cn == "api.test" and "localhost" in sans  # the default
    cn, _ = peer_names(f.tls_port, loose, None)  # no SNI at all
    assert cn == "api.test"
    status, seen, _ = get(f.tls_port, strict, "/x", host="www.test")
    assert status == 200 and seen["x-forwarded-proto"] == ["https"]
    # Each certificate's expiry is a gauge.
    m = parse_metrics(f.metrics_text())
    names = {labels.get("name") for n, labels, _ in m
             if n == "ficus_tls_certificate_expiry_timestamp_seconds"}
    assert {"api.test", "www.test"} <= names, names


def test_min_version_13_refuses_a_tls12_only_client(ficus, echo_backend, pki2):
    tls = {"cert": str(pki2["api"][0]), "key": str(pki2["api"][1]), "min_version": "1.3"}
    f = start(ficus, echo_backend("e"), tls)
    old = ctx_for(pki2, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        connect(f.tls_port, old).close()
    assert wait_until(lambda: handshakes(f, "protocol_error") >= 1, scaled(5))
    s = connect(f.tls_port, ctx_for(pki2))
    assert s.version() == "TLSv1.3"
    s.close()


def test_min_version_12_is_the_default(ficus, echo_backend, pki2):
    tls = {"cert": str(pki2["api"][0]), "key": str(pki2["api"][1])}
    f = start(ficus, echo_backend("e"), tls)
    s = connect(f.tls_port, ctx_for(pki2, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert s.version() == "TLSv1.2"
    s.close()


@pytest.mark.parametrize("alpn,chosen", [(None, "h2"), (["h2", "http/1.1"], "h2"),
                                          (["http/1.1", "h2"], "http/1.1"),
                                          (["http/1.1"], "http/1.1")])
def test_alpn_offers_the_configured_protocols_in_order(ficus, echo_backend, pki2, alpn, chosen):
    tls = {"cert": str(pki2["api"][0]), "key": str(pki2["api"][1])}
    if alpn:
        tls["alpn"] = alpn
    f = start(ficus, echo_backend("e"), tls)
    ctx = ctx_for(pki2)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    s = connect(f.tls_port, ctx)
    assert s.selected_alpn_protocol() == chosen
    s.close()
    if alpn == ["http/1.1"]:
        # A client that speaks only h2 finds no protocol in common.
        h2 = ctx_for(pki2)
        h2.set_alpn_protocols(["h2"])
        with pytest.raises(ssl.SSLError):
            connect(f.tls_port, h2).close()
        assert wait_until(lambda: handshakes(f, "no_application_protocol") == 1, scaled(5))


def test_alpn_leaves_h2_out_while_http2_is_off(ficus, echo_backend, pki2):
    tls = {"cert": str(pki2["api"][0]), "key": str(pki2["api"][1]), "alpn": ["h2", "http/1.1"]}
    plain, port = free_port(), free_port()
    f = ficus(config({"echo": echo_backend("e").addr}, [route("open", "/", "echo")],
                     server={"workers": 1, "http2": {"enabled": False},
                             "listen": [f"127.0.0.1:{plain}",
                                        {"address": f"127.0.0.1:{port}", "tls": tls}]}))
    wait_ports([port], f.proc, scaled(5), "the TLS listener")
    ctx = ctx_for(pki2)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    s = connect(port, ctx)
    assert s.selected_alpn_protocol() == "http/1.1"
    s.close()


# ------------------------------------------------------ client certificates


def mtls(pki2, auth):
    return {"cert": str(pki2["api"][0]), "key": str(pki2["api"][1]),
            "client_ca": str(pki2["ca"]), "client_auth": auth}


def test_client_auth_required_refuses_a_client_without_a_certificate(ficus, echo_backend, pki2):
    f = start(ficus, echo_backend("e"), mtls(pki2, "required"))
    assert refused(f.tls_port, ctx_for(pki2))
    assert refused(f.tls_port, ctx_for(pki2, "rogue"))  # a CA ficus does not trust
    assert wait_until(lambda: handshakes(f, "client_certificate") == 2, scaled(5)), \
        parse_metrics(f.metrics_text())
    # TLS 1.2 too (there the handshake itself fails).
    assert refused(f.tls_port, ctx_for(pki2, maximum_version=ssl.TLSVersion.TLSv1_2))
    assert wait_until(lambda: handshakes(f, "client_certificate") == 3, scaled(5))
    status, seen, _ = get(f.tls_port, ctx_for(pki2, "orders"), "/req/x")
    assert status == 200 and seen["x-client-id"] == ["orders"]


def test_client_certificates_behind_every_certificate_sni_picks(ficus, echo_backend, pki2):
    tls = {**two_certs(pki2), "client_ca": str(pki2["ca"]), "client_auth": "required"}
    f = start(ficus, echo_backend("e"), tls)
    for host in ("api.test", "www.test"):
        assert refused(f.tls_port, ctx_for(pki2), host), host
        status, seen, _ = get(f.tls_port, ctx_for(pki2, "orders"), "/req", host=host)
        assert status == 200 and seen["x-client-id"] == ["orders"], host


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_a_session_does_not_resume_past_another_listeners_client_auth(ficus, echo_backend, pki2,
                                                                      version):
    # A session made on a listener that asks no certificate (or trusts
    # another CA) must not let a client skip this listener's check.
    e = echo_backend("e")
    plain, open_port, mtls_port = free_port(), free_port(), free_port()
    api = {"cert": str(pki2["api"][0]), "key": str(pki2["api"][1])}
    server = {"workers": 1, "listen": [f"127.0.0.1:{plain}",
                                       {"address": f"127.0.0.1:{open_port}", "tls": api},
                                       {"address": f"127.0.0.1:{mtls_port}",
                                        "tls": mtls(pki2, "required")}]}
    f = ficus(config({"echo": e.addr}, [route("req", "/", "echo", auth={"client": "required"})],
                     server=server, clients=CLIENTS))
    wait_ports([open_port, mtls_port], f.proc, scaled(5), "the TLS listeners")
    v = getattr(ssl.TLSVersion, version)
    ctx = ctx_for(pki2, minimum_version=v, maximum_version=v)
    _, session, _, _, _ = https_get(open_port, ctx)
    _, again, reused, _, _ = https_get(open_port, ctx, session=session)
    assert reused  # sessions do resume on their own listener
    try:
        data, _, reused, _, _ = https_get(mtls_port, ctx, session=again)
        assert not reused and not data.startswith(b"HTTP/1.1 200"), data[:200]
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        pass
    # On its own listener a session with a certificate resumes, and still
    # names its client.
    ctx = ctx_for(pki2, "orders", minimum_version=v, maximum_version=v)
    data, session, _, _, _ = https_get(mtls_port, ctx)
    assert data.startswith(b"HTTP/1.1 200")
    for _ in range(2):
        data, session, reused, _, _ = https_get(mtls_port, ctx, session=session,
                                                extra=b"X-Request-Id: resumed-" +
                                                version.encode() + b"\r\n")
        assert reused and data.startswith(b"HTTP/1.1 200"), data[:200]
        body = data.split(b"\r\n\r\n", 1)[1]
        assert echo_headers(json.loads(body))["x-client-id"] == ["orders"]


def test_a_verified_session_does_not_resume_where_another_ca_is_trusted(ficus, echo_backend,
                                                                        pki2):
    e = echo_backend("e")
    plain, ours, theirs = free_port(), free_port(), free_port()
    other = {**mtls(pki2, "optional"), "client_ca": str(pki2["dir"] / "rogue-ca.crt")}
    server = {"workers": 1, "listen": [f"127.0.0.1:{plain}",
                                       {"address": f"127.0.0.1:{ours}",
                                        "tls": mtls(pki2, "optional")},
                                       {"address": f"127.0.0.1:{theirs}", "tls": other}]}
    f = ficus(config({"echo": e.addr}, [route("opt", "/", "echo", auth={"client": "optional"})],
                     server=server, clients=CLIENTS))
    wait_ports([ours, theirs], f.proc, scaled(5), "the TLS listeners")
    ctx = ctx_for(pki2, "orders", maximum_version=ssl.TLSVersion.TLSv1_2)
    data, session, _, _, _ = https_get(ours, ctx)
    assert echo_headers(json.loads(data.split(b"\r\n\r\n", 1)[1]))["x-client-id"] == ["orders"]
    # The other listener does not trust our CA: a new handshake, where the
    # certificate does not verify, and so names nobody.
    data, _, reused, _, _ = https_get(theirs, ctx, session=session)
    assert not reused
    assert "x-client-id" not in echo_headers(json.loads(data.split(b"\r\n\r\n", 1)[1]))


def test_client_auth_optional_lets_clients_without_a_certificate_in(ficus, echo_backend, pki2):
    f = start(ficus, echo_backend("e"), mtls(pki2, "optional"))
    status, seen, _ = get(f.tls_port, ctx_for(pki2), "/opt")
    assert status == 200 and "x-client-id" not in seen
    status, _, _ = get(f.tls_port, ctx_for(pki2), "/req")
    assert status == 401
    # A certificate that does not verify connects, and names nobody.
    status, seen, _ = get(f.tls_port, ctx_for(pki2, "rogue"), "/opt")
    assert status == 200 and "x-client-id" not in seen
    status, _, _ = get(f.tls_port, ctx_for(pki2, "rogue"), "/req")
    assert status == 401
    # A verified one names its client.
    status, seen, _ = get(f.tls_port, ctx_for(pki2, "billing"), "/opt")
    assert status == 200 and seen["x-client-id"] == ["billing"]


def test_certificate_cn_names_the_client(ficus, echo_backend, pki2):
    f = start(ficus, echo_backend("e"), mtls(pki2, "required"))
    for cert, client in (("orders", "orders"), ("billing", "billing")):
        status, seen, _ = get(f.tls_port, ctx_for(pki2, cert), "/req/a",
                              headers={"X-Client-Id": "web", "X-Request-Id": f"cn-{cert}"})
        assert status == 200, cert
        assert seen["x-client-id"] == [client], seen
    # A verified certificate whose CN no client has is no client.
    status, _, data = get(f.tls_port, ctx_for(pki2, "unknown"), "/req/a",
                          headers={"X-Request-Id": "cn-unknown"})
    assert status == 401, data
    status, seen, _ = get(f.tls_port, ctx_for(pki2, "unknown"), "/opt")
    assert status == 200 and "x-client-id" not in seen
    # The route's clients list applies to certificate clients too.
    status, _, _ = get(f.tls_port, ctx_for(pki2, "orders"), "/web-only")
    assert status == 403
    lines = {e["request_id"]: e for e in f.wait_access_log(3) if e.get("request_id")}
    assert lines["cn-orders"]["client_id"] == "orders"
    assert lines["cn-billing"]["client_id"] == "billing"
    assert lines["cn-unknown"]["client_id"] is None
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_auth_failures_total", route="req",
                        reason="missing_api_key") == 1
    clients = {c["id"]: c for c in json.loads(f.admin_get("/config")[2])["clients"]}
    assert clients["orders"]["certificate_cn"] == ["svc-orders"]
    assert clients["web"]["certificate_cn"] == []


def test_an_api_key_and_a_certificate_must_name_the_same_client(ficus, echo_backend, pki2):
    f = start(ficus, echo_backend("e"), mtls(pki2, "optional"))
    orders = ctx_for(pki2, "orders")
    # The same client: fine.
    status, seen, _ = get(f.tls_port, orders, "/req", headers={"X-Api-Key": API_KEY})
    assert status == 200 and seen["x-client-id"] == ["orders"] and "x-api-key" not in seen
    # Different clients: refused, counted.
    status, _, data = get(f.tls_port, orders, "/req", headers={"X-Api-Key": WEB_KEY})
    assert status == 401 and b"different clients" in data, data
    status, _, _ = get(f.tls_port, orders, "/opt", headers={"X-Api-Key": WEB_KEY})
    assert status == 401
    # A wrong key is refused whatever the certificate.
    status, _, _ = get(f.tls_port, orders, "/req", headers={"X-Api-Key": "nope"})
    assert status == 401
    # A certificate that names no client leaves the key to decide.
    status, seen, _ = get(f.tls_port, ctx_for(pki2, "unknown"), "/req",
                          headers={"X-Api-Key": WEB_KEY})
    assert status == 200 and seen["x-client-id"] == ["web"]
    status, seen, _ = get(f.tls_port, ctx_for(pki2, "rogue"), "/req",
                          headers={"X-Api-Key": WEB_KEY})
    assert status == 200 and seen["x-client-id"] == ["web"]
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_auth_failures_total", route="req",
                        reason="client_mismatch") == 1
    assert metric_value(m, "ficus_auth_failures_total", route="opt",
                        reason="client_mismatch") == 1


def test_a_certificate_client_is_throttled_as_itself(ficus, echo_backend, pki2):
    clients = [dict(c) for c in CLIENTS]
    clients[1]["max_concurrent_requests"] = 1
    e = echo_backend("e")
    plain, port = free_port(), free_port()
    server = {"workers": 1, "listen": [f"127.0.0.1:{plain}",
                                       {"address": f"127.0.0.1:{port}",
                                        "tls": mtls(pki2, "required")}]}
    f = ficus(config({"echo": e.addr}, [route("req", "/", "echo", auth={"client": "required"},
                                              rate_limit={"requests_per_second": 0.001,
                                                          "burst": 1, "by": "client"})],
                     server=server, clients=clients))
    wait_ports([port], f.proc, scaled(5), "the TLS listener")
    # One token per client: billing's second request is limited, orders' first is not.
    assert get(port, ctx_for(pki2, "billing"), "/a")[0] == 200
    assert get(port, ctx_for(pki2, "billing"), "/a")[0] == 429
    assert get(port, ctx_for(pki2, "orders"), "/a")[0] == 200


def test_a_reload_changes_the_client_certificate_policy(ficus, echo_backend, pki2):
    e = echo_backend("e")
    plain, port = free_port(), free_port()
    routes = [route("req", "/", "echo", auth={"client": "required"})]

    def cfg(tls):
        return config({"echo": e.addr}, routes, clients=CLIENTS,
                      server={"workers": 1, "listen": [f"127.0.0.1:{plain}",
                                                       {"address": f"127.0.0.1:{port}",
                                                        "tls": tls}]})
    api = {"cert": str(pki2["api"][0]), "key": str(pki2["api"][1])}
    f = ficus(cfg(api))
    wait_ports([port], f.proc, scaled(5), "the TLS listener")
    bare = ctx_for(pki2)
    assert get(port, bare, "/", headers={"X-Api-Key": WEB_KEY})[0] == 200
    f.write_config(cfg(mtls(pki2, "required")))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: refused(port, bare), scaled(5))
    status, seen, _ = get(port, ctx_for(pki2, "billing"), "/")
    assert status == 200 and seen["x-client-id"] == ["billing"]


# ------------------------------------------------------------ ficus check


def check(tmp_path, pki2, tls_yaml, clients_yaml=""):
    """`ficus check` of a file whose listener's tls block is tls_yaml (lines
    at 6 spaces, starting on line 5)."""
    p = tmp_path / "c.yaml"
    p.write_text("server:\n"
                 "  listen:\n"
                 "    - address: \"127.0.0.1:8443\"\n"
                 "      tls:\n" + tls_yaml + clients_yaml +
                 "target_groups: {e: {targets: [\"127.0.0.1:9\"]}}\n"
                 "routes: [{name: all, match: {path_prefix: /}, "
                 "backends: [{target_group: e}]}]\n")
    res = run_cli(["check", "-c", str(p)])
    return p, res


def test_check_accepts_the_whole_block(tmp_path, pki2):
    # Relative paths are relative to the file's directory.
    _, res = check(tmp_path, pki2,
                   "        certificates:\n"
                   "          - {cert: api.crt, key: api.key}\n"
                   "          - {cert: www.crt, key: www.key}\n"
                   "        min_version: \"1.3\"\n"
                   "        alpn: [http/1.1, h2]\n"
                   "        client_ca: ca.crt\n"
                   "        client_auth: optional\n",
                   "clients:\n  - {id: a, certificate_cn: [svc-orders]}\n")
    assert res.returncode == 0, res.stderr
    _, res = check(tmp_path, pki2, "        cert: api.crt\n        key: api.key\n"
                                   "        min_version: 1.2\n        client_ca: \"\"\n"
                                   "        client_auth: none\n")
    assert res.returncode == 0, res.stderr


CHECK_CASES = [
    # (tls block, line:col, message)
    ("        cert: api.crt\n        key: api.key\n"
     "        certificates: [{cert: www.crt, key: www.key}]\n",
     "7:9", "tls.certificates: set cert and key (one certificate) or certificates, not both"),
    ("        certificates:\n          - {cert: api.crt, key: www.key}\n",
     "6:13", "tls.certificates[0]: key does not belong to the certificate"),
    ("        certificates:\n          - {cert: api.crt, key: api.key}\n"
     "          - {cert: missing.crt, key: www.key}\n",
     "7:14", "tls.certificates[1].cert: cannot read"),
    ("        certificates:\n          - {cert: api.crt}\n",
     "6:13", "tls.certificates[0].key: required key is missing"),
    ("        certificates:\n          - {cert: api.crt, key: api.key, sni: x}\n",
     "6:43", "tls.certificates[0].sni: unknown key"),
    ("        certificates: []\n",
     "5:23", "tls.certificates: 1 to 16 certificates"),
    ("        cert: api.crt\n        key: api.key\n        min_version: \"1.1\"\n",
     "7:22", "tls.min_version: \"1.1\" is not a TLS version ficus speaks"),
    ("        cert: api.crt\n        key: api.key\n        alpn: [h2, spdy/3]\n",
     "7:20", "tls.alpn[1]: unknown protocol \"spdy/3\""),
    ("        cert: api.crt\n        key: api.key\n        alpn: [h2, h2]\n",
     "7:20", "tls.alpn[1]: \"h2\" twice"),
    ("        cert: api.crt\n        key: api.key\n        alpn: []\n",
     "7:15", "tls.alpn: needs at least one protocol"),
    ("        cert: api.crt\n        key: api.key\n        client_auth: required\n",
     "7:22", "tls.client_auth: required needs client_ca"),
    ("        cert: api.crt\n        key: api.key\n        client_auth: sometimes\n",
     "7:22", "tls.client_auth: unknown value \"sometimes\" (none, optional or required)"),
    ("        cert: api.crt\n        key: api.key\n        client_ca: ca.crt\n",
     "7:20", "tls.client_ca: set client_auth (optional or required)"),
    ("        cert: api.crt\n        key: api.key\n        client_ca: api.key\n"
     "        client_auth: optional\n",
     "7:20", "tls.client_ca: "),
    ("        cert: api.crt\n        key: api.key\n        client_ca: nope.crt\n"
     "        client_auth: optional\n",
     "7:9", "tls.client_ca: cannot read"),
    ("        cert: api.crt\n        key: api.key\n        ciphers: all\n",
     "7:9", "tls.ciphers: unknown key"),
]


@pytest.mark.parametrize("tls_yaml,pos,needle", CHECK_CASES)
def test_check_names_each_bad_key_at_its_line_and_column(tmp_path, pki2, tls_yaml, pos, needle):
    p, res = check(tmp_path, pki2, tls_yaml)
    assert res.returncode == 1, (tls_yaml, res.stderr)
    want = f"{p}:{pos}: server.listen[0].{needle}"
    assert any(line.startswith(want) for line in res.stderr.splitlines()), (want, res.stderr)


def test_check_certificate_cn_twice(tmp_path, pki2):
    _, res = check(tmp_path, pki2, "        cert: api.crt\n        key: api.key\n",
                   "clients:\n"
                   "  - {id: a, certificate_cn: [svc-orders]}\n"
                   "  - {id: b, certificate_cn: [svc-billing, svc-orders]}\n")
    assert res.returncode == 1
    assert ":9:43: clients[1].certificate_cn: \"svc-orders\" is also a certificate_cn of " \
        "client a" in res.stderr, res.stderr
