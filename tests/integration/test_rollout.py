"""Route rollouts (contract 10.2): the steps applied to the route's weights
and to real traffic, the admin actions through every state, a rollout kept by
a reload that does not change it and restarted by one that does, PUT weights
refused while a rollout owns them, the metrics, and the automatic moves.

The automatic moves: promotion after an interval with enough canary
tries, rollback on a failing canary that the fallback hides from every
client, rollback on a latency-ratio breach, and the shadow comparisons that
start a rollout or roll it back (max_mismatch_rate)."""

import http.client
import json
import time

from harness import config, http_request, metric_value, parse_metrics, route, scaled, wait_until


def admin(f, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=scaled(5))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        text = r.read().decode()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, text
    finally:
        c.close()


def rollout(f, name="search"):
    st, _, body = admin(f, "GET", f"/routes/{name}/rollout")
    assert st == 200, (st, body)
    return json.loads(body)


def act(f, action, name="search", expect=200):
    st, _, body = admin(f, "POST", f"/routes/{name}/rollout/{action}", body=b"")
    assert st == expect, (action, st, body)
    return json.loads(body)


def weights(f, name="search"):
    st, _, body = admin(f, "GET", f"/routes/{name}/weights")
    assert st == 200, (st, body)
    return json.loads(body)["weights"]


def block(**over):
    b = {"canary": "v2", "steps": [1, 25, 50], "interval": "1s", "min_requests": 5,
         "max_error_rate": "1%"}
    b.update(over)
    return b


def search_config(v1, v2, rollout_block=None, extra_routes=(), v2_fallback=True, **top):
    v2_backend = {"target_group": "v2", "weight": 0}
    if v2_fallback:
        v2_backend["fallback"] = "v1"
    r = route("search", "/", [{"target_group": "v1", "weight": 1}, v2_backend],
              rollout=rollout_block or block())
    return config({"v1": v1, "v2": v2}, [*extra_routes, r], server={"workers": 1}, **top)


def wait_state(f, state, timeout=5.0, name="search"):
    seen = {}

    def reached():
        seen.update(rollout(f, name))
        return seen["state"] == state

    assert wait_until(reached, scaled(timeout)), f"not {state} after {timeout}s: {seen}"
    return seen


def shares(f, n, path="/s"):
    """How many of n sequential requests each backend answered (all must be 200)."""
    conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=scaled(5))
    seen = {}
    try:
        for i in range(n):
            r = http_request(f.port, "GET", f"{path}/{i}", conn=conn)
            assert r.status == 200, repr(r)
            name = r.header("X-Mock-Name")
            seen[name] = seen.get(name, 0) + 1
    finally:
        conn.close()
    return seen


def paused_at_step_two(ficus, mock):
    """ficus with the search rollout promoted to step 2 (25 %) and paused; the
    two mocks."""
    v1, v2 = mock("v1"), mock("v2")
    f = ficus(search_config(v1.addr, v2.addr))
    wait_state(f, "step")
    act(f, "promote")
    act(f, "pause")
    return f, v1, v2


def transitions(f, to, reason):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_rollout_transitions_total",
                        route="search", to=to, reason=reason) or 0


# ------------------------------------------------ no evidence needed


def test_starts_at_step_one_and_the_canary_never_gets_its_file_weight(ficus, mock):
    v1, v2 = mock("v1"), mock("v2")
    # The file gives v2 weight 50: the rollout owns it from the first request on.
    r = route("search", "/", [("v1", 50), ("v2", 50)], rollout=block(steps=[25, 50]))
    f = ficus(config({"v1": v1.addr, "v2": v2.addr}, [r], server={"workers": 1}))
    assert wait_until(lambda: "rollout of v2 starts (pending, canary weight 0)" in f.stderr,
                      scaled(5)), f.stderr
    ro = wait_state(f, "step")
    assert ro["step"] == 1 and ro["canary_percent"] == 25, ro
    assert weights(f) == {"v1": 7500, "v2": 2500}
    assert shares(f, 100) == {"v1": 75, "v2": 25}
    assert "rollout pending -> step (step 1, 25%), cause start" in f.stderr, f.stderr
    h = ro["history"]
    assert [(e["from"], e["to"], e["cause"]) for e in h] == [("pending", "step", "start")], h
    assert ro["config"]["canary"] == "v2" and ro["config"]["steps"] == [25, 50], ro["config"]


