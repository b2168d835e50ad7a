"""A real Prometheus server scrapes ficus's admin listener (contract section
6.1): the target is up with no scrape error, so Prometheus parsed the whole
exposition, and what its query API returns matches the traffic sent: request
counters, a histogram quantile computed from the buckets, the build info."""

import json
import math
import shutil
import time
import urllib.parse
import urllib.request

import pytest

from harness import Ficus, Mock, config, free_port, http_request, metric_value, parse_metrics
from harness import repo_root, route, scaled, wait_until
from harness.procs import spawn, stop_process, wait_ports

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
OK_REQUESTS = 40
NO_ROUTE_REQUESTS = 7
LATENCY_S = 0.02  # the mock's answer time: every request takes at least this
WAIT_S = 30.0  # bound on each wait for Prometheus (start, first scrape)
# Straight to loopback, whatever http_proxy the environment sets.
_OPEN = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: ficus
    metrics_path: /metrics
    static_configs:
      - targets: ["{target}"]
"""


class Prometheus:
    """prometheus on a free loopback port scraping one target, its TSDB in
    workdir; query() and targets() read its HTTP API."""

    def __init__(self, workdir, target):
        self.port = free_port()
        self.dir = workdir / "prometheus"
        (self.dir / "data").mkdir(parents=True)
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(_CONFIG.format(target=target))
        self.proc, self._out, self._err = spawn([
            PROMETHEUS,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ], cwd=self.dir)
        try:
            wait_ports([self.port], self.proc, WAIT_S, "prometheus")
            # It listens before its TSDB is open and answers 503 until then.
            deadline = time.monotonic() + WAIT_S
            while not self.ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"prometheus: /-/ready not 200 after {WAIT_S}s")
                time.sleep(0.1)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError(f"{e}\n{self.log()}") from None

    def ready(self):
        try:
            with _OPEN(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as r:
                return r.status == 200
        except OSError:  # URLError and HTTPError (503 while starting) included
            return False

    def log(self):
        return "\n".join((self._out.lines + self._err.lines)[-40:])

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with _OPEN(url, timeout=10) as r:
            doc = json.load(r)
        assert doc.get("status") == "success", doc
        return doc["data"]

    def query(self, expr):
        """The instant vector of expr now: [(labels, float)]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def wait_query(self, expr, pred=lambda v: bool(v)):
        """Polls expr until pred(result) holds, for at most WAIT_S seconds."""
        last = []

        def poll():
            nonlocal last
            last = self.query(expr)
            return pred(last)

        if not wait_until(poll, WAIT_S, interval=0.25):
            pytest.fail(f"{expr}: no matching answer within {WAIT_S}s, last {last}\n{self.log()}")
        return last

    def targets(self):
        return self.api("targets", state="active")["activeTargets"]

    def stop(self):
        # Prometheus flushes its head block on SIGTERM; a fresh TSDB is quick.
        stop_process(self.proc, grace=10.0)
        self._out.join(timeout=2)
        self._err.join(timeout=2)


