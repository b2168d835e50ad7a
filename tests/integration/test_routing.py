"""Routing and traffic split (contract section 4): every match condition,
first match wins, path rewrites with the query kept, 404 for no route, the
smooth weighted split, sticky keys and set-based (in_set) routing with live
set reloads."""

import os
import time

from harness import config, http_request, route, scaled, wait_until

NAMES = ("a", "b", "c")


def start(ficus, echo_backend, routes, n=3, server=None, **top):
    echos = {name: echo_backend(name) for name in NAMES[:n]}
    f = ficus(config({name: e.addr for name, e in echos.items()}, routes, server=server, **top))
    return f, echos


def who(f, path, method="GET", headers=None):
    """(backend name, path seen upstream) for one request."""
    r = http_request(f.port, method, path, headers=headers)
    assert r.status == 200, f"{method} {path} {headers or ''}: {r!r}"
    return r.header("X-Echo-Name"), r.json()["path"]


def test_exact_path(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [route("exact", {"path": "/exact"}, "a"),
                                        route("rest", "/", "b")])
    assert who(f, "/exact") == ("a", "/exact")
    assert who(f, "/exact?q=1") == ("a", "/exact?q=1")
    assert who(f, "/exact/")[0] == "b"
    assert who(f, "/exactly")[0] == "b"
    assert who(f, "/")[0] == "b"


def test_path_prefix_is_a_plain_string_prefix(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [route("search", "/search", "a"), route("rest", "/", "b")])
    assert who(f, "/search")[0] == "a"
    assert who(f, "/search/items?q=1") == ("a", "/search/items?q=1")
    assert who(f, "/searchx")[0] == "a"
    assert who(f, "/sear")[0] == "b"
    assert who(f, "/other/search")[0] == "b"


def test_path_regex_captures_into_backend_path(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [
        route("users", {"path_regex": "/users/([0-9]+)/orders/([a-z]+)"},
              [{"target_group": "a", "weight": 1, "path": "/api/$1/$2"}]),
        route("rest", "/", "b")])
    assert who(f, "/users/42/orders/abc") == ("a", "/api/42/abc")
    assert who(f, "/users/42/orders/abc?x=1&y=2") == ("a", "/api/42/abc?x=1&y=2")
    # Anchored at the start only.
    assert who(f, "/users/7/orders/xyz/more") == ("a", "/api/7/xyz")
    assert who(f, "/v1/users/42/orders/abc")[0] == "b"
    assert who(f, "/users/x/orders/abc")[0] == "b"


def test_path_regex_ignores_query(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [
        route("end", {"path_regex": "/q/[a-z]+$"}, "a"), route("rest", "/", "b")], n=2)
    assert who(f, "/q/abc") == ("a", "/q/abc")
    assert who(f, "/q/abc?x=1") == ("a", "/q/abc?x=1")
    assert who(f, "/q/abc/d")[0] == "b"


def test_rewrite_prefix_keeps_rest_and_query(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [
        route("old", "/old", "a", rewrite_prefix="/new/v2"), route("rest", "/", "b")])
    assert who(f, "/old/items?q=1&r=2") == ("a", "/new/v2/items?q=1&r=2")
    assert who(f, "/old") == ("a", "/new/v2")
    assert who(f, "/oldx") == ("a", "/new/v2x")
    assert who(f, "/elsewhere?z=9") == ("b", "/elsewhere?z=9")


def test_methods_fall_through_to_next_route(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [
        route("get-only", {"path_prefix": "/m", "methods": ["GET"]}, "a"),
        route("any", "/m", "b")])
    assert who(f, "/m/1", "GET")[0] == "a"
    assert who(f, "/m/1", "POST")[0] == "b"
    assert who(f, "/m/1", "PUT")[0] == "b"
    assert who(f, "/m/1", "DELETE")[0] == "b"


def test_host_exact_and_wildcard_port_ignored(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [
        route("api", {"path_prefix": "/", "host": "api.example.com"}, "a"),
        route("org", {"path_prefix": "/", "host": "*.example.org"}, "b"),
        route("rest", "/", "c")])
    cases = {
        "api.example.com": "a",
        "api.example.com:8080": "a",
        "API.Example.COM": "a",
        "www.example.com": "c",
        "x.example.org": "b",
        "a.b.example.org:1234": "b",
        "X.EXAMPLE.ORG": "b",
        "example.org": "c",
        "badexample.org": "c",
        "other.test": "c",
    }
    got = {host: who(f, "/h", headers={"Host": host})[0] for host in cases}
    assert got == cases


def test_header_match_exact_value(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [
        route("debug", {"path_prefix": "/", "headers": {"x-debug": "1"}}, "a"),
        route("rest", "/", "b")])
    assert who(f, "/d", headers={"X-Debug": "1"})[0] == "a"
    assert who(f, "/d", headers={"x-DEBUG": "1"})[0] == "a"
    assert who(f, "/d", headers={"X-Debug": "0"})[0] == "b"
    assert who(f, "/d", headers={"X-Debug": "10"})[0] == "b"
    assert who(f, "/d")[0] == "b"


