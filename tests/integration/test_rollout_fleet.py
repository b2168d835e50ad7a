"""Rollouts shared by a fleet (contract 10.2, `state: redis`): two ficus
instances with the same configuration and a real redis-server. One leader
(an expiring lease) judges the evidence of both instances summed over the
same window and moves the steps; the other applies them (same step, same
history with the leader's causes and reasons); a manual action on either
applies to both; a killed leader is replaced within its lease; with redis
gone both hold their step and a failing canary still rolls back on one
instance's own evidence."""

import http.client
import signal
import threading
import time

import pytest

from harness import config, http_request, metric_value, parse_metrics, route, scaled, wait_until
from harness.redis import Redis
from test_rollout import act, reload_with, rollout, weights

LEASE_S = 3  # ROLLOUT_FLEET_LEASE_MS


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


def fleet_config(v1, v2, redis, extra_routes=(), **over):
    b = {"canary": "v2", "steps": [20, 50], "interval": "1s", "min_requests": 5,
         "max_error_rate": "1%", "state": "redis"}
    b.update(over)
    r = route("search", "/", [{"target_group": "v1", "weight": 1},
                              {"target_group": "v2", "weight": 0, "fallback": "v1"}],
              rollout=b)
    return config({"v1": v1, "v2": v2}, [*extra_routes, r], server={"workers": 1},
                  redis={"address": redis.addr, "timeout": "1s"})


def send(f, n, path="/s"):
    """n requests to f, every one must be 200 (the fallback answers for a
    failing canary)."""
    conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=scaled(5))
    try:
        for i in range(n):
            r = http_request(f.port, "GET", f"{path}/{i}", conn=conn)
            assert r.status == 200, repr(r)
    finally:
        conn.close()


def history(f):
    return [(e["to"], e["step"], e["cause"], e["reason"]) for e in rollout(f)["history"]]


def wait_all(fs, pred, timeout, what):
    seen = {}

    def ok():
        for i, f in enumerate(fs):
            seen[i] = rollout(f)
        return all(pred(ro) for ro in seen.values())

    assert wait_until(ok, scaled(timeout)), f"{what} not reached: {seen}"
    return [seen[i] for i in range(len(fs))]


def leader_and_follower(a, b):
    ra, rb = wait_all([a, b], lambda ro: ro["fleet"]["connected"], 5, "both connected")
    assert wait_until(lambda: rollout(a)["fleet"]["leader"] != rollout(b)["fleet"]["leader"],
                      scaled(5)), (rollout(a)["fleet"], rollout(b)["fleet"])
    return (a, b) if rollout(a)["fleet"]["leader"] else (b, a)


def both_at_step_one(a, b):
    return wait_all([a, b], lambda ro: ro["state"] == "step" and ro["step"] == 1, 6,
                    "step 1 on both")


def fleet_of_two(ficus, mock, redis, **over):
    """Two instances sharing the search rollout, both at step 1: a, b, the
    leader and the follower."""
    v1, v2 = mock("v1"), mock("v2")
    a = ficus(fleet_config(v1.addr, v2.addr, redis, **over))
    b = ficus(fleet_config(v1.addr, v2.addr, redis, **over))
    leader, follower = leader_and_follower(a, b)
    both_at_step_one(a, b)
    return a, b, leader, follower


def test_the_leader_promotes_and_the_other_instance_applies_it(ficus, mock, redis):
    a, b, leader, follower = fleet_of_two(ficus, mock, redis)
    deadline = time.monotonic() + scaled(15)
    while time.monotonic() < deadline:
        send(a, 10)
        send(b, 10)
        ra, rb = rollout(a), rollout(b)
        if ra["state"] == rb["state"] == "promoted":
            break
    assert ra["state"] == rb["state"] == "promoted", (ra, rb)
    # The same history, with the leader's causes and reasons, on both.
    assert wait_until(lambda: history(a) == history(b), scaled(3)), (history(a), history(b))
    h = history(leader)
    assert [(to, cause) for to, _, cause, _ in h] == \
        [("step", "start"), ("step", "promoted"), ("promoted", "promoted")], h
    assert h[1][3].startswith("promoted: "), h
    assert weights(follower) == {"v1": 0, "v2": 10000}
    assert rollout(follower)["canary_percent"] == 100
    # Each instance logs and counts the transitions it applied.
    m = parse_metrics(follower.metrics_text())
    assert metric_value(m, "ficus_rollout_transitions_total", route="search", to="promoted",
                        reason="promoted") == 1
    assert "rollout step -> promoted (step 2, 100%), cause promoted" in follower.stderr
    assert not metric_value(m, "ficus_redis_errors_total")


