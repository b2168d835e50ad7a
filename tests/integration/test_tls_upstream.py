"""TLS to targets (contract 3.3): a target group with `tls` speaks TLS to its
targets; the target's certificate is verified against `ca` (or the system's
store) and its name against `sni` or the target's address; a failed
verification is a connect failure (502); `verify: false` works and `ficus
check` warns [tls-verify-off]; `cert`/`key` are a client certificate for
mutual TLS; TLS connections are kept alive and reused, and a new connection
resumes the last session; the files are checked at load with their
FILE:LINE:COL."""

import json
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import (config, http_request, metric_value, parse_metrics, route, run_cli, scaled,
                     to_yaml, wait_until)
from test_tls import make_cert


@pytest.fixture
def pki(tmp_path):
    ca, ca_key, ca_cert, ca_pkey = make_cert(tmp_path, "ca", ["test ca"])
    other_ca = make_cert(tmp_path, "other-ca", ["other ca"])[0]
    srv = make_cert(tmp_path, "backend", ["api.internal", "localhost"], (ca_cert, ca_pkey),
                    ips=["127.0.0.1"])
    client = make_cert(tmp_path, "ficus-client", ["ficus"], (ca_cert, ca_pkey))
    return {"dir": tmp_path, "ca": ca, "other_ca": other_ca, "cert": srv[0], "key": srv[1],
            "client_cert": client[0], "client_key": client[1]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        self.request.do_handshake()  # here, in the connection's thread
        self.conn_index = self.server.backend.connected(self.request)
        super().setup()

    def do_GET(self):  # noqa: N802 - http.server's naming
        b = self.server.backend
        with b.lock:
            b.requests += 1
            b.paths.append(self.path)
        peer = self.request.getpeercert()
        body = json.dumps({"conn": self.conn_index, "path": self.path,
                           "client_cert": bool(peer)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if b.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.backend.ctx.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        self.backend.errors.append(repr(sys.exc_info()[1]))


class TlsBackend:
    """An HTTPS server in a thread: counts connections, the SNI each sent and
    whether its session was resumed."""

    def __init__(self, pki, client_ca=None, close=False, version=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if version:
            self.ctx.minimum_version = self.ctx.maximum_version = version
        self.ctx.load_cert_chain(str(pki["cert"]), str(pki["key"]))
        if client_ca:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(str(client_ca))
        self.ctx.sni_callback = self._sni
        self.close = close
        self.lock = threading.Lock()
        self.snis = []
        self.conns = []  # per connection: whether its session was resumed
        self.requests = 0
        self.paths = []
        self.errors = []
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.backend = self
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def _sni(self, sock, name, ctx):
        with self.lock:
            self.snis.append(name)

    def connected(self, sock):
        with self.lock:
            self.conns.append(sock.session_reused)
            return len(self.conns) - 1

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_backend():
    started = []

    def start(pki, **kw):
        b = TlsBackend(pki, **kw)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def start_ficus(ficus, backend, tls, target=None, **group):
    g = {"targets": [target or backend.addr], "tls": tls, **group}
    return ficus(config({"up": g}, [route("all", "/", "up")], server={"workers": 1}))


def get(f, path="/"):
    return http_request(f.port, "GET", path)


def upstream_count(f, code):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_upstream_requests_total",
                        target_group="up", code=code) or 0


def test_requests_reach_an_https_target_verified_by_its_ca(ficus, tls_backend, pki):
    b = tls_backend(pki)
    f = start_ficus(ficus, b, {"ca": str(pki["ca"])})
    r = get(f, "/hello")
    assert r.status == 200, r.body
    assert r.json()["path"] == "/hello"
    # The configuration as ficus runs it.
    status, _, body = f.admin_get("/config")
    assert status == 200
    cfg = json.loads(body)
    cfg = cfg.get("configuration", cfg)
    assert cfg["target_groups"]["up"]["tls"] == {"ca": str(pki["ca"]), "verify": True}
    # The target is an IP address: its certificate's IP address was checked,
    # and no SNI was sent (RFC 6066 has no IP addresses in SNI).
    assert b.snis == [None]


def test_a_target_by_host_name_sends_and_checks_that_name(ficus, tls_backend, pki):
    b = tls_backend(pki)
    port = b.addr.rsplit(":", 1)[1]
    f = start_ficus(ficus, b, {"ca": str(pki["ca"])}, target=f"localhost:{port}")
    assert wait_until(lambda: get(f).status == 200, scaled(5))  # once resolved
    assert "localhost" in b.snis


def test_sni_is_sent_and_checked(ficus, tls_backend, pki):
    b = tls_backend(pki)
    f = start_ficus(ficus, b, {"ca": str(pki["ca"]), "sni": "api.internal"})
    assert get(f).status == 200
    assert b.snis == ["api.internal"]
    # A name the certificate was not issued to: not verified, a 502.
    f2 = start_ficus(ficus, b, {"ca": str(pki["ca"]), "sni": "db.internal"})
    r = get(f2)
    assert r.status == 502, r.body
    assert r.json()["error"] == "bad_gateway"
    assert upstream_count(f2, "connect_error") >= 1


def test_a_certificate_from_another_ca_is_a_connect_failure(ficus, tls_backend, pki):
    b = tls_backend(pki)
    f = start_ficus(ficus, b, {"ca": str(pki["other_ca"])})
    r = get(f)
    assert r.status == 502, r.body
    assert b.requests == 0
    assert upstream_count(f, "connect_error") >= 1
    assert "TLS to" in f.stderr and "certificate" in f.stderr, f.stderr[-2000:]


def test_a_reload_reads_the_ca_again(ficus, tls_backend, pki):
    b = tls_backend(pki)
    ca = pki["dir"] / "ca.pem"  # relative to the configuration file
    ca.write_bytes(pki["ca"].read_bytes())
    f = start_ficus(ficus, b, {"ca": "ca.pem"}, keepalive={"max_idle": 0})
    assert get(f).status == 200
    ca.write_bytes(pki["other_ca"].read_bytes())
    f.signal(signal.SIGHUP)  # the same configuration, the CA file's new content
    assert wait_until(lambda: get(f).status == 502, scaled(5))
    ca.write_bytes(pki["ca"].read_bytes())
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: get(f).status == 200, scaled(5))


def test_a_failed_handshake_is_retried_on_another_target(ficus, tls_backend, pki):
    # One target shows a certificate of another CA: retry_on connect-failure
    # takes every request to the other one.
    bad = tls_backend({"cert": pki["other_ca"], "key": pki["dir"] / "other-ca.key"})
    good = tls_backend(pki)
    g = {"targets": [bad.addr, good.addr], "tls": {"ca": str(pki["ca"])}}
    r = route("all", "/", "up", retries={"attempts": 1, "retry_on": ["connect-failure"]})
    f = ficus(config({"up": g}, [r], server={"workers": 1}))
    for i in range(4):
        assert get(f, f"/{i}").status == 200
    assert good.requests == 4 and bad.requests == 0
    assert upstream_count(f, "connect_error") >= 1


def test_verify_false_accepts_any_certificate_and_check_warns(ficus, tls_backend, pki):
    b = tls_backend(pki)
    f = start_ficus(ficus, b, {"ca": str(pki["other_ca"]), "verify": False})
    assert get(f).status == 200
    p = run_cli(["check", "-c", str(f.config_path)])
    assert p.returncode == 0, p.stderr
    assert "warning: [tls-verify-off]" in p.stderr, p.stderr


def test_mutual_tls_with_the_groups_client_certificate(ficus, tls_backend, pki):
    b = tls_backend(pki, client_ca=pki["ca"])
    # Without a client certificate the target refuses the connection.
    f = start_ficus(ficus, b, {"ca": str(pki["ca"])})
    assert get(f).status == 502
    assert b.requests == 0
    f2 = start_ficus(ficus, b, {"ca": str(pki["ca"]), "cert": str(pki["client_cert"]),
                                "key": str(pki["client_key"])})
    r = get(f2)
    assert r.status == 200, r.body
    assert r.json()["client_cert"] is True


def test_kept_alive_connections_are_reused(ficus, tls_backend, pki):
    b = tls_backend(pki)
    f = start_ficus(ficus, b, {"ca": str(pki["ca"])})
    conns = {get(f, f"/{i}").json()["conn"] for i in range(5)}
    assert b.requests == 5
    assert len(b.conns) == 1 and conns == {0}


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
@pytest.mark.parametrize("sni", [None, "api.internal"])
def test_a_new_connection_resumes_the_session(ficus, tls_backend, pki, version, sni):
    # The target closes every connection after its answer: each request
    # opens a new one, which offers the last session (a TLS 1.3 ticket, a
    # TLS 1.2 session).
    b = tls_backend(pki, close=True, version=getattr(ssl.TLSVersion, version))
    f = start_ficus(ficus, b, {"ca": str(pki["ca"]), **({"sni": sni} if sni else {})})
    for i in range(4):
        assert get(f, f"/{i}").status == 200
    assert len(b.conns) == 4
    assert b.conns[0] is False
    assert all(b.conns[1:]), b.conns


def test_empty_tls_uses_the_system_store(ficus, tls_backend, pki):
    # `tls: {}`: TLS, verified against the system's CAs, which do not know
    # the test CA.
    b = tls_backend(pki)
    f = start_ficus(ficus, b, {})
    assert get(f).status == 502
    assert b.requests == 0


HEALTH = {"path": "/health", "interval": "100ms", "timeout": "1s", "unhealthy_threshold": 2}


def test_health_checks_speak_tls(ficus, tls_backend, pki):
    b = tls_backend(pki)
    f = start_ficus(ficus, b, {"ca": str(pki["ca"]), "sni": "api.internal"},
                    health_check=HEALTH)
    assert wait_until(lambda: b.paths.count("/health") >= 2, scaled(5)), b.paths
    assert set(b.snis) == {"api.internal"}
    assert get(f).status == 200
    # Against the wrong CA the check fails at the handshake, and says so.
    b2 = tls_backend(pki)
    f2 = start_ficus(ficus, b2, {"ca": str(pki["other_ca"])}, health_check=HEALTH)
    assert wait_until(lambda: "is now unhealthy: TLS handshake failed" in f2.stderr, scaled(5)), \
        f2.stderr[-2000:]
    assert b2.requests == 0


def check(tmp_path, group_tls):
    p = tmp_path / "c.yaml"
    p.write_text(to_yaml(config({"up": {"targets": ["127.0.0.1:9"], "tls": group_tls}},
                                [route("all", "/", "up")])))
    return p, run_cli(["check", "-c", str(p)])


def test_configuration_errors_at_their_place(tmp_path, pki):
    # The file as written: line:column of the value.
    p, res = check(tmp_path, {"ca": "missing-ca.pem"})
    assert res.returncode == 1
    lines = p.read_text().splitlines()
    row = next(i for i, l in enumerate(lines) if "missing-ca.pem" in l)
    col = lines[row].index("missing-ca.pem") + 1
    if lines[row][col - 2] in "\"'":
        col -= 1  # a quoted scalar starts at its quote
    assert f"{p}:{row + 1}:{col}: target_groups.up.tls.ca: cannot read" in res.stderr, res.stderr
    # A client certificate without its key, and the reverse.
    _, res = check(tmp_path, {"cert": str(pki["client_cert"])})
    assert res.returncode == 1 and "cert without key" in res.stderr, res.stderr
    _, res = check(tmp_path, {"key": str(pki["client_key"])})
    assert res.returncode == 1 and "key without cert" in res.stderr, res.stderr
    # A key that is not the certificate's.
    _, res = check(tmp_path, {"cert": str(pki["client_cert"]), "key": str(pki["key"])})
    assert res.returncode == 1 and "key does not belong" in res.stderr, res.stderr
    # Relative to the configuration file; a good one checks clean.
    _, res = check(tmp_path, {"ca": "ca.crt", "cert": "ficus-client.crt",
                              "key": "ficus-client.key", "sni": "api.internal"})
    assert res.returncode == 0, res.stderr
    _, res = check(tmp_path, {"sni": "bad name!"})
    assert res.returncode == 1 and 'tls.sni: invalid host name "bad name!"' in res.stderr, \
        res.stderr
    _, res = check(tmp_path, {"verfy": False})
    assert res.returncode == 1 and "tls.verfy: unknown key" in res.stderr, res.stderr
    _, res = check(tmp_path, {"verify": "maybe"})
    assert res.returncode == 1 and "expected true or false" in res.stderr, res.stderr
