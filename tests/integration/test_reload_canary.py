"""Reversible reload (contract 10.5): with a `reload` block, a valid new
configuration first serves canary_percent of new requests (by a hash of the
request id) beside the old one for `bake`; it is promoted, or reverted on an
error-rate or latency breach with the figures logged and counted in
ficus_config_reloads_total{result="reverted"}, and the same content is not
applied again until it changes. The access log's `config` field and GET
/config/history show what served what."""

import json
import signal

import pytest

from harness import (config, http_request, metric_value, parse_metrics, route, run_cli, scaled,
                     to_yaml, wait_until)


def reloads(f, result):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_config_reloads_total",
                        result=result) or 0


def history(f):
    status, _, body = f.admin_get("/config/history")
    assert status == 200
    return json.loads(body)


def with_reload(groups, routes, **rule):
    rl = {"canary_percent": 50, "bake": "2s", "min_requests": 10}
    rl.update(rule)
    return config(groups, routes, server={"workers": 2}, reload=rl,
                  access_log={"path": "stdout"})


def ask(f, n, prefix="r"):
    """n requests with distinct ids: the X-Echo-Name (or status) of each."""
    out = []
    for i in range(n):
        r = http_request(f.port, "GET", "/x", headers={"X-Request-Id": f"{prefix}-{i}"})
        out.append(r.header("X-Echo-Name") if r.status == 200 else r.status)
    return out


def test_a_failing_reload_is_reverted_while_clients_keep_answers(ficus, echo_backend):
    good = echo_backend("good")
    groups = {"good": good.addr, "dead": "127.0.0.1:1"}
    f = ficus(with_reload(groups, [route("api", "/", "good")], canary_percent=25))
    assert ask(f, 3) == ["good"] * 3
    bad = with_reload(groups, [route("api", "/", "dead")], canary_percent=25)
    f.write_config(bad)
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: history(f)["trial"] is not None, scaled(5)), f.stderr
    seen = []
    # Until the revert: about a quarter of the new requests (canary_percent)
    # meet the broken configuration; the others are answered by the old one.
    assert wait_until(lambda: (seen.extend(ask(f, 10, f"t{len(seen)}")) or
                               reloads(f, "reverted") == 1 or len(seen) > 2000),
                      scaled(10)), f.stderr
    assert reloads(f, "reverted") == 1, f.stderr
    assert set(seen) <= {"good", 502}
    failed = seen.count(502) / len(seen)
    assert 0 < failed < 0.45, (failed, len(seen))
    # After it: everything on the old configuration again.
    assert ask(f, 20, "after") == ["good"] * 20
    h = history(f)
    assert h["trial"] is None and h["serving"] == 1
    last = h["loads"][0]
    assert last["result"] == "reverted" and last["number"] == 2
    assert "5xx rate" in last["reason"]
    assert last["figures"]["new"]["error_rate"] > 0.5
    assert last["figures"]["old"]["error_rate"] == 0
    assert last["figures"]["new"]["requests"] >= 10
    assert h["loads"][1]["result"] == "initial"
    # The log line carries both sides' figures.
    line = next(x for x in f.stderr.splitlines() if "configuration #2 reverted" in x)
    assert "5xx rate" in line and "#2: " in line and "#1: " in line and "p99" in line, line
    m = parse_metrics(f.metrics_text())
    assert metric_value(m, "ficus_config_canary") == 0
    # The file on disk does not serve: the alert on a refused reload fires.
    assert metric_value(m, "ficus_config_last_reload_successful") == 0
    assert reloads(f, "success") == 0
    # The access log says which configuration served each request.
    log = f.wait_access_log(1)
    configs = {e["config"] for e in log}
    assert configs == {"#1", "#2"}, configs
    assert all(e["status"] == 502 for e in log if e["config"] == "#2")

    # The same content is not applied again: a SIGHUP is skipped...
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: history(f)["loads"][0]["result"] == "skipped", scaled(5))
    assert history(f)["trial"] is None
    assert ask(f, 10, "again") == ["good"] * 10
    # ...nor on a file event that leaves the content as it was...
    f.write_config(bad)
    assert wait_until(lambda: "reverted last: skipped" in f.stderr, scaled(5)), f.stderr
    assert history(f)["trial"] is None
    # ...until the file changes: then it goes on trial again.
    f.write_config(with_reload(groups, [route("api", "/", "good", timeout="3s")],
                               canary_percent=25))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: history(f)["loads"][0]["result"] == "trial", scaled(5)), f.stderr
    # Once another content served, the reverted one is a new attempt again
    # (as a new revision is for Flagger): on trial, not skipped.
    assert wait_until(lambda: history(f)["loads"][0]["result"] == "promoted", scaled(10)), \
        f.stderr
    assert metric_value(parse_metrics(f.metrics_text()),
                        "ficus_config_last_reload_successful") == 1
    f.write_config(bad)
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: history(f)["trial"] is not None, scaled(5)), f.stderr
    assert history(f)["loads"][0]["result"] == "trial"