def test_the_step_is_judged_on_both_instances_evidence(ficus, mock, redis):
    # min_requests 30 canary tries; each instance gets 40 requests, of which
    # 50 % (20) go to the canary: neither alone could judge the step.
    v1, v2 = mock("v1"), mock("v2")
    # The interval is long enough for both batches to land in one window.
    cfg = fleet_config(v1.addr, v2.addr, redis, steps=[50], interval="6s", min_requests=30)
    a = ficus(cfg)
    b = ficus(cfg)
    leader, follower = leader_and_follower(a, b)
    both_at_step_one(a, b)
    # Into the middle of the window: the judgement comes at the first tick
    # one interval after the step's start (or the next one), and the window
    # then ends there, in whole seconds.
    time.sleep(1.5)
    errors = []

    def batch(f):
        try:
            send(f, 40)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=batch, args=(f,)) for f in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    rl, rf = wait_all([leader, follower], lambda ro: ro["state"] == "promoted", 12, "promotion")
    last = rl["history"][-1]
    assert last["cause"] == "promoted", last
    # The leader judged the fleet-wide count of canary tries, which its
    # reason and its figures of the step carry; the follower's figures are
    # its own half.
    n = int(last["reason"].split("promoted: ")[1].split(" requests")[0])
    assert 30 <= n <= 40, last
    assert rl["steps"][0]["figures"]["requests"] == n, rl["steps"]
    assert rf["history"][-1]["reason"] == last["reason"]
    assert rf["steps"][0]["figures"]["requests"] <= 20, rf["steps"]


def test_a_manual_action_on_the_follower_applies_to_both(ficus, mock, redis):
    a, b, leader, follower = fleet_of_two(ficus, mock, redis, interval="30s")
    act(follower, "promote")
    ra, rb = wait_all([a, b], lambda ro: ro["step"] == 2, 5, "step 2 on both")
    assert ra["history"][-1]["cause"] == "manual", ra["history"]
    act(follower, "pause")
    ro = wait_all([leader], lambda ro: ro["state"] == "paused", 5, "paused on the leader")[0]
    assert ro["paused_from"] == "step" and ro["canary_percent"] == 50, ro
    assert ro["history"][-1]["reason"] == "manual pause", ro["history"]
    assert weights(leader) == {"v1": 5000, "v2": 5000}
    # And from the leader back to the follower.
    act(leader, "rollback")
    ro = wait_all([follower], lambda ro: ro["state"] == "rolled_back", 5, "rolled back")[0]
    assert weights(follower) == {"v1": 10000, "v2": 0}
    assert history(a) == history(b)


def test_the_leader_killed_the_other_takes_over_within_the_lease(ficus, mock, redis):
    a, b, leader, follower = fleet_of_two(ficus, mock, redis)
    leader.signal(signal.SIGKILL)
    leader.proc.wait(timeout=5)
    t0 = time.monotonic()
    assert wait_until(lambda: rollout(follower)["fleet"]["leader"], scaled(LEASE_S + 5)), \
        rollout(follower)["fleet"]
    assert time.monotonic() - t0 < scaled(LEASE_S + 3), "longer than the lease and a tick"
    # The new leader moves the steps on its own evidence now.
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline and rollout(follower)["state"] != "promoted":
        send(follower, 20)
    ro = rollout(follower)
    assert ro["state"] == "promoted", ro
    assert "this instance is now the fleet's leader" in follower.stderr