def test_admin_actions_walk_every_state_and_move_real_traffic(ficus, mock):
    v1, v2 = mock("v1"), mock("v2")
    f = ficus(search_config(v1.addr, v2.addr))
    wait_state(f, "step")
    assert weights(f) == {"v1": 9900, "v2": 100}
    # Promote: step 2 at once, weights applied without waiting for a tick.
    ro = act(f, "promote")
    assert (ro["state"], ro["step"], ro["canary_percent"]) == ("step", 2, 25), ro
    assert ro["weights"] == {"v1": 7500, "v2": 2500}
    assert shares(f, 100) == {"v1": 75, "v2": 25}
    # Pause holds the weights; a second pause and a resume-less promote are fine/409.
    ro = act(f, "pause")
    assert ro["state"] == "paused" and ro["paused_from"] == "step", ro
    act(f, "pause", expect=409)
    assert weights(f) == {"v1": 7500, "v2": 2500}
    ro = act(f, "resume")
    assert ro["state"] == "step" and ro["step"] == 2, ro
    act(f, "resume", expect=409)
    ro = act(f, "promote")
    assert ro["canary_percent"] == 50 and shares(f, 100) == {"v1": 50, "v2": 50}
    ro = act(f, "promote")
    assert ro["state"] == "promoted" and ro["canary_percent"] == 100, ro
    assert weights(f) == {"v1": 0, "v2": 10000}
    assert shares(f, 20) == {"v2": 20}
    st, _, body = admin(f, "POST", "/routes/search/rollout/promote", body=b"")
    assert st == 409 and "promote makes no sense while the rollout is promoted" in body, body
    # Rollback: the canary gets nothing at once.
    ro = act(f, "rollback")
    assert ro["state"] == "rolled_back" and ro["canary_percent"] == 0, ro
    assert shares(f, 20) == {"v1": 20}
    act(f, "rollback", expect=409)
    act(f, "pause", expect=409)
    # Restart: pending, then step 1 at the next tick.
    ro = act(f, "restart")
    assert ro["state"] == "pending" and weights(f) == {"v1": 10000, "v2": 0}, ro
    ro = wait_state(f, "step")
    assert ro["canary_percent"] == 1 and ro["steps"][1]["percent"] == 25, ro
    causes = [(e["to"], e["cause"]) for e in ro["history"]]
    assert causes[-2:] == [("pending", "manual"), ("step", "start")], causes
    assert all(e["reason"] for e in ro["history"]) and all(e["at"].endswith("Z")
                                                          for e in ro["history"])
    # Each transition was logged with its route, cause and reason.
    assert "route search: rollout step -> promoted (step 3, 100%), cause manual: manual promote" \
        in f.stderr, f.stderr
    assert "route search: rollout promoted -> rolled_back" in f.stderr


def test_metrics_names_and_values(ficus, mock):
    f, _, _ = paused_at_step_two(ficus, mock)
    text = f.metrics_text()
    s = parse_metrics(text)
    assert metric_value(s, "ficus_rollout_step", route="search") == 25
    for state in ("pending", "step", "promoted", "rolled_back", "paused"):
        want = 1 if state == "paused" else 0
        assert metric_value(s, "ficus_rollout_state", route="search", state=state) == want, state
    assert metric_value(s, "ficus_rollout_transitions_total", route="search", to="step",
                        reason="start") == 1
    assert metric_value(s, "ficus_rollout_transitions_total", route="search", to="step",
                        reason="manual") == 1
    assert metric_value(s, "ficus_rollout_transitions_total", route="search", to="paused",
                        reason="manual") == 1
    for family, kind in (("ficus_rollout_step", "gauge"), ("ficus_rollout_state", "gauge"),
                         ("ficus_rollout_transitions_total", "counter")):
        assert text.count(f"# TYPE {family} {kind}\n") == 1, family
    assert metric_value(s, "ficus_backend_weight", route="search", target_group="v2") == 2500


