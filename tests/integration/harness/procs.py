"""The processes the tests start: ficus itself, `ficus mock` and nginx, each on
free 127.0.0.1 ports. Every process started here is tracked, and only those are
ever signalled (SIGTERM, then SIGKILL after a bound) at test teardown, session
end and interpreter exit."""

import atexit
import copy
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from .config import to_yaml

FICUS_MODE = os.environ.get("FICUS_MODE", "release")
_SCALE = 3.0 if FICUS_MODE == "asan" else 1.0
_counter = itertools.count(1)


def scaled(seconds):
    """A timeout stretched for sanitizer builds."""
    return seconds * _SCALE


def repo_root():
    return Path(__file__).resolve().parents[3]


def ficus_bin():
    return os.environ.get("FICUS_BIN") or str(repo_root() / "ficus")


_handed_out = set()


def free_port():
    """A port nobody listens on right now (the kernel's choice), never one
    already handed out in this run: two calls in a row can otherwise get the
    same port back before anything binds it."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no fresh free port after 100 tries")


def port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# --- process registry -------------------------------------------------------

_lock = threading.Lock()
_procs = []


def _track(p):
    with _lock:
        _procs.append(p)


def stop_process(p, grace=3.0):
    """SIGTERM, then SIGKILL after grace (scaled) seconds. Popen refuses to
    signal a reaped child, so a recycled PID is never hit. Returns the exit
    code."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                # ficus drains on the first SIGTERM (drain_delay, 5s by
                # default) and stops at once on the second.
                p.send_signal(signal.SIGTERM)
            p.wait(timeout=scaled(grace))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=scaled(10))
        except ProcessLookupError:
            p.wait(timeout=scaled(10))
    with _lock:
        if p in _procs:
            _procs.remove(p)
    return p.returncode


def stop_all():
    """Stops every process the harness started and has not stopped yet."""
    with _lock:
        procs = list(_procs)
    for p in procs:
        try:
            stop_process(p, grace=2.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(stop_all)


class _Reader(threading.Thread):
    """Drains a pipe into a list of lines so the child never blocks on it."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines = []

    def run(self):
        try:
            for raw in iter(self.pipe.readline, b""):
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        except (OSError, ValueError):
            pass


def spawn(argv, cwd=None):
    """Starts argv with piped output drained by reader threads; tracked."""
    p = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )
    _track(p)
    out, err = _Reader(p.stdout), _Reader(p.stderr)
    out.start()
    err.start()
    return p, out, err


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_ports(ports, proc, timeout, what):
    """Waits until every port accepts a connection; raises if proc exits."""
    deadline = time.monotonic() + scaled(timeout)
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        pending = [p for p in pending if not _accepts(p)]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{what}: ports {pending} not accepting after {scaled(timeout)}s")
        time.sleep(0.02)


def run_cli(args, timeout=10.0, wrapper=()):
    """Runs `ficus ARGS` to completion; CompletedProcess with text output."""
    return subprocess.run(
        [*wrapper, ficus_bin(), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
    )


class _Proc:
    proc = None
    _out = None
    _err = None

    @property
    def stdout(self):
        """stdout lines so far (a live list)."""
        return self._out.lines

    @property
    def stderr(self):
        """stderr so far; all of it once the process has exited (the reader
        thread may trail the exit)."""
        if self.proc is not None and self.proc.poll() is not None:
            self._err.join(timeout=2)
        return "\n".join(self._err.lines)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, grace=3.0):
        rc = stop_process(self.proc, grace)
        self._out.join(timeout=scaled(2))
        self._err.join(timeout=scaled(2))
        return rc

    def signal(self, sig):
        self.proc.send_signal(sig)


class FicusStartError(RuntimeError):
    pass


class Ficus(_Proc):
    """`ficus run -c FILE` on free ports.

    config is a dict (written as YAML; server.listen, admin.listen and short
    drain times are filled in unless given) or YAML text in which @LISTEN@ and
    @ADMIN@ are replaced by the chosen addresses."""

    def __init__(self, config, workdir, wrapper=(), wait=True, start_timeout=10.0):
        self.port = free_port()
        self.admin_port = free_port()
        self.listen = f"127.0.0.1:{self.port}"
        self.admin_listen = f"127.0.0.1:{self.admin_port}"
        text = self._render(config)
        self.config_text = text
        self.config_path = Path(workdir) / f"ficus-{next(_counter)}.yaml"
        self.config_path.write_text(text)
        self.url = f"http://{self.listen}"
        self.admin_url = f"http://{self.admin_listen}"
        self.proc, self._out, self._err = spawn(
            [*wrapper, ficus_bin(), "run", "-c", str(self.config_path)], cwd=workdir
        )
        if wait:
            try:
                wait_ports([self.port, self.admin_port], self.proc, start_timeout, "ficus run")
            except RuntimeError as e:
                time.sleep(0.1)
                self.stop(grace=1.0)
                raise FicusStartError(
                    f"{e}\n--- config {self.config_path}:\n{text}--- stderr:\n{self.stderr}"
                    f"\n--- stdout:\n" + "\n".join(self.stdout[-20:])
                ) from None

    def _render(self, config):
        if isinstance(config, str):
            return config.replace("@LISTEN@", self.listen).replace("@ADMIN@", self.admin_listen)
        cfg = copy.deepcopy(config)
        server = cfg.setdefault("server", {})
        if "listen" in server:  # the test chose: wait on its first listener
            self.port = int(str(server["listen"][0]).rsplit(":", 1)[1])
            self.listen = f"127.0.0.1:{self.port}"
        server.setdefault("listen", [self.listen])
        admin = (cfg.get("admin") or {}).get("listen")
        if admin:  # the test chose the admin address too
            self.admin_listen = str(admin)
            self.admin_port = int(self.admin_listen.rsplit(":", 1)[1])
        # Tests stop ficus after each test: no reason to wait for a drain.
        server.setdefault("drain_delay", "0s")
        server.setdefault("drain_timeout", "1s")
        cfg.setdefault("admin", {}).setdefault("listen", self.admin_listen)
        # Keep the keys in a readable order: server, admin, then the rest.
        order = ["server", "admin"]
        cfg = {k: cfg[k] for k in order + [k for k in cfg if k not in order]}
        return to_yaml(cfg)

    def write_config(self, config, replace=True):
        """Writes a new config (same listeners and admin unless given) to the
        file ficus runs with: replace=True renames a temp file over it, as
        editors and deploy tools do; False rewrites it in place."""
        text = self._render(config)
        self.config_text = text
        if replace:
            tmp = self.config_path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.config_path)
        else:
            self.config_path.write_text(text)
        return text

    def access_log(self):
        """The JSON objects among the stdout lines (the access log)."""
        out = []
        for line in list(self.stdout):
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_access_log(self, n, timeout=5.0):
        """At least n access log lines on stdout, or what there is after timeout."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            lines = self.access_log()
            if len(lines) >= n or time.monotonic() >= deadline:
                return lines
            time.sleep(0.05)

    def admin_get(self, path, timeout=5.0):
        """(status, headers dict lower-cased, body text) from the admin listener."""
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=scaled(timeout))
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read().decode("utf-8", "replace")
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            c.close()

    def metrics_text(self):
        status, _, body = self.admin_get("/metrics")
        assert status == 200, f"/metrics answered {status}: {body[:300]}"
        return body

    def sanitizer_report(self):
        text = self.stderr
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 200) : i + 3000]
        return None