def quantile(q, buckets):
    """histogram_quantile as Prometheus computes it, from [(le, cumulative)]."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    rank = q * total
    for i, (le, count) in enumerate(buckets):
        if count >= rank:
            break
    if le == math.inf:
        return buckets[-2][0]
    start, below = (0.0, 0.0) if i == 0 else buckets[i - 1]
    if i == 0 and le <= 0:
        return le
    return start + (le - start) * (rank - below) / (count - below)


def _send_traffic(f):
    for i in range(OK_REQUESTS):
        r = http_request(f.port, "GET", f"/api/{i}")
        assert r.status == 200, r
    for i in range(NO_ROUTE_REQUESTS):
        r = http_request(f.port, "GET", f"/nowhere/{i}")
        assert r.status == 404, r

    # Counters are bumped as a request ends, maybe just after the client got
    # its answer: start scraping only once ficus itself shows all of them.
    def settled():
        s = parse_metrics(f.metrics_text())
        return (metric_value(s, "ficus_requests_total", route="api") == OK_REQUESTS
                and metric_value(s, "ficus_requests_total", code="404") == NO_ROUTE_REQUESTS
                and s)

    samples = wait_until(settled, scaled(5))
    assert samples, f"ficus's own counters never reached the traffic sent:\n{f.metrics_text()}"
    return samples


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """(ficus, prometheus, ficus's own samples): ficus with one route after
    known traffic, and Prometheus scraping it. One set-up for the module:
    Prometheus takes seconds to start, and the tests only read."""
    if not shutil.which(PROMETHEUS):
        pytest.skip(f"no prometheus binary at {PROMETHEUS}")
    workdir = tmp_path_factory.mktemp("prometheus")
    m = Mock("api", latency=f"{int(LATENCY_S * 1000)}ms")
    f = p = None
    try:
        f = Ficus(config({"api": m.addr}, [route("api", "/api", "api")]), workdir)
        samples = _send_traffic(f)
        p = Prometheus(workdir, f.admin_listen)
        # Discovery hands targets to the scraper in 5s ticks: the first
        # scrape lands a few seconds after start.
        p.wait_query('up{job="ficus"}')
        yield f, p, samples
    finally:
        if p is not None:
            p.stop()
        m.stop()
        if f is not None:
            was_running = f.alive()
            rc = f.stop()
            report = f.sanitizer_report()
            # As the ficus fixture does: a sanitizer report or a crash fails the module.
            if report:
                pytest.fail(f"sanitizer report from ficus pid {f.pid}:\n{report}", pytrace=False)
            if was_running and rc != 0:
                pytest.fail(f"ficus exited {rc} on SIGTERM:\n{f.stderr[-2000:]}", pytrace=False)


def test_target_up_and_scraped_without_error(scraped):
    f, p, _ = scraped
    assert [v for _, v in p.wait_query('up{job="ficus"}', lambda r: r and r[0][1] == 1)] == [1]
    targets = p.targets()
    assert len(targets) == 1, targets
    t = targets[0]
    assert t["health"] == "up", t
    assert t["lastError"] == "", t
    assert t["scrapeUrl"] == f"http://{f.admin_listen}/metrics", t
    # Every sample line ficus exposes became a series: nothing was dropped
    # as unparsable, duplicated or out of order.
    got = p.wait_query('scrape_samples_scraped{job="ficus"}')
    exposed = [n for n, _, _ in parse_metrics(f.metrics_text())]
    assert got[0][1] == len(exposed), (got, len(exposed))
    stored = p.query('count({job="ficus", __name__=~"ficus_.*|process_.*"})')
    assert stored[0][1] == len(exposed), (stored, len(exposed))
    # The Prometheus client conventions' process metrics are there too.
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
        got = p.query(f'{name}{{job="ficus"}}')
        # CPU time counts in clock ticks (10 ms): an idle ficus may not have one yet.
        low = 0 if name == "process_cpu_seconds_total" else 1
        assert got and got[0][1] >= low, (name, got)


def test_request_counters_match_traffic(scraped):
    _, p, _ = scraped
    got = p.wait_query('sum(ficus_requests_total{route="api"})')
    assert got[0][1] == OK_REQUESTS, got
    by_code = {m["code"]: v
               for m, v in p.query('sum by (code) (ficus_requests_total{route="api"})')}
    assert by_code == {"200": OK_REQUESTS}, by_code
    no_route = p.query('sum(ficus_requests_total{code="404"})')
    assert no_route[0][1] == NO_ROUTE_REQUESTS, no_route
    total = p.query("sum(ficus_requests_total)")
    assert total[0][1] == OK_REQUESTS + NO_ROUTE_REQUESTS, total
    upstream = p.query('sum(ficus_upstream_requests_total{target_group="api"})')
    assert upstream[0][1] == OK_REQUESTS, upstream


def test_histogram_quantile(scraped):
    _, p, samples = scraped
    expr = ('histogram_quantile(0.9, sum by (le) '
            '(ficus_request_duration_seconds_bucket{route="api"}))')
    got = p.wait_query(expr)
    assert len(got) == 1, got
    q = got[0][1]
    assert math.isfinite(q), got
    # Every request waited LATENCY_S (20ms) for the mock, so none fell in a
    # bucket below 0.01 and interpolation cannot go under that edge.
    assert LATENCY_S / 2 <= q <= 30, q
    buckets = [(float(ls["le"]), v) for n, ls, v in samples
               if n == "ficus_request_duration_seconds_bucket" and ls.get("route") == "api"]
    assert math.isclose(q, quantile(0.9, buckets), rel_tol=1e-9), (q, buckets)
    count = p.query('ficus_request_duration_seconds_count{route="api"}')
    assert count[0][1] == OK_REQUESTS, count


def test_build_info_has_version(scraped):
    _, p, _ = scraped
    got = p.wait_query("ficus_build_info")
    assert len(got) == 1, got
    labels, value = got[0]
    assert value == 1, got
    version = (repo_root() / "VERSION").read_text().strip()
    assert labels.get("version", "").startswith(version), labels