def test_put_weights_is_409_and_other_routes_keep_theirs(ficus, mock):
    v1, v2 = mock("v1"), mock("v2")
    plain = route("plain", "/plain", [("v1", 1), ("v2", 1)])
    f = ficus(search_config(v1.addr, v2.addr, extra_routes=[plain]))
    wait_state(f, "step")
    st, _, body = admin(f, "PUT", "/routes/search/weights", body=b'{"v2":50}')
    assert st == 409, (st, body)
    assert json.loads(body)["error"] == "conflict" and "rollout" in json.loads(body)["message"]
    assert weights(f) == {"v1": 9900, "v2": 100}
    st, _, body = admin(f, "PUT", "/routes/plain/weights", body=b'{"v2":3}')
    assert st == 200 and json.loads(body)["weights"] == {"v1": 1, "v2": 3}, body
    # A route without a rollout, an unknown route, an unknown action, wrong methods.
    for method, path, status, allow in (
            ("GET", "/routes/plain/rollout", 404, None),
            ("POST", "/routes/plain/rollout/pause", 404, None),
            ("GET", "/routes/nope/rollout", 404, None),
            ("POST", "/routes/search/rollout/explode", 404, None),
            ("DELETE", "/routes/search/rollout", 405, "GET"),
            ("GET", "/routes/search/rollout/pause", 405, "POST")):
        st, h, body = admin(f, method, path, body=b"" if method != "GET" else None)
        assert st == status, (method, path, st, body)
        assert h.get("allow") == allow, (method, path, h)
    assert rollout(f)["state"] == "step"


def test_admin_token_applies(ficus, mock, monkeypatch):
    monkeypatch.setenv("FICUS_TEST_ROLLOUT_TOKEN", "r0llout-token")
    v1, v2 = mock("v1"), mock("v2")
    f = ficus(search_config(v1.addr, v2.addr, admin={"token_env": "FICUS_TEST_ROLLOUT_TOKEN"}))
    auth = {"Authorization": "Bearer r0llout-token"}
    for method, path in (("GET", "/routes/search/rollout"),
                         ("POST", "/routes/search/rollout/pause")):
        st, _, _ = admin(f, method, path, body=b"" if method == "POST" else None)
        assert st == 401, (method, path)
    st, _, body = admin(f, "POST", "/routes/search/rollout/pause", body=b"", headers=auth)
    assert st == 200 and json.loads(body)["state"] == "paused", body


def reloads(f):
    return metric_value(parse_metrics(f.metrics_text()), "ficus_config_reloads_total",
                        result="success") or 0


def reload_with(f, cfg, before):
    f.write_config(cfg)
    assert wait_until(lambda: reloads(f) > before, scaled(5)), f.stderr[-2000:]
    return reloads(f)


def test_a_reload_keeps_an_unchanged_rollout_and_restarts_a_changed_one(ficus, mock):
    f, v1, v2 = paused_at_step_two(ficus, mock)
    # Another route appears; the rollout's block and backends stay as they were.
    other = route("other", "/other", [("v1", 1)])
    n = reload_with(f, search_config(v1.addr, v2.addr, extra_routes=[other]), 0)
    ro = rollout(f)
    assert (ro["state"], ro["step"], ro["canary_percent"]) == ("paused", 2, 25), ro
    assert weights(f) == {"v1": 7500, "v2": 2500}
    assert shares(f, 100) == {"v1": 75, "v2": 25}
    assert "route search: rollout kept across the reload (paused, step 2, canary at 25%)" \
        in f.stderr, f.stderr
    assert len(ro["history"]) == 3, ro["history"]
    assert transitions(f, "paused", "manual") == 1
    # A changed block: afresh, and it says why.
    reload_with(f, search_config(v1.addr, v2.addr, rollout_block=block(interval="2s"),
                                 extra_routes=[other]), n)
    assert "route search: rollout starts afresh (pending, canary weight 0): its rollout block " \
           "changed" in f.stderr, f.stderr
    ro = wait_state(f, "step")
    assert ro["step"] == 1 and ro["canary_percent"] == 1, ro
    assert [e["cause"] for e in ro["history"]] == ["start"], ro["history"]
    assert ro["config"]["interval"] == "2s", ro["config"]
    # The counters never went back: the first start, and this one.
    assert transitions(f, "step", "start") == 2
    assert transitions(f, "paused", "manual") == 1


def test_a_reload_that_changes_the_backends_restarts_the_rollout(ficus, mock):
    v1, v2 = mock("v1"), mock("v2")
    f = ficus(search_config(v1.addr, v2.addr))
    wait_state(f, "step")
    act(f, "promote")
    reload_with(f, search_config(v1.addr, v2.addr, v2_fallback=False), 0)
    assert "route search: rollout starts afresh (pending, canary weight 0): its backends changed" \
        in f.stderr, f.stderr
    ro = wait_state(f, "step")
    assert ro["canary_percent"] == 1, ro


# ------------------------------------------ needs the request path's recording


