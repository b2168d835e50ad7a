"""Semantic lint (contract 10.4): `ficus check` warns, with FILE:LINE:COL and
a rule id, for configurations that load but are dangerous; `--strict` fails
on a warning; `lint.ignore` silences rules for the file or a route; clean and
realistic configurations print no warning."""

import re

import pytest

from harness import repo_root, run_cli

GROUPS = """target_groups:
  old: {targets: ["127.0.0.1:9000"]}
  new: {targets: ["127.0.0.1:9001"]}
"""

WARN = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): warning: \[(?P<rule>[a-z-]+)\] (?P<msg>.+)$")


def check(tmp_path, text, *flags):
    path = tmp_path / "ficus.yaml"
    path.write_text(text)
    p = run_cli(["check", "-c", str(path), *flags])
    warnings = [WARN.match(l) for l in p.stderr.splitlines() if ": warning: [" in l]
    assert all(warnings), p.stderr
    return p, [(w["rule"], int(w["line"]), int(w["col"]), w["msg"]) for w in warnings]


# One config per rule: (rule, YAML, line:col of the key it points at).
CASES = [
    ("retry-non-idempotent", GROUPS + """routes:
  - name: pay
    match: {path_prefix: /pay}
    backends: [{target_group: old}]
    timeout: 2s
    retries: {attempts: 1, retry_on: [5xx]}
    retry_non_idempotent: true
server: {retry_buffer_size: 8MiB, max_body_size: 8MiB}
""", (10, 5)),
    ("try-exceeds-timeout", GROUPS + """routes:
  - name: slow
    match: {path_prefix: /, methods: [GET]}
    backends: [{target_group: old}]
    timeout: 1s
    retries: {attempts: 2, per_try_timeout: 600ms, retry_on: [timeout]}
""", (9, 28)),
    ("retry-buffer-below-body", GROUPS + """routes:
  - name: upload
    match: {path_prefix: /up}
    backends: [{target_group: old}]
    timeout: 2s
    retries: {attempts: 1, retry_on: [connect-failure]}
""", (5, 5)),
    ("fallback-is-canary", GROUPS + """routes:
  - name: both
    match: {path_prefix: /, methods: [GET]}
    backends:
      - {target_group: old, weight: 50, fallback: new}
      - {target_group: new, weight: 50, fallback: old}
    timeout: 1s
""", (8, 41)),
    ("unreachable-route", GROUPS + """routes:
  - {name: api, match: {path_prefix: /api}, backends: [{target_group: old}], timeout: 1s}
  - {name: orders, match: {path: /api/orders}, backends: [{target_group: new}], timeout: 1s}
""", (6, 20)),
    ("shadow-side-effects", GROUPS + """routes:
  - name: r
    match: {path_prefix: /, methods: [GET]}
    backends: [{target_group: old}]
    timeout: 1s
    shadow: {target_group: new, methods: [GET, DELETE]}
""", (9, 33)),
    ("untrusted-forwarded-for", "server:\n  trusted_proxies: [\"::/0\"]\n" + GROUPS + """routes:
  - {name: r, match: {path_prefix: /, methods: [GET]}, backends: [{target_group: old}], timeout: 1s}
""", (2, 21)),
    ("required-shared-group", """target_groups:
  mono: {targets: ["127.0.0.1:9000"], required: true}
routes:
  - {name: a, match: {path_prefix: /a, methods: [GET]}, backends: [{target_group: mono}], timeout: 1s}
  - {name: b, match: {path_prefix: /b, methods: [GET]}, backends: [{target_group: mono}], timeout: 1s}
""", (2, 39)),
    ("tls-verify-off", """target_groups:
  old:
    targets: ["127.0.0.1:9000"]
    tls: {sni: old.internal, verify: false}
routes:
  - {name: r, match: {path_prefix: /, methods: [GET]}, backends: [{target_group: old}], timeout: 1s}
""", (4, 30)),
    ("no-timeout", GROUPS + """routes:
  - name: r
    match: {path_prefix: /, methods: [GET]}
    backends: [{target_group: old}]
""", (5, 5)),
    ("hedge-after-timeout", GROUPS + """routes:
  - name: r
    match: {path_prefix: /, methods: [GET]}
    backends: [{target_group: old}]
    timeout: 2s
    retries: {attempts: 1, retry_on: [5xx], per_try_timeout: 300ms, hedge: {after: 300ms}}
""", (9, 77)),
]