def test_a_good_reload_is_promoted_after_the_bake(ficus, echo_backend):
    a, b = echo_backend("a"), echo_backend("b")
    f = ficus(with_reload({"a": a.addr, "b": b.addr}, [route("api", "/", "a")],
                          max_latency_increase="50x"))
    f.write_config(with_reload({"a": a.addr, "b": b.addr}, [route("api", "/", "b")],
                               max_latency_increase="50x"))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: history(f)["trial"] is not None, scaled(5)), f.stderr
    assert metric_value(parse_metrics(f.metrics_text()), "ficus_config_canary") == 1
    during = []
    # Requests during the bake: both configurations answer.
    assert wait_until(lambda: (during.extend(ask(f, 10, f"d{len(during)}")) or
                               reloads(f, "success") == 1), scaled(15)), f.stderr
    assert {"a", "b"} <= set(during)
    assert ask(f, 20, "after") == ["b"] * 20
    cfg = json.loads(f.admin_get("/config")[2])
    assert cfg["config"] == "#2" and cfg["trial"] is None
    assert cfg["routes"][0]["backends"][0]["target_group"] == "b", cfg["routes"]
    h = history(f)
    assert h["serving"] == 2 and h["trial"] is None
    assert h["loads"][0]["result"] == "promoted"
    assert "within limits" in h["loads"][0]["reason"]
    log = f.wait_access_log(len(during) + 20)
    # Each line names the configuration that served it: #1 routes to a,
    # #2 to b; after the promotion, #2 only.
    served = [e for e in log if e["upstream_path"]]
    assert {e["config"] for e in served} == {"#1", "#2"}
    assert all((e["config"] == "#2") == (e["target_group"] == "b") for e in served), served
    assert all(e["config"] == "#2" for e in served if e["request_id"].startswith("after-"))


def test_requests_are_assigned_by_request_id(ficus, echo_backend):
    a, b = echo_backend("a"), echo_backend("b")
    f = ficus(with_reload({"a": a.addr, "b": b.addr}, [route("api", "/", "a")],
                          bake="1h", canary_percent=30))
    f.write_config(with_reload({"a": a.addr, "b": b.addr}, [route("api", "/", "b")],
                               bake="1h", canary_percent=30))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: history(f)["trial"] is not None, scaled(5)), f.stderr
    # GET /config: the serving configuration, and which one is on trial.
    cfg = json.loads(f.admin_get("/config")[2])
    assert cfg["config"] == "#1" and cfg["routes"][0]["backends"][0]["target_group"] == "a"
    trial = cfg["trial"]
    assert trial["config"] == "#2" and trial["percent"] == 30, trial
    assert 0 < trial["bake_left_ms"] <= 3600 * 1000
    assert trial["configuration"]["routes"][0]["backends"][0]["target_group"] == "b"
    first = ask(f, 60, "id")
    # The same ids meet the same configuration again, on any worker.
    assert ask(f, 60, "id") == first
    share = first.count("b") / len(first)
    assert 0.1 < share < 0.55, first
    # An invalid file during the trial fails as any would; the trial goes on.
    f.write_config(with_reload({"a": a.addr, "b": b.addr}, [route("api", "/", "nope")],
                               bake="1h", canary_percent=30))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(f, "failure") == 1, scaled(5)), f.stderr
    h = history(f)
    assert h["trial"] == {"number": 2, "percent": 30}
    assert [e["result"] for e in h["loads"][:2]] == ["failure", "trial"]
    assert ask(f, 60, "id") == first
    # A newer file supersedes the trial: it goes on trial against #1.
    f.write_config(with_reload({"a": a.addr, "b": b.addr}, [route("api", "/", "a")],
                               bake="1h", canary_percent=30, min_requests=5))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: history(f)["loads"][0]["number"] == 3, scaled(5)), f.stderr
    h = history(f)
    assert h["trial"] == {"number": 3, "percent": 30}
    assert h["loads"][1]["result"] == "failure" and h["loads"][2]["result"] == "superseded"
    assert json.loads(f.admin_get("/config")[2])["trial"]["config"] == "#3"


