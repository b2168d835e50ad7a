"""Takeover (contract section 7): a new `ficus run` with the same
server.control_socket receives the running one's listening sockets, serves
them, and the old one drains; no connection is refused and no request fails.
If the new one cannot start, the old one keeps serving untouched."""

import shutil
import subprocess
import threading
import time

import pytest

from harness import config, http_request, route, scaled, wait_until, wrk


def same_place(f, cfg):
    """cfg on f's listener and admin addresses (for the process taking over)."""
    cfg = dict(cfg)
    cfg["server"] = dict(cfg.get("server", {}), listen=[f.listen])
    cfg["admin"] = {"listen": f.admin_listen}
    return cfg


def base(m, sock, workers=2, **server):
    return config({"m": m.addr}, [route("r", "/", "m")],
                  server={"workers": workers, "control_socket": sock, "drain_timeout": "10s",
                          **server})


def wait_exit(f, timeout):
    try:
        return f.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk not installed")
@pytest.mark.parametrize("new_workers", [2, 1, 3])
def test_takeover_under_load_loses_nothing(ficus, mock, tmp_path, new_workers):
    m = mock("m", workers=1)
    sock = str(tmp_path / "ficus.sock")
    old = ficus(base(m, sock))
    assert wait_until(lambda: "can take over the listeners" in old.stderr, scaled(3)), old.stderr
    result = {}
    load = threading.Thread(target=lambda: result.update(r=wrk(old.url + "/", 5)))
    load.start()
    time.sleep(1.5)
    new = ficus(same_place(old, base(m, sock, workers=new_workers)))
    assert wait_until(lambda: "previous ficus is draining" in new.stderr, scaled(5)), new.stderr
    load.join(scaled(40))
    total, errors, non2xx, out = result["r"]
    assert total > 0 and errors == 0 and non2xx == 0, out
    # The old one drained and exited 0; the new one serves, admin included.
    assert wait_exit(old, scaled(15)) == 0, old.stderr
    assert "takeover: a new ficus serves the listeners" in old.stderr
    assert http_request(new.port, "GET", "/").status == 200
    assert new.admin_get("/readyz")[0] == 200


def test_a_new_process_that_fails_leaves_the_old_one_serving(ficus, mock, tmp_path):
    m = mock("m")
    sock = str(tmp_path / "ficus.sock")
    old = ficus(base(m, sock))
    assert wait_until(lambda: "can take over the listeners" in old.stderr, scaled(3))
    # Valid config, but it cannot open its access log: it fails after receiving
    # the sockets, before serving them.
    bad = same_place(old, base(m, sock))
    bad["access_log"] = {"path": str(tmp_path / "no" / "such" / "dir" / "access.log")}
    failed = ficus(bad, wait=False)
    assert wait_exit(failed, scaled(10)) == 1, failed.stderr
    assert "access log" in failed.stderr
    assert old.alive()
    assert "draining" not in old.stderr
    for _ in range(20):
        assert http_request(old.port, "GET", "/").status == 200
    assert old.admin_get("/readyz")[0] == 200
    # And it can still be taken over.
    new = ficus(same_place(old, base(m, sock)))
    assert wait_until(lambda: "previous ficus is draining" in new.stderr, scaled(5)), new.stderr
    assert wait_exit(old, scaled(15)) == 0
    assert http_request(new.port, "GET", "/").status == 200


def test_takeovers_chain(ficus, mock, tmp_path):
    m = mock("m")
    sock = str(tmp_path / "ficus.sock")
    first = ficus(base(m, sock, workers=1))
    prev = first
    for i in range(2):
        nxt = ficus(same_place(prev, base(m, sock, workers=1)))
        assert wait_until(lambda: "previous ficus is draining" in nxt.stderr, scaled(5)), \
            nxt.stderr
        assert wait_exit(prev, scaled(15)) == 0, prev.stderr
        assert http_request(nxt.port, "GET", "/").status == 200
        assert wait_until(lambda: "can take over the listeners" in nxt.stderr, scaled(3)), \
            nxt.stderr
        prev = nxt


def test_in_flight_requests_finish_on_the_old_process(ficus, mock, tmp_path):
    slow = mock("slow", latency="1500ms")
    sock = str(tmp_path / "ficus.sock")
    cfg = config({"s": slow.addr}, [route("r", "/", "s")],
                 server={"workers": 1, "control_socket": sock, "drain_timeout": "10s"})
    old = ficus(cfg)
    result = {}

    def call():
        r = http_request(old.port, "GET", "/", timeout=scaled(10))
        result["r"] = (r.status, (r.header("Connection") or "").lower())

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    new = ficus(same_place(old, cfg))
    assert wait_until(lambda: "previous ficus is draining" in new.stderr, scaled(5)), new.stderr
    t.join(scaled(10))
    assert result["r"] == (200, "close")
    assert wait_exit(old, scaled(10)) == 0
