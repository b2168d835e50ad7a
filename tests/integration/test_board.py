"""The migration board (contract 10.6): GET /migration per route — the share
of each target group with its role, errors, fallbacks, masked canary
failures, p50/p99, 15 minutes of 10-second buckets, the shadow match rate
and worst fields, the rollout's state — and a verdict; GET /ui/, one
self-contained page that draws it, checked in a real headless browser."""

import json
import os
import re
import shutil
import struct
import subprocess

import pytest

from harness import config, http_request, route, scaled, wait_until


def board_config(old, new, **top):
    """orders: half to the monolith, half to orders-v2 backed by it; legacy:
    the monolith alone."""
    return config(
        {"monolith": old, "orders-v2": new},
        [route("orders", "/orders", [{"target_group": "monolith", "weight": 1},
                                     {"target_group": "orders-v2", "weight": 1,
                                      "fallback": "monolith"}]),
         route("legacy", "/", "monolith")],
        server={"workers": 2}, **top)


def migration(f, token=None):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", f.admin_port, timeout=scaled(5))
    c.request("GET", "/migration", headers={"Authorization": f"Bearer {token}"} if token else {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def routes_by_name(f):
    st, body = migration(f)
    assert st == 200, body
    return {r["name"]: r for r in json.loads(body)["routes"]}


def test_migration_json_per_route(ficus, echo_backend):
    old, new = echo_backend("old"), echo_backend("new")
    f = ficus(board_config(old.addr, new.addr))
    for i in range(20):
        assert http_request(f.port, "GET", f"/orders/{i}").status == 200
        assert http_request(f.port, "GET", f"/cart/{i}").status == 200
    # A 503 from whichever system answered: an error the client saw.
    assert http_request(f.port, "GET", "/orders/x", headers={"X-Echo-Status": "503"}).status == 503
    doc = None

    def counted():
        nonlocal doc
        doc = routes_by_name(f)
        return doc["orders"]["totals"]["requests"] >= 21

    assert wait_until(counted, 5), doc
    orders, legacy = doc["orders"], doc["legacy"]
    assert list(doc) == ["orders", "legacy"]  # config order
    assert orders["verdict"] == "migrating" and legacy["verdict"] == "old"
    groups = {g["name"]: g for g in orders["groups"]}
    assert groups["monolith"]["role"] == "old" and groups["orders-v2"]["role"] == "new"
    # Smooth round robin over two workers: about half each.
    assert 8 <= groups["orders-v2"]["requests"] <= 13, groups
    assert abs(sum(g["share"] for g in groups.values()) - 1) < 1e-9
    assert orders["totals"]["p99_ms"] is not None and orders["totals"]["p50_ms"] > 0
    for g in groups.values():
        s = g["series"]
        assert len(s["requests"]) == 90 and len(s["p99_ms"]) == 90
        assert sum(s["requests"]) == g["requests"]
    assert orders["bucket_ms"] == 10000 and orders["window_complete"] is False
    assert orders["shadow"] is None and orders["rollout"] is None
    assert legacy["totals"]["new_share"] == 0
    assert orders["totals"]["errors"] == 1 and orders["totals"]["masked"] == 0


def test_migration_shows_shadow_and_rollout(ficus, echo_backend):
    old, new = echo_backend("old"), echo_backend("new")
    r = route("orders", "/orders", [{"target_group": "monolith", "weight": 1},
                                    {"target_group": "orders-v2", "weight": 0,
                                     "fallback": "monolith"}],
              shadow={"target_group": "orders-v2", "percent": 100,
                      "compare": {"ignore": ["/peer_port", "/headers"]}},
              # Pending until 100 comparisons: every request stays on the
              # monolith, so every one is copied.
              rollout={"canary": "orders-v2", "steps": [10, 100], "interval": "1m",
                       "min_requests": 100, "max_mismatch_rate": "50%"})
    f = ficus(config({"monolith": old.addr, "orders-v2": new.addr}, [r]))
    for i in range(6):
        assert http_request(f.port, "GET", f"/orders/{i}").status == 200
    doc = None

    def compared():
        nonlocal doc
        doc = routes_by_name(f)["orders"]
        # The two figures are recorded one after the other by the worker:
        # wait for both.
        return (doc["shadow"] and doc["shadow"]["compared"] == 6 and
                doc["shadow_window"]["compared"] == 6)

    assert wait_until(compared, 5), doc
    # The echo's name differs: a real mismatch at /name, on every request.
    assert doc["shadow"]["match_rate"] == 0
    assert doc["shadow"]["top_fields"][0]["field"] == "/name"
    assert doc["shadow_window"]["compared"] == 6
    assert doc["rollout"] == {"state": "pending", "step": 0, "steps": 2, "percent": 0}


def test_migration_needs_the_admin_token(ficus, echo_backend, monkeypatch):
    old = echo_backend("old")
    monkeypatch.setenv("BOARD_TOKEN", "s3cret-token")
    f = ficus(board_config(old.addr, old.addr, admin={"token_env": "BOARD_TOKEN"}))
    assert migration(f)[0] == 401
    assert migration(f, "s3cret-token")[0] == 200
    # The page itself holds no data: served without the token.
    st, hdrs, body = f.admin_get("/ui/")
    assert st == 200


def test_ui_page_is_self_contained(ficus, echo_backend):
    old = echo_backend("old")
    f = ficus(board_config(old.addr, old.addr))
    st, hdrs, body = f.admin_get("/ui/")
    assert st == 200
    assert hdrs["content-type"].startswith("text/html")
    assert "default-src 'none'" in hdrs["content-security-policy"]
    # No external resource of any kind.
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", body, re.I), body[:500]
    assert "@import" not in body and "url(" not in body
    assert "/migration" in body
    st, hdrs, _ = f.admin_get("/ui")
    assert st == 301 and hdrs["location"] == "/ui/"


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def png_size(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def browser(args, tmp_path, timeout=60):
    # A profile of its own; crash reports and GPU off; no sandbox as root.
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
           "--virtual-time-budget=5000", "--window-size=1400,1000"] + args
    return subprocess.run(cmd, capture_output=True, timeout=scaled(timeout), check=False)


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (install-deps.sh installs it)")
def test_ui_draws_the_board_in_a_real_browser(ficus, echo_backend, tmp_path):
    old, new = echo_backend("old"), echo_backend("new")
    f = ficus(board_config(old.addr, new.addr))
    for i in range(30):
        assert http_request(f.port, "GET", f"/orders/{i}").status == 200
        assert http_request(f.port, "GET", f"/cart/{i}").status == 200
    assert wait_until(lambda: routes_by_name(f)["orders"]["totals"]["requests"] == 30, 5)
    url = f"http://127.0.0.1:{f.admin_port}/ui/"
    # The DOM after the page's script ran: the cards it drew from /migration.
    p = browser(["--dump-dom", url], tmp_path)
    dom = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert 'data-route="orders"' in dom and 'data-route="legacy"' in dom, dom[:3000]
    assert re.search(r'class="badge verdict v-migrating"[^>]*>migrating<', dom), dom[:3000]
    assert re.search(r'class="badge verdict v-old"[^>]*>old<', dom)
    assert dom.count("<svg") >= 8 and "<path" in dom  # four charts per route, drawn
    # A screenshot: a real PNG of the window's size, not a blank page.
    shot = tmp_path / "board.png"
    p = browser([f"--screenshot={shot}", url], tmp_path)
    assert p.returncode == 0 and shot.exists(), p.stderr.decode()[-2000:]
    assert png_size(shot) == (1400, 1000)
    assert os.path.getsize(shot) > 30000, "the page rendered (nearly) nothing"
    keep = os.environ.get("FICUS_BOARD_PNG")
    if keep:
        shutil.copy(shot, keep)


def test_masked_failures_count_on_the_failed_group(ficus, echo_backend):
    old = echo_backend("old")
    f = ficus(board_config(old.addr, "127.0.0.1:1"))  # orders-v2 refuses connections
    for i in range(10):
        r = http_request(f.port, "GET", f"/orders/{i}")
        assert r.status == 200 and r.header("X-Echo-Name") == "old"
    doc = None

    def counted():
        nonlocal doc
        doc = routes_by_name(f)["orders"]
        return doc["totals"]["requests"] == 10

    assert wait_until(counted, 5), doc
    groups = {g["name"]: g for g in doc["groups"]}
    # Every request the canary took was answered by the monolith.
    assert groups["orders-v2"]["requests"] == 0
    assert groups["orders-v2"]["masked"] == doc["totals"]["masked"] == groups["monolith"]["fallbacks"]
    assert 3 <= doc["totals"]["masked"] <= 7, doc["totals"]
    assert doc["totals"]["errors"] == 0
