"""The command line (contract section 1): `ficus check` reports every error
as FILE:LINE:COL and exits 1 (0 when valid), `run` refuses an invalid file,
--help / bad usage / version, and the embedded demo on its fixed ports."""

import json
import re
import socket
import subprocess
import time

import pytest

from harness import ficus_bin, free_port, http_request, repo_root, run_cli, wait_until
from harness.procs import spawn, port_in_use, stop_process, wait_ports

VALID = """\
server:
  listen: ["127.0.0.1:18080"]
  workers: 1
admin:
  listen: "127.0.0.1:19901"
access_log:
  path: stdout
target_groups:
  a:
    targets: ["127.0.0.1:9001"]
  b:
    targets: ["127.0.0.1:9002"]
  standby:
    targets: ["127.0.0.1:9003"]
routes:
  - name: r1
    match: {path_regex: "/shops/(?<shop>[0-9]+)"}
    timeout: 5s
    backends:
      - {target_group: a, weight: 90}
      - {target_group: b, weight: 10, fallback: a}
  - name: r2
    match: {path_prefix: /}
    backends: [{target_group: a, weight: 1}]
"""

ERR_LINE = re.compile(r"^(.*):(\d+):(\d+): (.+)$")


def check(tmp_path, text, name="ficus.yaml"):
    path = tmp_path / name
    path.write_text(text)
    p = run_cli(["check", "-c", str(path)])
    return p, path


def errors_of(p, path):
    """(line, col, message) of every FILE:LINE:COL line naming path."""
    out = []
    for line in (p.stdout + "\n" + p.stderr).splitlines():
        m = ERR_LINE.match(line.strip())
        if m and m.group(1) == str(path):
            out.append((int(m.group(2)), int(m.group(3)), m.group(4)))
    return out


def line_of(text, needle):
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def expect_errors(tmp_path, text, expected):
    """expected: list of (needle on the offending line, word the message must
    contain). Every one must be reported on its line, with a column inside it."""
    p, path = check(tmp_path, text)
    errs = errors_of(p, path)
    report = f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.returncode == 1, report
    assert errs, "no FILE:LINE:COL lines\n" + report
    lines = text.splitlines()
    for needle, word in expected:
        ln = line_of(text, needle)
        match = [e for e in errs if e[0] == ln]
        assert match, f"no error on line {ln} ({lines[ln - 1].strip()!r})\n{report}"
        assert any(word.lower() in m.lower() for _, _, m in match), \
            f"error on line {ln} does not mention {word!r}: {match}"
        for _, col, _ in match:
            assert 1 <= col <= len(lines[ln - 1]) + 1, f"column {col} outside line {ln}"
    return errs


def test_valid_file_exits_0(tmp_path):
    p, _ = check(tmp_path, VALID)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"


def test_check_opens_no_listener(tmp_path):
    # The listen port is taken: a check that tried to listen would fail.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p, _ = check(tmp_path, VALID.replace("18080", str(port)))
    assert p.returncode == 0, p.stderr


def test_unquoted_off_access_log_is_valid(tmp_path):
    p, _ = check(tmp_path, VALID.replace("path: stdout", "path: off"))
    assert p.returncode == 0, p.stderr


def test_unknown_key(tmp_path):
    text = VALID.replace("  workers: 1\n", "  workers: 1\n  bogus_key: 1\n")
    expect_errors(tmp_path, text, [("bogus_key", "bogus_key")])


def test_unknown_key_in_route(tmp_path):
    text = VALID.replace("    timeout: 5s\n", "    timeout: 5s\n    tiemout: 5s\n")
    expect_errors(tmp_path, text, [("tiemout", "tiemout")])


def test_bad_duration(tmp_path):
    text = VALID.replace("timeout: 5s", "timeout: 5x")
    expect_errors(tmp_path, text, [("timeout: 5x", "timeout")])


def test_unknown_target_group(tmp_path):
    text = VALID.replace("{target_group: b, weight: 10, fallback: a}",
                         "{target_group: nope, weight: 10, fallback: a}")
    expect_errors(tmp_path, text, [("target_group: nope", "nope")])


def test_fallback_not_among_backends(tmp_path):
    text = VALID.replace("fallback: a}", "fallback: standby}")
    expect_errors(tmp_path, text, [("fallback: standby", "standby")])


def test_bad_regex(tmp_path):
    text = VALID.replace('"/shops/(?<shop>[0-9]+)"', '"/shops/([0-9]+"')
    expect_errors(tmp_path, text, [('"/shops/([0-9]+"', "path_regex")])


def test_two_errors_both_reported(tmp_path):
    text = VALID.replace("  workers: 1\n", "  workers: 1\n  bogus_key: 1\n") \
        .replace("timeout: 5s", "timeout: 5x")
    errs = expect_errors(tmp_path, text, [("bogus_key", "bogus_key"), ("timeout: 5x", "timeout")])
    assert [e[0] for e in errs] == sorted(e[0] for e in errs), f"not in file order: {errs}"


def test_yaml_syntax_error_has_position(tmp_path):
    text = VALID.replace('  listen: "127.0.0.1:19901"', '  listen: ["127.0.0.1:19901"')
    p, path = check(tmp_path, text)
    assert p.returncode == 1, p.stderr
    assert errors_of(p, path), f"no FILE:LINE:COL in:\n{p.stdout}{p.stderr}"


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    p = run_cli(["check", "-c", str(path)])
    assert p.returncode == 1, p.stderr
    assert str(path) in p.stdout + p.stderr


