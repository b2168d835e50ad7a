"""Black-box tests of `ficus probe`: ok and FAIL rows against real `ficus mock`
backends, the request it sends, timeouts, concurrency, TLS verification,
output formats, exit codes and file errors (FILE:LINE:COL)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

FICUS_BIN = os.environ.get("FICUS_BIN", "/work/main/ficus")
SCALE = 3.0 if os.environ.get("FICUS_MODE") == "asan" else 1.0


def scaled(seconds):
    return seconds * SCALE


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


@pytest.fixture
def processes():
    """start(argv, port) -> port: a process that listens on port, stopped after the test."""
    started = []

    def start(argv, port):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        started.append(p)
        wait_port(port, p)
        return port

    yield start
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def mock(processes):
    """mock(*args) -> port of a running `ficus mock`."""
    def start(*args):
        port = free_port()
        return processes([FICUS_BIN, "mock", "--listen", f"127.0.0.1:{port}",
                          *map(str, args)], port)
    return start


def probe(tmp_path, yaml_text, *args):
    f = tmp_path / "probe.yaml"
    f.write_text(yaml_text)
    p = subprocess.run([FICUS_BIN, "probe", "-f", str(f), *args], capture_output=True,
                       timeout=scaled(60))
    return p.returncode, p.stdout.decode(), p.stderr.decode(), str(f)


def rows(table):
    """The table's data rows as lists of columns (RESULT kept whole)."""
    lines = table.strip().splitlines()
    assert lines[0].split() == ["ENVIRONMENT", "ENDPOINT", "STATUS", "LATENCY_MS", "RESULT"]
    return [line.split(None, 4) for line in lines[1:]]


