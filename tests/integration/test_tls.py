"""TLS termination (contract 3.3): a listener with `tls` speaks TLS 1.2/1.3
only, forward-secret AEAD ciphers only; session tickets resume across the
workers; X-Forwarded-Proto is https; certificates are re-read on reload
(connections keep theirs); handshakes are counted by result and each
certificate's expiry is a gauge."""

import datetime
import ipaddress
import signal
import socket
import ssl
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import (config, echo_headers, metric_value, parse_metrics, route, run_cli, scaled,
                     to_yaml, wait_until)
from harness.procs import free_port, wait_ports


def make_cert(dirpath, stem, names, ca=None, days=30, ips=()):
    """A P-256 certificate for DNS names and IP addresses (signed by
    ca=(cert, key), else self-signed, usable as a CA); returns (cert_path,
    key_path, cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(ca[0].subject if ca else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.SubjectAlternativeName(
             [x509.DNSName(n) for n in names] +
             [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]), critical=False)
         .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True))
    cert = b.sign(ca[1] if ca else key, hashes.SHA256())
    cp, kp = dirpath / f"{stem}.crt", dirpath / f"{stem}.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp, cert, key


@pytest.fixture
def pki(tmp_path):
    ca_path, _, ca_cert, ca_key = make_cert(tmp_path, "ca", ["test ca"])
    cp, kp, cert, _ = make_cert(tmp_path, "api", ["api.test", "localhost"], (ca_cert, ca_key))
    return {"dir": tmp_path, "ca": ca_path, "ca_pair": (ca_cert, ca_key), "cert": cp, "key": kp,
            "x509": cert}


def start(ficus, pki, backend, **server):
    """ficus with a plain listener (first) and a TLS one (f.tls_port)."""
    plain, tls = free_port(), free_port()
    server = {"workers": 2, **server,
              "listen": [f"127.0.0.1:{plain}",
                         {"address": f"127.0.0.1:{tls}",
                          "tls": {"cert": str(pki["cert"]), "key": str(pki["key"])}}]}
    f = ficus(config({"echo": backend.addr}, [route("all", "/", "echo")], server=server))
    wait_ports([tls], f.proc, scaled(5), "the TLS listener")
    f.tls_port = tls
    return f


def client_ctx(pki, **kw):
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def https_get(port, ctx, path="/", host="api.test", session=None, extra=b""):
    """One GET over a new TLS connection: (status line, headers+body bytes,
    the ssl socket's session and whether it was reused)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    s = ctx.wrap_socket(raw, server_hostname=host, session=session)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
              b"\r\nConnection: close\r\n" + extra + b"\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    out = (data, s.session, s.session_reused, s.version(), s.cipher())
    s.close()
    return out


def handshakes(f, result):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_tls_handshakes_total",
                        result=result) or 0


def test_https_answers_with_the_certificate_for_its_name(ficus, echo_backend, pki):
    e = echo_backend("e")
    f = start(ficus, pki, e)
    data, _, _, version, cipher = https_get(f.tls_port, client_ctx(pki), "/hello")
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    body = data.split(b"\r\n\r\n", 1)[1]
    import json
    seen = echo_headers(json.loads(body))
    assert seen["x-forwarded-proto"] == ["https"]
    assert version in ("TLSv1.2", "TLSv1.3")
    assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]
    assert handshakes(f, "ok") == 1
    # The expiry gauge: the certificate's notAfter.
    m = parse_metrics(f.metrics_text())
    exp, = [v for n, labels, v in m if n == "ficus_tls_certificate_expiry_timestamp_seconds"
            and labels.get("name") == "api.test"]
    want = pki["x509"].not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()
    assert exp == int(want)


def test_old_protocols_and_weak_ciphers_are_refused(ficus, echo_backend, pki):
    f = start(ficus, pki, echo_backend("e"))
    for args in (["-tls1_1"], ["-tls1"], ["-tls1_2", "-cipher", "AES128-SHA"],
                 ["-tls1_2", "-cipher", "AES128-GCM-SHA256"]):  # RSA key exchange
        p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{f.tls_port}",
                            *args], input=b"", capture_output=True, timeout=scaled(10))
        assert b"Cipher is (NONE)" in p.stdout or p.returncode != 0, (args, p.stdout[-400:])
    assert wait_until(lambda: handshakes(f, "protocol_error") >= 4, scaled(5))
    # The gateway still serves.
    data, *_ = https_get(f.tls_port, client_ctx(pki))
    assert data.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_sessions_resume_on_any_worker(ficus, echo_backend, pki, version):
    f = start(ficus, pki, echo_backend("e"))
    v = getattr(ssl.TLSVersion, version)
    ctx = client_ctx(pki, minimum_version=v, maximum_version=v)
    _, session, reused, got, _ = https_get(f.tls_port, ctx)
    assert not reused and got == version.replace("_", ".").replace("TLSv1.", "TLSv1.")
    # Eight more connections: with two workers some land on the other one.
    for _ in range(8):
        data, _, reused, _, _ = https_get(f.tls_port, ctx, session=session)
        assert data.startswith(b"HTTP/1.1 200") and reused
    assert handshakes(f, "resumed") == 8