def test_redis_down_holds_the_step_and_still_rolls_back(ficus, mock, redis):
    v1, good, bad = mock("v1"), mock("v2"), mock("v2bad", status=503)
    # The same rollout (same block and canary name); b's canary fails.
    a = ficus(fleet_config(v1.addr, good.addr, redis, steps=[50, 100]))
    b = ficus(fleet_config(v1.addr, bad.addr, redis, steps=[50, 100]))
    both_at_step_one(a, b)
    redis.stop()
    wait_all([a, b], lambda ro: not ro["fleet"]["connected"], 6, "cut off")
    # Healthy evidence on a for several intervals: no promotion without redis.
    t_end = time.monotonic() + scaled(4)
    while time.monotonic() < t_end:
        send(a, 20)
    ra = rollout(a)
    assert ra["state"] == "step" and ra["step"] == 1, ra
    assert ra["current"]["requests"] >= 5, ra["current"]
    # A failing canary on b still rolls back there, on b's own evidence.
    deadline = time.monotonic() + scaled(8)
    while time.monotonic() < deadline and rollout(b)["state"] != "rolled_back":
        send(b, 20)
    rb = rollout(b)
    assert rb["state"] == "rolled_back", rb
    assert rb["history"][-1]["cause"] == "error_rate", rb["history"]
    assert rb["fleet"]["unpublished"], rb["fleet"]
    assert weights(b) == {"v1": 10000, "v2": 0}
    assert rollout(a)["state"] == "step"
    assert "cut off from redis" in a.stderr
    for f in (a, b):
        assert metric_value(parse_metrics(f.metrics_text()), "ficus_redis_errors_total") >= 1
    # Redis back: b's rollback is written and the fleet follows it.
    redis.start()
    ra = wait_all([a], lambda ro: ro["state"] == "rolled_back", 10, "rolled back on a")[0]
    assert ra["history"][-1]["cause"] == "error_rate", ra["history"]
    assert not rollout(b)["fleet"]["unpublished"]


def test_a_reload_that_keeps_the_rollout_keeps_its_place_in_the_fleet(ficus, mock, redis):
    v1, v2 = mock("v1"), mock("v2")
    a = ficus(fleet_config(v1.addr, v2.addr, redis, interval="30s"))
    b = ficus(fleet_config(v1.addr, v2.addr, redis, interval="30s"))
    leader, follower = leader_and_follower(a, b)
    both_at_step_one(a, b)
    act(follower, "promote")
    wait_all([a, b], lambda ro: ro["step"] == 2, 5, "step 2 on both")
    before = rollout(leader)
    other = route("other", "/other", [("v1", 1)])
    reload_with(leader, fleet_config(v1.addr, v2.addr, redis, interval="30s",
                                     extra_routes=[other]), 0)
    assert "route search: rollout kept across the reload (step, step 2, canary at 50%)" \
        in leader.stderr, leader.stderr
    # Still the leader, at the same transition, and still followed.
    time.sleep(scaled(LEASE_S / 2))
    ro = rollout(leader)
    assert ro["fleet"]["leader"] and ro["fleet"]["seq"] == before["fleet"]["seq"], ro["fleet"]
    # (each GET turns the times to wall-clock ones again: compare the rest)
    assert [dict(e, at=None) for e in ro["history"]] == \
        [dict(e, at=None) for e in before["history"]]
    act(follower, "pause")
    wait_all([leader], lambda ro: ro["state"] == "paused", 5, "the reloaded leader follows")
    # A changed block is another rollout: afresh, and the fleet's old one is left alone.
    reload_with(follower, fleet_config(v1.addr, v2.addr, redis, interval="20s"), 0)
    ro = wait_all([follower], lambda ro: ro["state"] == "step", 6, "the new block started")[0]
    assert [e["cause"] for e in ro["history"]] == ["start"], ro["history"]
    assert ro["fleet"]["leader"], ro["fleet"]  # alone with the new block
    assert rollout(leader)["state"] == "paused"
