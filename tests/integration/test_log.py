"""ficus's own log (contract section 2, `log: {level, format}`; section 1
signals): levels, JSON lines, every signal logged, a final line at exit,
and the small messages a newcomer meets first."""

import json
import signal
import time

from harness import config, route, run_cli, scaled, to_yaml, wait_until


def test_json_format_and_level(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")], log={"format": "json",
                                                                  "level": "debug"}))
    f.signal(signal.SIGUSR1)
    assert wait_until(lambda: "SIGUSR1" in f.stderr, scaled(5)), f.stderr
    assert f.stop() == 0
    lines = [ln for ln in f.stderr.splitlines() if ln.strip()]
    assert lines
    for ln in lines:
        obj = json.loads(ln)  # every line is one JSON object
        assert set(obj) == {"time", "level", "msg"}, obj
        assert obj["level"] in ("error", "warn", "info", "debug")
    msgs = [json.loads(ln)["msg"] for ln in lines]
    assert any("SIGUSR1 received" in m for m in msgs), msgs
    assert any("SIGTERM received" in m for m in msgs), msgs
    assert msgs[-1].startswith("exiting with code 0"), msgs


def test_level_warn_hides_info(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")], log={"level": "warn"}))
    f.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert f.stop() == 0
    assert "ficus[info]" not in f.stderr, f.stderr


def test_every_signal_is_logged_and_the_exit_too(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")]))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: "SIGHUP received" in f.stderr, scaled(5)), f.stderr
    f.signal(signal.SIGUSR1)
    assert wait_until(lambda: "SIGUSR1 received" in f.stderr, scaled(5)), f.stderr
    assert f.stop() == 0
    assert "SIGTERM received: draining" in f.stderr
    assert f.stderr.rstrip().splitlines()[-1].endswith("exiting with code 0"), f.stderr
    assert "(1 worker)" in f.stderr or "workers)" in f.stderr


def test_bad_log_keys(tmp_path):
    for bad, word in (({"level": "loud"}, "level"), ({"format": "xml"}, "format")):
        p = tmp_path / "c.yaml"
        p.write_text(to_yaml(config({"a": "127.0.0.1:9"}, [route("r", "/", "a")], log=bad)))
        r = run_cli(["check", "-c", str(p)])
        assert r.returncode == 1 and f"log.{word}" in r.stderr, r.stderr


def test_newcomer_messages(tmp_path):
    r = run_cli(["run", "-c"])
    assert r.returncode == 2 and "-c needs a FILE" in r.stderr, r.stderr
    r = run_cli(["--help"])
    assert "SIGHUP" in r.stdout
    r = run_cli(["run", "--help"])
    assert "SIGHUP" in r.stdout
    p = tmp_path / "c.yaml"
    p.write_text(to_yaml(config({"a": "http://10.0.0.5:80"}, [route("r", "/", "a")])))
    r = run_cli(["check", "-c", str(p)])
    assert r.returncode == 1 and "not a URL" in r.stderr, r.stderr
    assert "brackets" not in r.stderr


def test_restart_only_change_points_at_the_key(ficus, mock):
    a = mock("a")
    f = ficus(config({"a": a.addr}, [route("r", "/", "a")], server={"workers": 1}))
    f.write_config(config({"a": a.addr}, [route("r", "/", "a")], server={"workers": 2}))
    f.signal(signal.SIGHUP)
    assert wait_until(lambda: "server.workers changed" in f.stderr, scaled(5)), f.stderr
    line = [ln for ln in f.stderr.splitlines() if "server.workers changed" in ln][0]
    text = f.config_path.read_text().splitlines()
    n = next(i for i, t in enumerate(text, 1) if "workers" in t)
    assert f"{f.config_path}:{n}:" in line, (line, text)