def test_without_a_reload_block_a_reload_applies_at_once(ficus, echo_backend):
    a, b = echo_backend("a"), echo_backend("b")
    f = ficus(config({"a": a.addr, "b": b.addr}, [route("api", "/", "a")]))
    f.write_config(config({"a": a.addr, "b": b.addr}, [route("api", "/", "b")]))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: reloads(f, "success") == 1, scaled(5)), f.stderr
    assert ask(f, 5) == ["b"] * 5
    cfg = json.loads(f.admin_get("/config")[2])
    assert cfg["config"] == "#2" and cfg["trial"] is None and "reload" not in cfg
    h = history(f)
    assert [e["result"] for e in h["loads"]] == ["success", "initial"]
    assert h["loads"][0]["number"] == 2 and len(h["loads"][0]["hash"]) == 16


def test_history_keeps_the_last_twenty_loads(ficus, echo_backend):
    a = echo_backend("a")
    f = ficus(config({"a": a.addr}, [route("api", "/", "a")]))
    for i in range(22):
        f.write_config(config({"a": a.addr}, [route("api", "/", "a", timeout=f"{i + 1}s")]))
        f.signal(signal.SIGHUP)
        assert wait_until(lambda: reloads(f, "success") == i + 1, scaled(5)), f.stderr
    h = history(f)
    assert len(h["loads"]) == 20
    assert h["loads"][0]["number"] == 23 and h["loads"][0]["load"] == 23
    assert h["loads"][-1]["load"] == 4


def test_history_is_an_admin_endpoint_like_the_others(ficus, echo_backend, monkeypatch):
    monkeypatch.setenv("FICUS_TEST_ADMIN_TOKEN", "s3cret-token")
    a = echo_backend("a")
    f = ficus(config({"a": a.addr}, [route("api", "/", "a")],
                     admin={"token_env": "FICUS_TEST_ADMIN_TOKEN"}))
    auth = {"Authorization": "Bearer s3cret-token"}
    assert http_request(f.admin_port, "GET", "/config/history").status == 401
    r = http_request(f.admin_port, "GET", "/config/history", headers=auth)
    assert r.status == 200, r.body
    h = json.loads(r.body)
    assert h["serving"] == 1 and h["trial"] is None
    [e] = h["loads"]
    assert set(e) == {"load", "number", "time", "hash", "result", "reason"}, e
    assert e["result"] == "initial" and e["number"] == 1 and e["load"] == 1
    assert len(e["hash"]) == 16 and e["time"].endswith("Z")
    r = http_request(f.admin_port, "POST", "/config/history", headers=auth)
    assert r.status == 405 and r.header("Allow") == "GET"
    r = http_request(f.admin_port, "GET", "/", headers=auth)
    assert r.status == 200 and b"GET /config/history" in r.body, r.body


def test_history_shows_a_failure_cut_inside_a_character(ficus, echo_backend):
    """A failure's reason is its first error, cut to fit: cut inside a
    character it is still shown (with U+FFFD), not left out."""
    a = echo_backend("a")
    f = ficus(config({"a": a.addr}, [route("api", "/", "a")]))
    for k in range(3):  # one of three offsets cuts inside the 3-byte euro sign
        f.write_config(config({"a": a.addr}, [route("api", "/", "a")],
                              **{"x" * k + "\u20ac" * 120: 1}))
        f.signal(signal.SIGHUP)
        assert wait_until(lambda: reloads(f, "failure") == k + 1, scaled(5)), f.stderr
    loads = history(f)["loads"]
    assert [e["result"] for e in loads] == ["failure"] * 3 + ["initial"], loads
    assert all("unknown key" in e["reason"] or "\u20ac" in e["reason"] for e in loads[:3])


@pytest.mark.parametrize("key,value,want", [
    ("max_error_rate_increase", "0.5x", "expected a factor from 1x"),
    ("max_latency_increase", "fast", "expected a factor"),
    ("canary_percent", 0, "canary_percent"),
    ("canary_percent", 100, "1 to 99"),
    ("bake", "10ms", "bake"),
])
def test_bad_reload_blocks_are_refused(tmp_path, key, value, want):
    path = tmp_path / "ficus.yaml"
    path.write_text(to_yaml(config({"a": "127.0.0.1:1"}, [route("api", "/", "a")],
                                   reload={key: value})))
    p = run_cli(["check", "-c", str(path)])
    assert p.returncode == 1 and f"reload.{key}" in p.stderr and want in p.stderr, p.stderr