def drive(f, until, timeout, path="/s"):
    """Sends requests (all must be 200) until until() holds or timeout; the
    rollout's state at the end."""
    conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=scaled(5))
    deadline = time.monotonic() + scaled(timeout)
    i = 0
    try:
        while time.monotonic() < deadline:
            for _ in range(20):
                r = http_request(f.port, "GET", f"{path}/{i}", conn=conn)
                assert r.status == 200, repr(r)
                i += 1
            ro = rollout(f)
            if until(ro):
                return ro
    finally:
        conn.close()
    return rollout(f)


def test_promoted_after_each_interval_with_enough_canary_requests(ficus, mock):
    v1, v2 = mock("v1"), mock("v2")
    f = ficus(search_config(v1.addr, v2.addr, rollout_block=block(steps=[20, 50])))
    wait_state(f, "step")
    ro = drive(f, lambda ro: ro["state"] == "promoted", 12)
    assert ro["state"] == "promoted", ro
    causes = [(e["to"], e["cause"]) for e in ro["history"]]
    assert causes == [("step", "start"), ("step", "promoted"), ("promoted", "promoted")], causes
    assert ro["steps"][0]["figures"]["requests"] >= 5, ro["steps"]
    assert ro["steps"][0]["figures"]["errors"] == 0, ro["steps"]
    assert weights(f) == {"v1": 0, "v2": 10000}
    assert transitions(f, "promoted", "promoted") == 1


def test_failing_canary_rolled_back_while_every_client_request_succeeds(ficus, mock):
    v1, v2 = mock("v1"), mock("v2", status=503)
    f = ficus(search_config(v1.addr, v2.addr, rollout_block=block(steps=[50])))
    wait_state(f, "step")
    # Every request is a 200 (drive asserts it): the fallback answers for v2.
    ro = drive(f, lambda ro: ro["state"] == "rolled_back", 8)
    assert ro["state"] == "rolled_back", ro
    last = ro["history"][-1]
    assert last["cause"] == "error_rate" and "error_rate" in last["reason"], last
    fig = ro["steps"][0]["figures"]
    assert fig["errors"] >= 5 and fig["masked"] == fig["errors"], fig
    assert weights(f) == {"v1": 10000, "v2": 0}
    assert transitions(f, "rolled_back", "error_rate") == 1
    assert "rollout step -> rolled_back (step 1, 0%), cause error_rate" in f.stderr
    masked = metric_value(parse_metrics(f.metrics_text()), "ficus_canary_masked_failures_total",
                          route="search", target_group="v2")
    assert masked and masked >= 5, masked


def test_latency_ratio_breach_rolls_back(ficus, mock):
    v1, v2 = mock("v1"), mock("v2", latency="60ms")
    # A step longer than the second it takes to see the breach: judged before
    # the interval could end in a promotion (the primary's p99 must be known).
    f = ficus(search_config(v1.addr, v2.addr,
                            rollout_block=block(steps=[50], max_latency_ratio=1.5,
                                                interval="4s")))
    wait_state(f, "step")
    ro = drive(f, lambda ro: ro["state"] == "rolled_back", 10)
    assert ro["state"] == "rolled_back", ro
    last = ro["history"][-1]
    assert last["cause"] == "latency_ratio" and "latency_ratio" in last["reason"], last
    assert weights(f)["v2"] == 0


def mismatch_config(v1, v2, ignore):
    r = route("search", "/", [{"target_group": "v1", "weight": 1},
                              {"target_group": "v2", "weight": 0, "fallback": "v1"}],
              shadow={"target_group": "v2", "percent": 100,
                      "compare": {"ignore": ignore}},
              rollout=block(max_mismatch_rate="10%"))
    return config({"v1": v1, "v2": v2}, [r], server={"workers": 1})


def test_shadow_evidence_starts_the_rollout_or_rolls_it_back(ficus, echo_backend):
    v1, v2 = echo_backend("v1"), echo_backend("v2")
    # The echo's answers differ in name, peer port and the copy's shadow header.
    f = ficus(mismatch_config(v1.addr, v2.addr, ["/name", "/peer_port", "/headers"]))
    assert rollout(f)["state"] == "pending"
    ro = drive(f, lambda x: x["state"] == "step", 10)
    assert [(e["to"], e["cause"]) for e in ro["history"]][:1] == [("step", "start")], ro
    g = echo_backend("v1b"), echo_backend("v2b")
    f2 = ficus(mismatch_config(g[0].addr, g[1].addr, ["/peer_port", "/headers"]))
    ro = drive(f2, lambda x: x["state"] == "rolled_back", 10)
    last = ro["history"][-1]
    assert last["cause"] == "mismatch_rate", last
    # Every client request was answered by the old system meanwhile.
    assert weights(f2)["v2"] == 0