class Mock(_Proc):
    """`ficus mock` on a free port; stats() reads GET /__mock/stats."""

    def __init__(self, name="mock", status=None, body=None, body_file=None, latency=None,
                 fail_rate=None, fail_status=None, reset_rate=None, workers=None, wait=True):
        self.name = name
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        argv = [ficus_bin(), "mock", "--listen", self.addr, "--name", name]
        for flag, val in (("--status", status), ("--body", body), ("--body-file", body_file),
                          ("--latency", latency), ("--fail-rate", fail_rate),
                          ("--fail-status", fail_status), ("--reset-rate", reset_rate),
                          ("--workers", workers)):
            if val is not None:
                argv += [flag, str(val)]
        self.argv = argv
        self.proc, self._out, self._err = spawn(argv)
        if wait:
            try:
                wait_ports([self.port], self.proc, 10.0, f"ficus mock {name}")
            except RuntimeError as e:
                self.stop(grace=1.0)
                raise RuntimeError(f"{e}\nargv: {argv}\nstderr:\n{self.stderr}") from None

    def _call(self, method, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(5))
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def stats(self):
        status, body = self._call("GET", "/__mock/stats")
        assert status == 200, f"mock {self.name} stats answered {status}: {body[:200]!r}"
        return json.loads(body)

    def reset(self):
        return self._call("POST", "/__mock/reset")[0]


_NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    keepalive_requests 1000000;
    keepalive_timeout {keepalive_timeout};
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            add_header X-Nginx-Name {name} always;
            return 200 "{body}";
        }}
        location /echo {{
            add_header X-Nginx-Name {name} always;
            return 200 "$request_method $request_uri\\nhost=$http_host\\nx-forwarded-for=$http_x_forwarded_for\\nx-request-id=$http_x_request_id\\nconnection=$http_connection\\n";
        }}
        location /files/ {{
            add_header X-Nginx-Name {name} always;
            alias {dir}/files/;
        }}
    }}
}}
"""


class Nginx(_Proc):
    """nginx in the foreground with a generated config in workdir: `/` returns
    a fixed body, `/echo` the request line and chosen request headers, and
    `/files/NAME` serves workdir/files/NAME (see add_file)."""

    def __init__(self, workdir, name="nginx", body="hello from nginx\n", keepalive_timeout="60s"):
        self.name = name
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.dir = Path(workdir) / f"nginx-{next(_counter)}"
        (self.dir / "files").mkdir(parents=True)
        user = "user root;" if os.geteuid() == 0 else ""
        conf = _NGINX_CONF.format(dir=self.dir, port=self.port, name=name, user=user,
                                  keepalive_timeout=keepalive_timeout,
                                  body=body.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        (self.dir / "nginx.conf").write_text(conf)
        self.proc, self._out, self._err = spawn(
            ["nginx", "-p", str(self.dir), "-e", str(self.dir / "error.log"),
             "-c", str(self.dir / "nginx.conf"), "-g", "daemon off;"]
        )
        try:
            wait_ports([self.port], self.proc, 10.0, "nginx")
        except RuntimeError as e:
            self.stop(grace=1.0)
            log = (self.dir / "error.log").read_text() if (self.dir / "error.log").exists() else ""
            raise RuntimeError(f"{e}\nstderr:\n{self.stderr}\nerror.log:\n{log}") from None

    def add_file(self, name, data):
        (self.dir / "files" / name).write_bytes(data)
        return f"/files/{name}"
