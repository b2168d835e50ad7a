"""Fixtures for ficus's black-box tests. Each test gets factories that start
ficus, `ficus mock`, nginx or an in-process echo backend on free 127.0.0.1
ports; everything a test started is stopped at its teardown, and whatever is
left at session end (or interpreter exit) is stopped by the harness."""

import os

import pytest

from harness import EchoBackend, Ficus, Mock, Nginx, RawBackend, ficus_bin, stop_all


@pytest.fixture(scope="session", autouse=True)
def _session_processes():
    if not os.access(ficus_bin(), os.X_OK):
        pytest.exit(f"no ficus binary at {ficus_bin()} (build it or set FICUS_BIN)", returncode=4)
    yield
    stop_all()


@pytest.fixture
def ficus(tmp_path):
    """ficus(config, wrapper=(), wait=True) -> Ficus. config: dict or YAML text
    with @LISTEN@/@ADMIN@. Fails the test at teardown if a sanitizer spoke."""
    started = []

    def start(config, **kw):
        f = Ficus(config, tmp_path, **kw)
        started.append(f)
        return f

    yield start
    reports = []
    for f in started:
        was_running = f.alive()
        rc = f.stop()
        rep = f.sanitizer_report()
        if rep:
            reports.append(f"sanitizer report from ficus pid {f.pid} ({f.config_path}):\n{rep}")
        elif was_running and rc != 0:
            # SIGTERM is a graceful stop (contract section 7): anything but 0
            # is a crash or a hang the harness had to SIGKILL.
            reports.append(f"ficus pid {f.pid} exited {rc} on SIGTERM; stderr tail:\n"
                           f"{f.stderr[-2000:]}")
    if reports:
        pytest.fail("\n".join(reports), pytrace=False)


@pytest.fixture
def mock():
    """mock(name=..., status=, body=, latency=, fail_rate=, ...) -> Mock."""
    started = []

    def start(name="mock", **kw):
        m = Mock(name, **kw)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def nginx(tmp_path):
    """nginx(name=..., body=...) -> Nginx."""
    started = []

    def start(name="nginx", **kw):
        n = Nginx(tmp_path, name, **kw)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


@pytest.fixture
def echo_backend():
    """echo_backend(name) -> EchoBackend (in-process, threaded)."""
    started = []

    def start(name="echo"):
        e = EchoBackend(name)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


@pytest.fixture
def raw_backend():
    """raw_backend("hang" | "truncate" | "close_delimited" | "custom", response=b"...")."""
    started = []

    def start(mode, response=None):
        r = RawBackend(mode, response)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
