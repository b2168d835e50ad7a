"""Configuration reload (contract section 7): on SIGHUP or a change of the
file, a valid config takes effect for new requests while requests in flight
finish on the old one, and no connection is dropped; an invalid one keeps the
old config serving, with every error logged and the failure counted."""

import json
import os
import re
import shutil
import signal
import socket
import threading
import time

import pytest

from harness import (config, http_request, metric_value, parse_metrics, route, scaled,
                     wait_until, wrk)


def reloads(f, result):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_config_reloads_total",
                        result=result) or 0


def mock_name(f, path="/"):
    r = http_request(f.port, "GET", path)
    return r.status, r.header("X-Mock-Name")


def test_sighup_applies_a_new_config_to_new_requests(ficus, mock):
    a, b = mock("a"), mock("b")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    assert mock_name(f) == (200, "a")
    before = metric_value(parse_metrics(f.metrics_text()),
                          "ficus_config_last_reload_success_timestamp_seconds")
    time.sleep(1.1)  # the timestamp has a resolution of seconds in the exposition
    f.write_config(config({"b": b.addr}, [route("r", "/", "b"), route("new", "/new", "b")]))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(f, "success") >= 1, scaled(5)), f.stderr
    assert mock_name(f) == (200, "b")
    assert mock_name(f, "/new/x") == (200, "b")
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_config_last_reload_success_timestamp_seconds") > before
    assert reloads(f, "failure") == 0
    # /config and the gauges show the new snapshot: group a is gone.
    cfg = json.loads(f.admin_get("/config")[2])
    assert set(cfg["target_groups"]) == {"b"}
    assert metric_value(s, "ficus_backend_weight", route="new", target_group="b") == 1
    assert metric_value(s, "ficus_target_healthy", target_group="a", target=a.addr) is None
    assert wait_until(lambda: "configuration #2 loaded" in f.stderr, scaled(5)), f.stderr


def test_a_change_of_the_file_reloads_without_a_signal(ficus, mock):
    a, b = mock("a"), mock("b")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    f.write_config(config({"b": b.addr}, [route("r", "/", "b")]))  # rename over it
    assert wait_until(lambda: mock_name(f) == (200, "b"), scaled(5)), f.stderr
    assert reloads(f, "success") == 1
    f.write_config(config({"a": a.addr}, [route("r", "/", "a")]), replace=False)  # in place
    assert wait_until(lambda: mock_name(f) == (200, "a"), scaled(5)), f.stderr
    # Touching the file without changing it does not reload.
    n = reloads(f, "success")
    f.config_path.touch()
    time.sleep(1)
    assert reloads(f, "success") == n


def test_an_invalid_file_keeps_the_old_config_serving(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    good = f.config_text
    f.config_path.write_text(good + "routes_typo: [\n")  # a YAML syntax error
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(f, "failure") >= 1, scaled(5)), f.stderr
    assert mock_name(f) == (200, "a")
    # A valid YAML file with two errors: both are logged with their position.
    bad = config({"a": a.addr}, [route("r", "/", "nope"), route("r2", "/x", "a", timeout="soon")])
    f.write_config(bad)
    assert wait_until(lambda: reloads(f, "failure") >= 2, scaled(5)), f.stderr
    err = f.stderr
    path = re.escape(str(f.config_path))
    assert re.search(path + r":\d+:\d+: .*nope", err), err
    assert re.search(path + r":\d+:\d+: .*soon", err), err
    assert "previous configuration keeps serving" in err
    assert reloads(f, "success") == 0
    assert mock_name(f) == (200, "a")
    assert json.loads(f.admin_get("/config")[2])["routes"][0]["name"] == "r"


def test_a_change_that_needs_a_restart_is_refused(ficus, mock):
    a, b = mock("a"), mock("b")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")], server={"workers": 1}))
    f.write_config(config({"b": b.addr}, [route("r", "/", "b")], server={"workers": 2}))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(f, "failure") >= 1, scaled(5)), f.stderr
    assert wait_until(lambda: "server.workers changed" in f.stderr, scaled(5)), f.stderr
    assert mock_name(f) == (200, "a")