def test_run_refuses_invalid_file(tmp_path):
    path = tmp_path / "bad.yaml"
    text = VALID.replace("timeout: 5s", "timeout: 5x")
    path.write_text(text)
    p = run_cli(["run", "-c", str(path)], timeout=10)
    assert p.returncode == 1, f"exit {p.returncode}\n{p.stderr}"
    assert errors_of(p, path), f"no FILE:LINE:COL in:\n{p.stdout}{p.stderr}"


def test_run_exits_1_when_listen_address_is_taken(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        path = tmp_path / "taken.yaml"
        path.write_text(VALID.replace("18080", str(port)).replace("19901", str(free_port())))
        p = run_cli(["run", "-c", str(path)], timeout=10)
    assert p.returncode == 1, f"exit {p.returncode}\n{p.stderr}"
    assert str(port) in p.stderr, p.stderr


# --- usage and version ---------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["check", "--help"],
                                  ["version", "--help"]])
def test_help_exits_0(args):
    p = run_cli(args)
    assert p.returncode == 0, f"{args}: exit {p.returncode}\n{p.stderr}"
    assert re.search(r"usage", p.stdout + p.stderr, re.I), p.stdout + p.stderr


@pytest.mark.parametrize("args", [["no-such-command"], ["--no-such-flag"], ["run"],
                                  ["run", "-c"], ["check"], ["check", "--bogus", "x"]])
def test_bad_usage_exits_2(args):
    p = run_cli(args)
    assert p.returncode == 2, f"{args}: exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.stderr.strip(), "bad usage should say what is wrong on stderr"


@pytest.mark.parametrize("args", [["version"], ["--version"]])
def test_version_lists_libraries(args):
    p = run_cli(args)
    assert p.returncode == 0, p.stderr
    out = (p.stdout + p.stderr).lower()
    assert (repo_root() / "VERSION").read_text().strip() in out, out
    uv = subprocess.run(["pkg-config", "--modversion", "libuv"], capture_output=True,
                        text=True).stdout.strip()
    assert "libuv" in out and (not uv or uv in out), out
    for lib in ("llhttp", "pcre2", "yaml", "openssl"):
        assert lib in out, f"{lib} missing from:\n{out}"


# --- demo ---------------------------------------------------------------------------


def test_demo_routes_search_and_default():
    if port_in_use(8080) or port_in_use(9901):
        pytest.skip("127.0.0.1:8080 or :9901 is in use")
    p, out, err = spawn([ficus_bin(), "demo"])
    try:
        try:
            wait_ports([8080, 9901], p, 10.0, "ficus demo")
        except RuntimeError as e:
            time.sleep(0.1)
            pytest.fail(f"{e}\nstdout:\n" + "\n".join(out.lines) + "\nstderr:\n" + "\n".join(err.lines))
        names = []
        # 200 requests: ~20 reach the canary, so a missing fallback shows.
        for i in range(200):
            r = http_request(8080, "GET", f"/search?q={i}")
            # The canary's failures fall back to search-v1: the client sees 200.
            assert r.status == 200, repr(r)
            name = r.header("X-Mock-Name") or r.body.decode("latin-1")
            names.append("search-v2" if "search-v2" in name else
                         "search-v1" if "search-v1" in name else name)
        assert set(names) <= {"search-v1", "search-v2"}, names
        assert "search-v1" in names
        r = http_request(8080, "GET", "/")
        assert r.status == 200, repr(r)
        assert "monolith" in (r.header("X-Mock-Name") or r.body.decode("latin-1")), repr(r)
        # The README's API-client step: no key 401, the demo key 200, then 429s.
        assert http_request(8080, "GET", "/partner").status == 401
        key = {"X-Api-Key": "demo-partner-key"}
        codes = [http_request(8080, "GET", "/partner", headers=key).status for _ in range(12)]
        assert codes[0] == 200 and 429 in codes, codes
        # The README's migration step: /orders from the monolith, copied to
        # orders-v2, whose answers match once keys are compared as values.
        for i in range(5):
            r = http_request(8080, "GET", f"/orders/{i}")
            assert r.status == 200 and r.json()["service"] == "monolith", repr(r)

        def shadow():
            return json.loads(http_request(9901, "GET", "/routes/orders/shadow").body)

        assert wait_until(lambda: shadow()["requests"]["match"] == 5, 5), shadow()
        ro = json.loads(http_request(9901, "GET", "/routes/orders/rollout").body)
        assert ro["state"] == "pending", ro
        # The README's aggregation step: three calls, one answer, the one
        # that is not JSON null and named.
        r = http_request(8080, "GET", "/home")
        assert r.status == 200 and r.header("X-Ficus-Partial") == "true", repr(r)
        doc = r.json()
        assert doc["order"] == {"id": 1001, "total": 1200, "currency": "JPY"}, doc
        assert doc["orders_v2"]["service"] == "orders-v2" and doc["search"] is None, doc
        assert doc["_errors"] == {"search": "the body is not JSON"}, doc
        # The README's HTTP/2 step.
        cp = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                             "%{http_version} %{http_code}", "http://127.0.0.1:8080/cart"],
                            capture_output=True, timeout=10)
        assert cp.stdout == b"2 200", cp
        status = http_request(9901, "GET", "/healthz").status
        assert status == 200
        printed = "\n".join(out.lines + err.lines)
        assert "8080" in printed, f"demo should print the URLs to try:\n{printed}"
    finally:
        rc = stop_process(p, grace=10)
    assert rc == 0, f"demo exited {rc} on SIGTERM\n" + "\n".join(err.lines[-30:])
