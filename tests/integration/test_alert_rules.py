"""The deploy kit's observability (issue 13): the Prometheus alert rules of
deploy/prometheus pass `promtool check rules` and their unit tests
(`promtool test rules`); every alert carries a severity, its figures and a
runbook_url whose anchor is a heading of docs/oncall.md (whose links, and
docs/onboarding.md's, resolve); the Grafana dashboard of deploy/grafana is
well formed (unique panel ids, a datasource and targets on every panel,
gridPos within 24 columns, each expression valid PromQL); and every metric and label that a rule or a panel names is one a
real ficus exports: a ficus with a canary fallback, a shadowed rollout, a
hedge, a client throttle and a rate limit is scraped after traffic that
makes each family show its labels (a circuit breaker at its limit and a
rollout transition too)."""

import hashlib
import json
import re
import shutil
import subprocess
import threading

import pytest
import yaml

from harness import config, http_request, parse_metrics, repo_root, route, scaled, wait_until

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RULES_DIR = repo_root() / "deploy" / "prometheus"
RULES = RULES_DIR / "ficus-alerts.yaml"
RULES_TEST = RULES_DIR / "ficus-alerts.test.yaml"
DASHBOARD = repo_root() / "deploy" / "grafana" / "ficus-dashboard.json"
ONCALL = repo_root() / "docs" / "oncall.md"
RUNBOOK_BASE = "https://github.com/ficus-gateway/ficus/blob/main/docs/oncall.md#"
SEVERITIES = {"critical", "warning"}
# Names a rule may use that this ficus does not export: Prometheus's own
# scrape health, and the certificate expiry of contract 3.3, which TLS
# (issue 14) brings; their labels as the contract gives them.
NOT_FROM_FICUS = {"up": set(), "ficus_tls_certificate_expiry_timestamp_seconds": {"listener", "name"}}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
KEY = "alert-rules-partner-key-0123456789"

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on",
             "ignoring", "group_left", "group_right"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"(?<![a-zA-Z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def promql_names(expr):
    """(metric names, {metric: labels matched on it}, labels of by/on/...
    clauses) named by a PromQL expression: a scanner, not a parser, enough
    for the shapes a rule or a panel uses."""
    grouping = set()
    for _, labels in _GROUPING.findall(expr):
        grouping.update(x.strip() for x in labels.split(",") if x.strip())
    rest = _GROUPING.sub(" ", expr)
    matched = {}
    for name, body in _MATCHERS.findall(rest):
        matched.setdefault(name or None, set()).update(_MATCHER_LABEL.findall(body))
    rest = _MATCHERS.sub(lambda m: " " + (m.group(1) or "") + " ", rest)
    rest = _STRING.sub(" ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = _NUMBER.sub(" ", rest)
    names = set()
    for m in _IDENT.finditer(rest):
        word = m.group(0)
        if word.lower() in _KEYWORDS or re.match(r"\s*\(", rest[m.end():]):
            continue
        names.add(word)
    return names, matched, grouping


def load_rules():
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def github_anchors(markdown):
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors, seen = set(), {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_code or not m:
            continue
        text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def run_promtool(*args):
    return subprocess.run([PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, text=True,
                          timeout=120)


def test_promtool_checks_the_rules():
    r = run_promtool("check", "rules", RULES.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests_pass():
    r = run_promtool("test", "rules", RULES_TEST.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_is_tested_firing_and_silent():
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    fired, silent = set(), set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
            for exp in case.get("exp_alerts") or []:
                # A firing case checks the figures and the link too.
                assert set(exp.get("exp_annotations", {})) >= {"summary", "description",
                                                                "runbook_url"}, case
    names = {r["alert"] for r in load_rules()}
    assert names - fired == set(), "alerts never seen firing"
    assert names - silent == set(), "alerts never seen silent"


def test_every_alert_links_to_its_oncall_section():
    anchors = github_anchors(ONCALL.read_text())
    for rule in load_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert "for" in rule, name
        ann = rule["annotations"]
        assert ann["summary"].strip() and ann["description"].strip(), name
        url = ann["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), (name, url)
        anchor = url[len(RUNBOOK_BASE):]
        # Its own section: the heading is the alert's name.
        assert anchor == name.lower(), (name, url)
        assert anchor in anchors, f"{name}: no heading #{anchor} in docs/oncall.md"


def test_oncall_and_onboarding_links_resolve():
    """Every relative link of the two guides names a file that exists and,
    with a fragment, a heading of it."""
    docs = repo_root() / "docs"
    for guide in ("oncall.md", "onboarding.md"):
        text = (docs / guide).read_text()
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (docs / path).resolve() if path else docs / guide
            assert file.is_file(), f"{guide}: link to {target}: no such file"
            if anchor:
                assert anchor in github_anchors(file.read_text()), f"{guide}: link to {target}"


def test_github_anchors_follow_githubs_rules():
    md = "# On call\n## FicusNoHealthyTarget\n## What `up` means!\n```\n# not a heading\n```\n## On call\n"
    assert github_anchors(md) == {"on-call", "ficusnohealthytarget", "what-up-means", "on-call-1"}


def test_promql_scanner():
    names, matched, grouping = promql_names(
        'sum by (job, route) (rate(ficus_requests_total{code=~"5..", route!=""}[5m])) '
        '/ on (job) group_left process_max_fds > 1e3 and absent(up{job="ficus"} == 1)')
    assert names == {"ficus_requests_total", "process_max_fds", "up"}
    assert matched == {"ficus_requests_total": {"code", "route"}, "up": {"job"}}
    assert grouping == {"job", "route"}


def dashboard_panels(doc):
    for p in doc["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_exprs(doc):
    """(where, expression) of every panel target and templating query, with
    Grafana's variables replaced by what Prometheus would be sent."""
    subst = [("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h"),
             ("${DS_PROMETHEUS}", ""), ("$instance", ".*"), ("$route", ".*")]

    def clean(e):
        for a, b in subst:
            e = e.replace(a, b)
        return e

    for p in dashboard_panels(doc):
        for t in p.get("targets", []):
            yield f"panel {p['id']} ({p['title']}) {t.get('refId')}", clean(t["expr"])
    for a in doc["annotations"]["list"]:
        if "expr" in a:
            yield f"annotation {a['name']}", clean(a["expr"])
    for v in doc["templating"]["list"]:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip())
            assert m, f"variable {v['name']}: {q}"
            yield f"variable {v['name']}", clean(m.group(1))


def test_dashboard_is_well_formed(tmp_path):
    doc = json.loads(DASHBOARD.read_text())
    assert 36 <= doc["schemaVersion"] <= 41
    assert doc["uid"] and doc["title"]
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    assert doc["__inputs"][0]["pluginId"] == "prometheus"
    assert {v["name"] for v in doc["templating"]["list"]} >= {"instance", "route"}
    ids = []
    for p in dashboard_panels(doc):
        ids.append(p["id"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        assert g["h"] > 0 and g["y"] >= 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for a in doc["annotations"]["list"]:
        if "expr" in a:
            assert a["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, a["name"]
    # Each expression is valid PromQL: promtool parses them as recording rules.
    exprs = list(dashboard_exprs(doc))
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-exprs.yaml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def exported(ficus, mock):
    """{sample name: label names} from a ficus whose traffic makes every
    family used by the rules and the dashboard show its labels."""
    v1, v2 = mock("search-v1"), mock("search-v2", fail_rate=1.0, fail_status=503)
    mono, orders = mock("monolith"), mock("orders-v2")
    slow, fast = mock("slow", latency="400ms"), mock("fast")
    held = mock("held", latency="1s")
    cfg = config(
        {"monolith": mono.addr, "search-v1": v1.addr, "search-v2": v2.addr,
         "orders-v2": orders.addr, "hedged": [slow.addr, fast.addr],
         "held": {"targets": [held.addr], "max_requests": 1}},
        [route("search", "/search", [{"target_group": "search-v1", "weight": 1},
                                     {"target_group": "search-v2", "weight": 1,
                                      "fallback": "search-v1"}]),
         route("orders", "/orders", [{"target_group": "monolith", "weight": 1},
                                     {"target_group": "orders-v2", "weight": 0,
                                      "fallback": "monolith"}],
               shadow={"target_group": "orders-v2", "percent": 100},
               rollout={"canary": "orders-v2", "steps": [10, 100], "interval": "1m",
                        "min_requests": 100}),
         route("hedged", "/hedged", "hedged", timeout="5s",
               retries={"attempts": 0, "retry_on": ["5xx"],
                        "hedge": {"after": "50ms", "max_percent": 100}}),
         route("partner", "/partner", "held", auth={"client": "required"}),
         route("held", "/held", "held"),
         route("limited", "/limited", "monolith",
               rate_limit={"requests_per_second": 0.01, "burst": 1, "by": "ip"}),
         route("default", "/", "monolith")],
        server={"workers": 1},
        clients=[{"id": "partner", "max_concurrent_requests": 1,
                  "api_keys_sha256": [hashlib.sha256(KEY.encode()).hexdigest()]}])
    f = ficus(cfg)
    for i in range(6):
        assert http_request(f.port, "GET", f"/search/{i}").status == 200
        assert http_request(f.port, "GET", f"/orders/{i}").status == 200
        assert http_request(f.port, "GET", f"/hedged/{i}", timeout=10).status == 200
    assert [http_request(f.port, "GET", "/limited").status for _ in range(3)] == [200, 429, 429]
    # A rollout transition (by hand: pending to its first step).
    assert http_request(f.admin_port, "POST", "/routes/orders/rollout/promote").status == 200
    assert http_request(f.port, "GET", "/nowhere").status == 200
    # A client allowed one request at a time sends a second while its first
    # is held; another client's request finds the group's one request slot taken.
    first = []
    call = threading.Thread(target=lambda: first.append(http_request(
        f.port, "GET", "/partner", headers={"X-Api-Key": KEY}, timeout=scaled(10)).status))
    call.start()
    try:
        assert wait_until(lambda: held.stats()["total"] >= 1, scaled(5)), "first never arrived"
        assert http_request(f.port, "GET", "/partner", headers={"X-Api-Key": KEY}).status == 429
        assert http_request(f.port, "GET", "/held").status == 503
    finally:
        call.join()
    assert first == [200]

    def scrape():
        return parse_metrics(f.metrics_text())

    # Shadow copies are compared off the request path.
    assert wait_until(lambda: any(n == "ficus_shadow_requests_total" for n, _, _ in scrape()),
                      scaled(5))
    labels = {}
    for name, ls, _ in scrape():
        labels.setdefault(name, set()).update(ls)
    return labels


def test_rules_and_dashboard_use_only_exported_metrics_and_labels(ficus, mock):
    labels = exported(ficus, mock)
    known = dict(labels)
    for name, ls in NOT_FROM_FICUS.items():
        assert name not in labels or name == "ficus_tls_certificate_expiry_timestamp_seconds"
        known.setdefault(name, ls)
    exprs = [(f"alert {r['alert']}", r["expr"]) for r in load_rules()]
    exprs += list(dashboard_exprs(json.loads(DASHBOARD.read_text())))
    used = set()
    for where, expr in exprs:
        names, matched, grouping = promql_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - set(known)
        assert not unknown, f"{where}: {sorted(unknown)} not exported by ficus"
        used |= names
        for name, ls in matched.items():
            assert name is not None, f"{where}: a selector without a metric name"
            extra = ls - known[name] - TARGET_LABELS
            assert not extra, f"{where}: {name} has no label {sorted(extra)}"
        available = set().union(*(known[n] for n in names)) | TARGET_LABELS
        assert grouping <= available, f"{where}: grouping by {sorted(grouping - available)}"
    # The families the kit is about are all watched.
    for family in ("ficus_requests_total", "ficus_request_duration_seconds_bucket",
                   "ficus_upstream_requests_total", "ficus_target_healthy",
                   "ficus_fallbacks_total", "ficus_canary_masked_failures_total",
                   "ficus_hedges_total", "ficus_config_reloads_total",
                   "ficus_config_last_reload_successful", "ficus_throttled_total",
                   "ficus_rate_limited_total", "ficus_shadow_requests_total",
                   "ficus_rollout_step", "ficus_rollout_transitions_total",
                   "ficus_circuit_breaker_rejections_total",
                   "ficus_tls_certificate_expiry_timestamp_seconds"):
        assert family in used, f"neither a rule nor a panel watches {family}"