def test_in_flight_requests_finish_on_the_old_config(ficus, mock):
    slow, fast = mock("slow", latency="1500ms"), mock("fast")
    f = ficus(config({"slow": slow.addr}, [route("r", "/", "slow")], server={"workers": 2}))
    result = {}

    def call():
        try:
            r = http_request(f.port, "GET", "/", timeout=scaled(10))
            result["r"] = (r.status, r.header("X-Mock-Name"))
        except OSError as e:
            result["r"] = ("error", repr(e))

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)  # in ficus and at the slow backend
    # The new config has no group "slow" at all: the old snapshot must live on.
    f.write_config(config({"fast": fast.addr}, [route("r", "/", "fast")], server={"workers": 2}))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(f, "success") >= 1, scaled(5)), f.stderr
    assert mock_name(f) == (200, "fast")
    assert "configuration #1 released" not in f.stderr
    t.join(scaled(10))
    assert result["r"] == (200, "slow")
    # Its last request done, the old snapshot is freed.
    assert wait_until(lambda: "configuration #1 released" in f.stderr, scaled(3)), f.stderr


def test_keepalive_connections_survive_a_reload(ficus, mock):
    a, b = mock("a"), mock("b")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")], server={"workers": 1}))
    s = socket.create_connection(("127.0.0.1", f.port))
    s.settimeout(scaled(5))

    def ask():
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        while len(body) < length:
            body += s.recv(65536)
        return re.search(rb"(?i)x-mock-name: (\w+)", head).group(1).decode()

    assert ask() == "a"
    f.write_config(config({"b": b.addr}, [route("r", "/", "b")], server={"workers": 1}))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(f, "success") >= 1, scaled(5)), f.stderr
    assert ask() == "b"  # the same connection, now on the new config
    s.close()


def test_health_verdicts_survive_a_reload(ficus, mock):
    a = mock("a")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    down = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()  # nothing listens there: health checks fail
    group = {"targets": [a.addr, down],
             "health_check": {"path": "/", "interval": "100ms", "timeout": "200ms",
                              "unhealthy_threshold": 1, "healthy_threshold": 1}}
    f = ficus(config({"g": group}, [route("r", "/", "g")]))

    def down_is_unhealthy():
        s = parse_metrics(f.metrics_text())
        return metric_value(s, "ficus_target_healthy", target_group="g", target=down) == 0

    assert wait_until(down_is_unhealthy, scaled(5))
    group2 = dict(group, health_check=dict(group["health_check"], interval="1h"))
    f.write_config(config({"g": group2}, [route("r", "/", "g"), route("r2", "/two", "g")]))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(f, "success") >= 1, scaled(5)), f.stderr
    # The next check is an hour away: the verdict came over from the old snapshot.
    assert down_is_unhealthy()
    for _ in range(10):
        assert mock_name(f, "/two") == (200, "a")


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk not installed")
def test_reload_under_load_loses_nothing(ficus, mock):
    a, b = mock("a", workers=1), mock("b", workers=1)
    groups = {"a": a.addr, "b": b.addr}
    cfgs = [config(groups, [route("r", "/", [("a", 9), ("b", 1)])], server={"workers": 2}),
            config(groups, [route("r", "/", [("a", 1), ("b", 9)]), route("x", "/x", "b")],
                   server={"workers": 2})]
    f = ficus(cfgs[0])
    done = threading.Event()
    sent = [0]

    def reloader():
        i = 1
        while not done.is_set():
            f.write_config(cfgs[i % 2])
            f.signal(signal.SIGHUP)
            sent[0] += 1
            i += 1
            done.wait(0.25)

    t = threading.Thread(target=reloader)
    t.start()
    try:
        total, errors, non2xx, out = wrk(f.url + "/", 5)
    finally:
        done.set()
        t.join()
    assert total > 0, out
    assert errors == 0, out
    assert non2xx == 0, out
    # Signals that arrive during a reload are coalesced into one more: many
    # reloads, none failed, and the last file written is the one in effect.
    last_routes = {r["name"] for r in cfgs[(sent[0]) % 2]["routes"]}

    def settled():
        cfg = json.loads(f.admin_get("/config")[2])
        return {r["name"] for r in cfg["routes"]} == last_routes

    assert wait_until(settled, scaled(5)), (sent[0], f.stderr[-2000:])
    assert reloads(f, "success") >= 2
    assert reloads(f, "failure") == 0
    assert a.stats()["total"] > 0 and b.stats()["total"] > 0