def test_tls13_resumption_hands_out_a_new_ticket_each_time(ficus, echo_backend, pki):
    # TLS 1.3 clients use a ticket once (RFC 8446 C.4): each resumed
    # connection must carry the next one, or every other connection would be
    # a full handshake.
    f = start(ficus, pki, echo_backend("e"))
    v = ssl.TLSVersion.TLSv1_3
    ctx = client_ctx(pki, minimum_version=v, maximum_version=v)
    _, session, reused, _, _ = https_get(f.tls_port, ctx)
    assert not reused
    for _ in range(4):
        _, new, reused, _, _ = https_get(f.tls_port, ctx, session=session)
        assert reused and new is not None and new.id != session.id
        session = new
    assert handshakes(f, "resumed") == 4 and handshakes(f, "ok") == 1


def test_large_bodies_both_ways(ficus, echo_backend, pki):
    f = start(ficus, pki, echo_backend("e"))
    ctx = client_ctx(pki)
    raw = socket.create_connection(("127.0.0.1", f.tls_port), timeout=scaled(10))
    s = ctx.wrap_socket(raw, server_hostname="api.test")
    body = bytes(range(256)) * 8192  # 2 MiB
    s.sendall(b"POST /up HTTP/1.1\r\nHost: api.test\r\nContent-Length: %d\r\n"
              b"X-Echo-Size: 3000000\r\nConnection: close\r\n\r\n" % len(body))
    s.sendall(body)
    data = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    s.close()
    head, got = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert len(got) == 3000000


def test_plain_http_on_a_tls_port_and_silent_clients(ficus, echo_backend, pki):
    f = start(ficus, pki, echo_backend("e"), header_timeout="300ms")
    c = socket.create_connection(("127.0.0.1", f.tls_port), timeout=scaled(5))
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = c.recv(100)
    assert got == b"" or got.startswith(b"\x15\x03"), got  # a TLS alert or nothing, not HTTP
    c.close()
    assert wait_until(lambda: handshakes(f, "protocol_error") == 1, scaled(5))
    # A client that connects and says nothing is let go at the header timeout.
    c = socket.create_connection(("127.0.0.1", f.tls_port), timeout=scaled(5))
    t0 = time.monotonic()
    assert c.recv(100) == b""
    assert time.monotonic() - t0 < scaled(4)
    c.close()
    data, *_ = https_get(f.tls_port, client_ctx(pki))
    assert data.startswith(b"HTTP/1.1 200")


def test_a_reload_reads_the_certificates_again(ficus, echo_backend, pki):
    f = start(ficus, pki, echo_backend("e"))
    ctx = client_ctx(pki)
    raw = socket.create_connection(("127.0.0.1", f.tls_port), timeout=scaled(5))
    old = ctx.wrap_socket(raw, server_hostname="api.test")
    first = old.getpeercert()
    # A new certificate in the same files, then SIGHUP.
    make_cert(pki["dir"], "api", ["api.test", "renewed.test"], pki["ca_pair"], days=90)
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: "renewed.test" in str(
        ssl.create_default_context(cafile=str(pki["ca"])).wrap_socket(
            socket.create_connection(("127.0.0.1", f.tls_port)),
            server_hostname="api.test").getpeercert()), scaled(5))
    # The connection made before keeps its certificate and still works.
    old.sendall(b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
    assert old.recv(100).startswith(b"HTTP/1.1 200")
    assert "renewed.test" not in str(first)
    old.close()


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.0\r\n\r\n",
                                          b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                                          b"POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                                          b"Content-Length: 5\r\n\r\nhello"])
def test_a_closing_answer_ends_with_close_notify(ficus, echo_backend, pki, request_line):
    # Without it the client sees a truncated stream and OpenSSL will not
    # resume the session.
    f = start(ficus, pki, echo_backend("e"))
    ctx = client_ctx(pki)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)  # a truncation is an error
    raw = socket.create_connection(("127.0.0.1", f.tls_port), timeout=scaled(5))
    s = ctx.wrap_socket(raw, server_hostname="api.test", suppress_ragged_eofs=False)
    s.sendall(request_line)
    data = b""
    while True:
        chunk = s.recv(65536)  # SSLEOFError here: no close_notify
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    session = s.session
    s.close()
    _, _, reused, _, _ = https_get(f.tls_port, ctx, session=session)
    assert reused


def test_check_names_a_certificate_that_cannot_serve(tmp_path, pki, echo_backend):
    other_key = make_cert(tmp_path, "other", ["other.test"])[1]
    cases = [
        ({"cert": str(tmp_path / "missing.crt"), "key": str(pki["key"])},
         "tls.cert: cannot read"),
        ({"cert": str(pki["key"]), "key": str(pki["key"])}, "cert is not a PEM certificate"),
        ({"cert": str(pki["cert"]), "key": str(other_key)},
         "key does not belong to the certificate"),
        ({"cert": "api.crt", "key": "api.key"}, None),  # relative to the file's directory
    ]
    for tls, needle in cases:
        p = tmp_path / "c.yaml"
        p.write_text(to_yaml(config({"e": "127.0.0.1:9"}, [route("all", "/", "e")],
                                    server={"listen": [{"address": "127.0.0.1:8443",
                                                        "tls": tls}]})))
        res = run_cli(["check", "-c", str(p)])
        if needle is None:
            assert res.returncode == 0, res.stderr
            continue
        assert res.returncode == 1, (tls, res.stderr)
        assert f"{p}:" in res.stderr and needle in res.stderr, res.stderr