def test_first_match_wins_in_file_order(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [
        route("api", "/api", "a"),
        route("special", {"path": "/api/special"}, "b"),
        route("rest", "/", "c")])
    assert who(f, "/api/special")[0] == "a"
    assert who(f, "/api")[0] == "a"
    assert who(f, "/x")[0] == "c"


def test_first_match_wins_reversed_order(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [
        route("special", {"path": "/api/special"}, "b"),
        route("api", "/api", "a"),
        route("rest", "/", "c")])
    assert who(f, "/api/special")[0] == "b"
    assert who(f, "/api/other")[0] == "a"


def test_no_route_gives_404_json(ficus, echo_backend):
    f, echos = start(ficus, echo_backend, [route("only", {"path": "/only"}, "a")], n=1)
    r = http_request(f.port, "GET", "/nope?x=1")
    assert r.status == 404, repr(r)
    assert "json" in (r.header("Content-Type") or ""), repr(r)
    body = r.json()
    assert set(body) == {"error", "message", "request_id"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert body["request_id"] == r.header("X-Request-Id"), repr(r)
    assert echos["a"].count() == 0


# --- traffic split ------------------------------------------------------------------


def test_weighted_split_exact_and_interleaved(ficus, mock):
    v1, v2, v0 = mock("v1"), mock("v2"), mock("v0")
    f = ficus(config({"v1": v1.addr, "v2": v2.addr, "v0": v0.addr},
                     [route("split", "/", [("v1", 90), ("v2", 10), ("v0", 0)])],
                     server={"workers": 1}))
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=scaled(5))
    seq = []
    try:
        for i in range(100):
            r = http_request(f.port, "GET", f"/split/{i}", conn=conn)
            assert r.status == 200, repr(r)
            seq.append(r.header("X-Mock-Name"))
    finally:
        conn.close()
    assert seq.count("v1") == 90 and seq.count("v2") == 10, seq
    # Smooth WRR: every window of 10 consecutive requests has exactly one v2.
    windows = [seq[i : i + 10].count("v2") for i in range(len(seq) - 9)]
    assert set(windows) == {1}, f"not interleaved: {''.join('X' if s == 'v2' else '.' for s in seq)}"
    assert v1.stats()["total"] == 90
    assert v2.stats()["total"] == 10
    assert v0.stats()["total"] == 0


def test_weight_zero_gets_nothing(ficus, echo_backend):
    f, echos = start(ficus, echo_backend, [route("z", "/", [("a", 1), ("b", 0), ("c", 3)])])
    for i in range(40):
        r = http_request(f.port, "GET", f"/z/{i}")
        assert r.status == 200, repr(r)
    assert echos["b"].count() == 0
    assert echos["a"].count() + echos["c"].count() == 40
    assert echos["a"].count() > 0 and echos["c"].count() > 0


def test_sticky_header_keeps_user_on_one_backend(ficus, echo_backend):
    f, echos = start(ficus, echo_backend, [route("st", "/", [("a", 50), ("b", 50)],
                                                  sticky="header:X-User")], n=2)
    placement = {}
    for u in range(16):
        user = f"user-{u}"
        seen = {who(f, f"/s/{i}", headers={"X-User": user})[0] for i in range(20)}
        assert len(seen) == 1, f"{user} reached {seen}"
        placement[user] = seen.pop()
    assert set(placement.values()) == {"a", "b"}, placement


def test_sticky_cookie(ficus, echo_backend):
    f, _ = start(ficus, echo_backend, [route("st", "/", [("a", 50), ("b", 50)],
                                              sticky="cookie:uid")], n=2)
    placement = {}
    for u in range(16):
        seen = {who(f, f"/c/{i}", headers={"Cookie": f"theme=dark; uid=u{u}; lang=en"})[0]
                for i in range(10)}
        assert len(seen) == 1, f"uid=u{u} reached {seen}"
        placement[u] = seen.pop()
    assert set(placement.values()) == {"a", "b"}, placement


# --- sets (in_set) -------------------------------------------------------------------


def sets_config(echos, set_file, refresh):
    return config({"new": echos["a"].addr, "old": echos["b"].addr},
                  [route("migrated", {"path_regex": "/shops/(?<shop>[0-9]+)",
                                      "in_set": {"capture": "shop", "set": "migrated_shops"}},
                         "new"),
                   route("shops", "/shops", "old")],
                  sets={"migrated_shops": {"file": str(set_file), "refresh": refresh}})


def test_in_set_routes_members_and_follows_file_changes(ficus, echo_backend, tmp_path):
    echos = {"a": echo_backend("a"), "b": echo_backend("b")}
    set_file = tmp_path / "shops.txt"
    set_file.write_text("# migrated shops\n1\n  2  \n\n10\n")
    f = ficus(sets_config(echos, set_file, "100ms"))
    assert who(f, "/shops/1/items")[0] == "a"
    assert who(f, "/shops/2")[0] == "a"
    assert who(f, "/shops/10?x=1") == ("a", "/shops/10?x=1")
    assert who(f, "/shops/3")[0] == "b"
    assert who(f, "/shops/100")[0] == "b"
    assert who(f, "/shops/abc")[0] == "b"

    tmp = tmp_path / "shops.txt.tmp"
    tmp.write_text("1\n2\n10\n3\n")
    os.replace(tmp, set_file)
    moved = wait_until(lambda: who(f, "/shops/3")[0] == "a", scaled(6), interval=0.2)
    assert moved, "shop 3 added to the set file: still routed to the old group after 6s"
    assert who(f, "/shops/1")[0] == "a"
    assert who(f, "/shops/100")[0] == "b"