def test_a_failed_file_is_not_retried_until_it_changes(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    f.config_path.write_text(f.config_text + "routes_typo: [\n")
    assert wait_until(lambda: reloads(f, "failure") == 1, scaled(5)), f.stderr
    # Other files in the same directory change: the bad file is not read again.
    for i in range(5):
        (f.config_path.parent / f"other-{i}.txt").write_text("x")
        time.sleep(0.3)
    assert reloads(f, "failure") == 1
    f.write_config(config({"a": a.addr}, [route("r", "/", "a"), route("r2", "/two", "a")]))
    assert wait_until(lambda: reloads(f, "success") == 1, scaled(5)), f.stderr


def test_a_change_is_seen_with_a_busy_file_beside_it(ficus, mock):
    """A log written next to the config every 20 ms must not hold a change
    back (each write used to re-arm the debounce): seen within 2 s."""
    a, b = mock("a"), mock("b")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    stop = threading.Event()
    sibling = f.config_path.parent / "access.log"

    def write_beside():
        with open(sibling, "a") as out:
            for _ in range(2000):  # bounded: 40 s at most
                if stop.is_set():
                    return
                out.write("x" * 100 + "\n")
                out.flush()
                time.sleep(0.02)

    t = threading.Thread(target=write_beside, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        f.write_config(config({"b": b.addr}, [route("r", "/", "b")]))
        assert wait_until(lambda: mock_name(f) == (200, "b"), scaled(2)), f.stderr
    finally:
        stop.set()
        t.join()


def test_a_configmap_symlink_swap_reloads(ficus, mock, tmp_path):
    """Kubernetes mounts a ConfigMap as FILE -> ..data/FILE with ..data a
    symlink to a timestamped directory, swapped by a rename."""
    a, b = mock("a"), mock("b")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    d = f.config_path.parent
    text_a = f.config_path.read_text()
    v1 = d / "..2026_01_01_00_00_00.1"
    v1.mkdir()
    (v1 / "cm.yaml").write_text(text_a)
    (d / "..data").symlink_to(v1.name)
    # Point ficus's own file at the ConfigMap layout: same content, no reload.
    link = d / "cm.link"
    link.symlink_to("..data/cm.yaml")
    os.replace(link, f.config_path)
    time.sleep(1)
    n = reloads(f, "success")
    text_b = f.write_config.__self__._render(config({"b": b.addr}, [route("r", "/", "b")]))
    v2 = d / "..2026_01_01_00_00_01.2"
    v2.mkdir()
    (v2 / "cm.yaml").write_text(text_b)
    tmp = d / "..data_tmp"
    tmp.symlink_to(v2.name)
    os.replace(tmp, d / "..data")
    assert wait_until(lambda: mock_name(f) == (200, "b"), scaled(2)), f.stderr
    assert reloads(f, "success") == n + 1


def test_last_reload_successful_stays_0_while_the_bad_file_is_there(ficus, mock):
    """The documented alert must not clear itself while the file is still bad."""
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))

    def ok():
        return metric_value(parse_metrics(f.metrics_text()), "ficus_config_last_reload_successful")

    assert ok() == 1
    f.config_path.write_text(f.config_text + "routes_typo: [\n")
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: ok() == 0, scaled(5)), f.stderr
    f.write_config(config({"a": a.addr}, [route("r", "/", "a"), route("r2", "/x", "a")]))
    assert wait_until(lambda: ok() == 1, scaled(5)), f.stderr


def test_operability_gauges(ficus, mock):
    a = mock("a", latency="300ms")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    t = threading.Thread(target=lambda: http_request(f.port, "GET", "/slow"))
    t.start()
    try:
        assert wait_until(lambda: metric_value(parse_metrics(f.metrics_text()),
                                               "ficus_requests_in_flight", route="r") == 1,
                          scaled(5))
    finally:
        t.join()
    s = parse_metrics(f.metrics_text())
    assert metric_value(s, "ficus_requests_in_flight", route="r") == 0
    assert metric_value(s, "ficus_target_ejected", target_group="a", target=a.addr) == 0
    assert metric_value(s, "ficus_panic_mode", target_group="a") == 0
    assert metric_value(s, "process_open_fds") > 0
    assert metric_value(s, "process_max_fds") > 0
    assert metric_value(s, "process_resident_memory_bytes") > 1e6
    assert abs(metric_value(s, "process_start_time_seconds") - time.time()) < 3600