@pytest.mark.parametrize("rule,text,where", CASES, ids=[c[0] for c in CASES])
def test_rule_fires_located_silenced_and_strict(tmp_path, rule, text, where):
    p, warnings = check(tmp_path, text)
    assert p.returncode == 0, p.stderr  # a warning alone does not fail the check
    rules = [w[0] for w in warnings]
    assert rule in rules, p.stderr
    w = next(w for w in warnings if w[0] == rule)
    assert (w[1], w[2]) == where, p.stderr
    assert str(tmp_path / "ficus.yaml") in p.stderr
    # --strict: the same file fails, and says why.
    p, _ = check(tmp_path, text, "--strict")
    assert p.returncode == 1 and "(--strict)" in p.stderr, p.stderr
    # Silenced for the whole file.
    p, warnings = check(tmp_path, f"lint: {{ignore: [{rule}]}}\n" + text)
    assert rule not in [w[0] for w in warnings], p.stderr


def test_route_ignore_silences_only_that_route(tmp_path):
    text = GROUPS + """routes:
  - {name: a, match: {path_prefix: /a, methods: [GET]}, backends: [{target_group: old}]}
  - name: b
    match: {path_prefix: /b, methods: [GET]}
    backends: [{target_group: old}]
    lint: {ignore: [no-timeout]}
"""
    p, warnings = check(tmp_path, text)
    assert [(w[0], w[3].split()[1]) for w in warnings] == [("no-timeout", "a")], p.stderr


def test_unknown_rule_is_an_error(tmp_path):
    p, _ = check(tmp_path, "lint: {ignore: [no-timeouts]}\n" + GROUPS +
                 "routes: [{name: r, match: {path_prefix: /}, backends: [{target_group: old}]}]\n")
    assert p.returncode == 1
    assert ":1:17: lint.ignore[0]: unknown lint rule \"no-timeouts\"" in p.stderr, p.stderr


REALISTIC = [
    # A strangler migration: the monolith, a canary with fallback, a shadow, a rollout.
    GROUPS + """server:
  listen: ["0.0.0.0:8080"]
  max_body_size: 1MiB
  retry_buffer_size: 1MiB
routes:
  - name: orders
    match: {path_regex: "/orders/([0-9]+)", methods: [GET, HEAD]}
    backends:
      - {target_group: old, weight: 100}
      - {target_group: new, weight: 0, fallback: old}
    timeout: 3s
    retries: {attempts: 1, per_try_timeout: 1s, retry_on: [gateway-error]}
    shadow: {target_group: new, percent: 10, compare: {ignore: [/meta]}}
    rollout: {canary: new, steps: [5, 25, 100], interval: 5m}
  - name: writes
    match: {path_prefix: /orders, methods: [POST, PUT, DELETE]}
    backends: [{target_group: old}]
    timeout: 10s
    retries: {attempts: 2, retry_on: [connect-failure]}
  - name: default
    match: {path_prefix: /}
    backends: [{target_group: old}]
    timeout: 30s
""",
    # Behind a load balancer, limits by address through its X-Forwarded-For.
    GROUPS + """server:
  listen: ["10.0.0.5:8080"]
  trusted_proxies: ["10.0.0.0/8"]
routes:
  - name: login
    match: {path: /login, methods: [POST]}
    backends: [{target_group: old}]
    timeout: 5s
    rate_limit: {requests_per_second: 5, burst: 10, by: ip}
  - name: rest
    match: {path_prefix: /}
    backends: [{target_group: old}]
    timeout: 15s
""",
]


@pytest.mark.parametrize("text", REALISTIC, ids=["migration", "behind-lb"])
def test_realistic_configs_stay_clean(tmp_path, text):
    p, warnings = check(tmp_path, text, "--strict")
    assert p.returncode == 0 and warnings == [] and "warning" not in p.stderr, p.stderr


def test_the_shipped_example_is_clean():
    p = run_cli(["check", "-c", str(repo_root() / "examples" / "gateway.yaml"), "--strict"])
    assert p.returncode == 0 and p.stderr == "", p.stderr