class RecordingServer:
    """Accepts connections on a thread; answers each with `answer` after reading
    the request head, and keeps the heads it read."""

    def __init__(self, answer=b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", barrier=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.barrier = barrier
        self.heads = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(scaled(20))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.heads.append(data.decode())
            if self.barrier:
                self.barrier.wait()
            conn.sendall(self.answer)

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def close(self):
        self.sock.close()


# ---- results and exit codes -------------------------------------------------

def test_ok_and_fail_rows(tmp_path, mock):
    ok = mock("--name", "ok")
    bad = mock("--status", 503)
    refused = free_port()
    code, out, err, _ = probe(tmp_path, f"""
environments:
  staging:
    endpoints:
      - {{name: search, url: "http://127.0.0.1:{ok}/search?q=a", expect: 200, timeout: 2s}}
      - {{name: broken, url: "http://127.0.0.1:{bad}/", expect: 200}}
  prod:
    endpoints:
      - {{name: down, url: "http://127.0.0.1:{refused}/"}}
      - {{name: either, url: "http://127.0.0.1:{bad}/", expect: [200, 503]}}
""")
    assert code == 1, err
    r = rows(out)
    assert [x[:3] for x in r] == [["staging", "search", "200"], ["staging", "broken", "503"],
                                 ["prod", "down", "-"], ["prod", "either", "503"]]
    assert r[0][4] == "ok"
    assert r[1][4] == "FAIL expected 200"
    assert r[2][4] == "FAIL connect refused"
    assert r[3][4] == "ok"
    assert all(x[3].isdigit() for x in r)


def test_all_ok_exits_zero(tmp_path, mock):
    port = mock()
    code, out, err, _ = probe(tmp_path, f"""
environments:
  local:
    endpoints:
      - {{name: a, url: "http://127.0.0.1:{port}/a"}}
      - {{name: b, url: "http://localhost:{port}/b", expect: 200}}
""")
    assert code == 0, err
    assert [x[4] for x in rows(out)] == ["ok", "ok"]


def test_request_line_and_headers(tmp_path):
    srv = RecordingServer()
    try:
        code, out, err, _ = probe(tmp_path, f"""
environments:
  e:
    endpoints:
      - {{name: r, url: "http://127.0.0.1:{srv.port}/search?q=a#frag"}}
""")
    finally:
        srv.close()
    assert code == 0, out + err
    head = srv.heads[0]
    assert head.startswith("GET /search?q=a HTTP/1.1\r\n")
    lines = head.split("\r\n")
    assert f"Host: 127.0.0.1:{srv.port}" in lines
    assert "User-Agent: ficus-probe" in lines


def test_timeout_against_a_silent_listener(tmp_path):
    with socket.socket() as silent:  # listens, never accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        code, out, err, _ = probe(tmp_path, f"""
environments:
  e:
    endpoints:
      - {{name: silent, url: "http://127.0.0.1:{port}/", timeout: 300ms}}
""")
    assert code == 1, err
    (row,) = rows(out)
    assert row[2] == "-"
    assert row[4] == "FAIL timeout"
    assert int(row[3]) >= 300


def test_checks_run_concurrently(tmp_path):
    # Each answer waits until all 8 requests have arrived: a probe checking one
    # endpoint after another would never get its first answer (and time out).
    n = 8
    srv = RecordingServer(barrier=threading.Barrier(n, timeout=scaled(20)))
    try:
        eps = "\n".join(f'      - {{name: e{i}, url: "http://127.0.0.1:{srv.port}/{i}", '
                        f'timeout: {int(scaled(15))}s}}' for i in range(n))
        code, out, err, _ = probe(tmp_path, f"environments:\n  e:\n    endpoints:\n{eps}\n")
    finally:
        srv.close()
    assert code == 0, out + err
    r = rows(out)
    assert [x[1] for x in r] == [f"e{i}" for i in range(n)]  # file order
    assert all(x[4] == "ok" for x in r)


def test_more_endpoints_than_parallel_checks(tmp_path, mock):
    port = mock()
    n = 150  # more than the 64 checks run at once
    eps = "\n".join(f'      - {{name: e{i}, url: "http://127.0.0.1:{port}/{i}"}}' for i in range(n))
    code, out, err, _ = probe(tmp_path, f"environments:\n  e:\n    endpoints:\n{eps}\n")
    assert code == 0, err
    r = rows(out)
    assert [x[1] for x in r] == [f"e{i}" for i in range(n)]
    assert all(x[4] == "ok" for x in r)


def test_rows_follow_file_order_not_completion(tmp_path, mock):
    slow = mock("--latency", "300ms")
    fast = mock()
    code, out, err, _ = probe(tmp_path, f"""
environments:
  z:
    endpoints:
      - {{name: slow, url: "http://127.0.0.1:{slow}/"}}
  a:
    endpoints:
      - {{name: fast, url: "http://127.0.0.1:{fast}/"}}
""")
    assert code == 0, err
    assert [x[:2] for x in rows(out)] == [["z", "slow"], ["a", "fast"]]


def test_env_filter_and_json(tmp_path, mock):
    port = mock()
    code, out, err, _ = probe(tmp_path, f"""
environments:
  staging:
    endpoints:
      - {{name: one, url: "http://127.0.0.1:{port}/one", expect: 404}}
  dev:
    endpoints:
      - {{name: two, url: "http://127.0.0.1:{port}/two"}}
""", "--env", "staging", "--json")
    assert code == 1, err
    data = json.loads(out)
    assert len(data) == 1
    d = data[0]
    assert d["environment"] == "staging" and d["endpoint"] == "one"
    assert d["url"] == f"http://127.0.0.1:{port}/one"
    assert d["status"] == 200 and d["ok"] is False and d["reason"] == "expected 404"
    assert d["expect"] == [404]
    assert isinstance(d["latency_ms"], int)

    code, out, err, _ = probe(tmp_path, f"""
environments:
  dev:
    endpoints:
      - {{name: two, url: "http://127.0.0.1:{port}/two"}}
""", "--json")
    assert code == 0
    assert json.loads(out)[0]["reason"] is None


def test_unknown_env_is_an_error(tmp_path):
    code, out, err, f = probe(tmp_path, """
environments:
  dev:
    endpoints: []
""", "--env", "prod")
    assert code == 2
    assert f"{f}:3:3: " in err and "no environment 'prod'" in err


# ---- TLS ----------------------------------------------------------------------

@pytest.fixture
def tls_server(tmp_path, processes):
    if not shutil.which("openssl"):
        pytest.skip("no openssl binary")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-days", "2",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    port = free_port()
    processes(["openssl", "s_server", "-quiet", "-www", "-accept", str(port), "-cert", str(cert),
               "-key", str(key)], port)
    return port, cert


def probe_env(tmp_path, yaml_text, env, *args):
    f = tmp_path / "probe.yaml"
    f.write_text(yaml_text)
    p = subprocess.run([FICUS_BIN, "probe", "-f", str(f), *args], capture_output=True,
                       timeout=scaled(60), env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_tls_verifies_the_peer(tmp_path, tls_server):
    port, cert = tls_server
    text = f"""
environments:
  tls:
    endpoints:
      - {{name: byname, url: "https://localhost:{port}/"}}
      - {{name: byip, url: "https://127.0.0.1:{port}/"}}
"""
    env = dict(os.environ)
    env.pop("SSL_CERT_FILE", None)
    # Self-signed: not in the system store.
    code, out, err = probe_env(tmp_path, text, env)
    assert code == 1, err
    assert all(x[4].startswith("FAIL tls: ") and "self-signed" in x[4] for x in rows(out))
    # --insecure skips verification.
    code, out, err = probe_env(tmp_path, text, env, "--insecure")
    assert code == 0, err
    assert [x[2] for x in rows(out)] == ["200", "200"]
    # Trusted (OpenSSL's SSL_CERT_FILE): the name matches, the IP does not.
    env["SSL_CERT_FILE"] = str(cert)
    code, out, err = probe_env(tmp_path, text, env)
    assert code == 1
    r = rows(out)
    assert r[0][4] == "ok"
    assert r[1][4].startswith("FAIL tls: ") and "mismatch" in r[1][4]


# ---- usage and file errors ---------------------------------------------------------

def test_help():
    p = subprocess.run([FICUS_BIN, "probe", "--help"], capture_output=True, timeout=scaled(10))
    assert p.returncode == 0
    assert b"-f FILE" in p.stdout


@pytest.mark.parametrize("args,message", [
    ([], "-f FILE is required"),
    (["-f"], "needs a value"),
    (["-f", "x.yaml", "--bogus"], "unknown option"),
    (["-f", "x.yaml", "extra"], "unexpected argument"),
])
def test_bad_usage_exits_2(args, message):
    p = subprocess.run([FICUS_BIN, "probe", *args], capture_output=True, timeout=scaled(10))
    assert p.returncode == 2
    assert message in p.stderr.decode()
    assert "usage: ficus probe" in p.stderr.decode()


def test_missing_file_exits_2(tmp_path):
    f = tmp_path / "nope.yaml"
    p = subprocess.run([FICUS_BIN, "probe", "-f", str(f)], capture_output=True,
                       timeout=scaled(10))
    assert p.returncode == 2
    assert p.stderr.decode().startswith(f"{f}:1:1: ")


def test_bad_file_errors_carry_line_and_column(tmp_path):
    code, out, err, f = probe(tmp_path, """environments:
  staging:
    endpoints:
      - {name: a, url: "ftp://x/", expect: 700, timeout: soon, colour: red}
      - {url: "http://x/"}
  qa: 3
extra: 1
""")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert lines == [
        f"{f}:4:24: environments.staging.endpoints[0].url: URL must start with http:// or https://",
        f"{f}:4:44: environments.staging.endpoints[0].expect: a status (100-599) or a list of them",
        f"{f}:4:58: environments.staging.endpoints[0].timeout: use a unit: 250ms, 5s, 2m, 1h",
        f"{f}:4:64: environments.staging.endpoints[0]: unknown key 'colour' "
        "(expected name, url, expect, timeout)",
        f"{f}:5:9: environments.staging.endpoints[1]: 'name' is required",
        f"{f}:6:7: environments.qa: expected a mapping with 'endpoints'",
        f"{f}:7:1: unknown or repeated key 'extra' (expected environments)",
    ]


def test_yaml_syntax_error(tmp_path):
    code, out, err, f = probe(tmp_path, "environments:\n  staging: [\n")
    assert code == 2
    assert err.startswith(f"{f}:3:1: ")