def test_unreadable_set_file_keeps_old_members(ficus, echo_backend, tmp_path):
    echos = {"a": echo_backend("a"), "b": echo_backend("b")}
    set_file = tmp_path / "shops.txt"
    set_file.write_text("1\n2\n")
    f = ficus(sets_config(echos, set_file, "100ms"))
    assert who(f, "/shops/1")[0] == "a"
    if os.geteuid() == 0:
        # root reads a chmod 000 file anyway: a directory in its place cannot be read.
        set_file.unlink()
        set_file.mkdir()
    else:
        set_file.chmod(0)
    from harness import metric_value, parse_metrics

    def failures():
        return metric_value(parse_metrics(f.metrics_text()), "ficus_set_reload_failures_total",
                            set="migrated_shops")

    counted = wait_until(lambda: (failures() or 0) >= 1, scaled(6), interval=0.2)
    assert counted, "no ficus_set_reload_failures_total{set=\"migrated_shops\"} after 6s"
    time.sleep(0.5)  # several more failed refreshes
    assert who(f, "/shops/1")[0] == "a"
    assert who(f, "/shops/2")[0] == "a"
    assert who(f, "/shops/3")[0] == "b"


def test_in_set_from_url(ficus, echo_backend, nginx):
    echos = {"a": echo_backend("a"), "b": echo_backend("b")}
    n = nginx("sets")
    path = n.add_file("shops.txt", b"# from a URL\n5\n6\n")
    cfg = config({"new": echos["a"].addr, "old": echos["b"].addr},
                 [route("migrated", {"path_regex": "/shops/(?<shop>[0-9]+)",
                                     "in_set": {"capture": "shop", "set": "remote"}}, "new"),
                  route("shops", "/shops", "old")],
                 sets={"remote": {"url": f"http://{n.addr}{path}", "refresh": "100ms"}})
    f = ficus(cfg)
    assert wait_until(lambda: who(f, "/shops/5")[0] == "a", scaled(3), interval=0.1), \
        "members served over HTTP never reached the router"
    assert who(f, "/shops/6")[0] == "a"
    assert who(f, "/shops/7")[0] == "b"
    n.add_file("shops.txt", b"5\n6\n7\n")
    assert wait_until(lambda: who(f, "/shops/7")[0] == "a", scaled(6), interval=0.2), \
        "shop 7 added at the URL: still routed to the old group after 6s"


def test_a_reload_keeps_a_set_it_cannot_read(ficus, echo_backend, tmp_path):
    # A reload while the set's source is unreadable: the set keeps the members
    # the previous configuration had instead of starting empty.
    import signal
    from harness import metric_value, parse_metrics
    echos = {"a": echo_backend("a"), "b": echo_backend("b")}
    set_file = tmp_path / "shops.txt"
    set_file.write_text("1\n2\n")
    f = ficus(sets_config(echos, set_file, "1h"))
    assert who(f, "/shops/1")[0] == "a"
    set_file.unlink()
    set_file.mkdir()  # unreadable as a file, also for root
    f.write_config(sets_config(echos, set_file, "1h"))
    f.signal(signal.SIGHUP)

    def reloaded():
        s = parse_metrics(f.metrics_text())
        return (metric_value(s, "ficus_config_reloads_total", result="success") or 0) >= 1

    assert wait_until(reloaded, scaled(5)), f.stderr
    # stderr is read by a thread: the line may trail the metric.
    assert wait_until(lambda: "keeping the 2 members it had before the reload" in f.stderr,
                      scaled(5)), f.stderr
    assert who(f, "/shops/1")[0] == "a"
    assert who(f, "/shops/2")[0] == "a"
    assert who(f, "/shops/3")[0] == "b"


def test_rewritten_target_too_long_is_414(ficus, mock):
    """A backend path template that makes the upstream target longer than
    ficus can build is answered 414 uri_too_long (JSON and access log), and
    nothing reaches the backend."""
    m = mock("m")
    f = ficus(config({"m": m.addr},
                     [route("long", {"path_regex": "/x/(.*)"},
                            [{"target_group": "m", "weight": 1, "path": "/" + "$1" * 13}])]))
    r = http_request(f.port, "GET", "/x/" + "a" * 15000)
    assert r.status == 414, repr(r)
    assert r.json()["error"] == "uri_too_long", r.json()
    lines = f.wait_access_log(1)
    assert lines and lines[-1]["error"] == "uri_too_long" and lines[-1]["status"] == 414, lines
    assert m.stats()["total"] == 0
    assert http_request(f.port, "GET", "/x/ok").status == 200
