#!/usr/bin/env bash
# An aggregation of three calls against three sequential plain proxy calls:
# latency (one client, one keep-alive connection, one iteration after the
# other) and ficus's CPU (wrk, CONNS connections). ficus on one core (CPU 1)
# with one worker; NGINX (the backend, serving /a.json, /b.json, /c.json), wrk
# and the latency client on the other (CPU 0). Interleaved rounds; prints a
# table of medians and writes the raw numbers to
# bench/results/aggregate-<timestamp>.json. See bench/README.md.
#
#   bench/aggregate.sh
#
# Environment (defaults in brackets):
#   FICUS_BIN [./ficus]  ROUNDS [5]  DURATION [5] seconds per wrk run
#   ITERATIONS [2000] latency iterations per run  CONNS [50] wrk connections
#   WARMUP [1] seconds  PROXY_CPU [1]  LOAD_CPU [0]
#   KEEP_TMP [0]: 1 keeps the temp dir (configs, logs, wrk outputs)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# die, note, no_arguments, launch, stop_pid, cpu_ticks ...: bench/lib.sh
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
no_arguments "$@"
FICUS_BIN=${FICUS_BIN:-./ficus}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
ITERATIONS=${ITERATIONS:-2000}
CONNS=${CONNS:-50}
WARMUP=${WARMUP:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PYTHON=${PYTHON:-python3}
STARTUP_S=10     # a process that is not serving by then failed to start
WRK_SLACK_S=20   # wrk's own -d bounds it; this is the safety net
CLIENT_MAX_S=60  # the latency client stops its iterations after this
CLK_TCK=$(getconf CLK_TCK)


for tool in wrk nginx taskset curl timeout "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
for v in ROUNDS DURATION ITERATIONS CONNS WARMUP; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((10#${!v} < 1)); then
        die "$v must be a positive integer"
    fi
done
[[ -x $FICUS_BIN ]] || die "no ficus binary at $FICUS_BIN (make ficus, or set FICUS_BIN)"
FICUS_BIN=$(realpath "$FICUS_BIN")
if (($(nproc) < 2)); then
    note "only one CPU: proxy and load share it, numbers mean little"
    PROXY_CPU=0
    LOAD_CPU=0
fi

TMP=$(mktemp -d /tmp/ficus-aggbench.XXXXXX)
chmod 755 "$TMP" # nginx workers drop to nobody and must reach their files
RUNS=$TMP/runs.jsonl
: >"$RUNS"









read -r BACKEND_PORT LISTEN_PORT ADMIN_PORT < <("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')

# ---- the backend: NGINX serving three small JSON documents ----------------

mkdir -p "$TMP/www"
"$PYTHON" - "$TMP/www" <<'EOF'
import json, sys
d = sys.argv[1]
docs = {
    "a": {"user": {"id": "u-1042", "name": "Ada Lovelace", "tier": "gold",
                   "email": "ada@example.com", "locale": "en-GB",
                   "created_at": "2024-03-01T09:30:00Z"},
          "flags": {"beta": True, "newsletter": False}, "score": 98.5,
          "address": {"city": "London", "country": "GB"}},
    "b": {"orders": [{"id": 5001 + i, "status": s, "total": t, "currency": "EUR"}
                     for i, (s, t) in enumerate([("shipped", 32.25), ("paid", 7.5),
                                                 ("open", 120.0)])],
          "count": 3, "next": None},
    "c": {"recommendations": [{"sku": f"SKU-{100 + i}", "title": f"Item {i}",
                               "price": 9.99 + i, "tags": ["new", "sale"][: i % 3]}
                              for i in range(4)],
          "model": "v7", "generated_at": "2026-12-04T10:00:00Z"},
}
for name, doc in docs.items():
    body = json.dumps(doc, separators=(",", ":")) + "\n"
    assert 200 <= len(body) <= 500, (name, len(body))
    with open(f"{d}/{name}.json", "w", encoding="utf-8") as f:
        f.write(body)
EOF

cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    types { application/json json; }
    client_body_temp_path $TMP/nginx-body;
    proxy_temp_path $TMP/nginx-proxy;
    fastcgi_temp_path $TMP/nginx-fastcgi;
    uwsgi_temp_path $TMP/nginx-uwsgi;
    scgi_temp_path $TMP/nginx-scgi;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        root $TMP/www;
        location = /nginx_status { stub_status; } # "accepts": connections opened to it
    }
}
EOF
launch "$TMP/nginx.log" taskset -c "$LOAD_CPU" nginx -p "$TMP" -c "$TMP/nginx.conf" \
    -e "$TMP/nginx.err"
NGINX_PID=$STARTED
wait_http "http://127.0.0.1:$BACKEND_PORT/a.json" "$NGINX_PID" || {
    log_tail "$TMP/nginx.err"
    die "nginx did not start on port $BACKEND_PORT"
}

# ---- ficus: /home aggregates the three; everything else is proxied -------

cat >"$TMP/ficus.yaml" <<EOF
server:
  listen: ["127.0.0.1:$LISTEN_PORT"]
  workers: 1
  drain_delay: 0s
  drain_timeout: 2s
admin:
  listen: "127.0.0.1:$ADMIN_PORT"
target_groups:
  backend:
    targets: ["127.0.0.1:$BACKEND_PORT"]
    # Up to 3 calls per aggregated request in flight: a pool that keeps as
    # many idle connections, so that no run pays for opening connections.
    keepalive: {max_idle: $((3 * CONNS + 16)), idle_timeout: 60s}
routes:
  - name: home
    match: {path: /home}
    aggregate:
      timeout: 1s
      calls:
        - {name: a, target_group: backend, path: /a.json}
        - {name: b, target_group: backend, path: /b.json}
        - {name: c, target_group: backend, path: /c.json}
  - name: plain
    match: {path_prefix: /}
    backends: [{target_group: backend, weight: 100}]
EOF
"$FICUS_BIN" check -c "$TMP/ficus.yaml" >"$TMP/check.log" 2>&1 || {
    cat "$TMP/check.log" >&2
    die "ficus check -c $TMP/ficus.yaml failed"
}
launch "$TMP/ficus.log" taskset -c "$PROXY_CPU" "$FICUS_BIN" run -c "$TMP/ficus.yaml"
FICUS_PID=$STARTED
wait_http "http://127.0.0.1:$LISTEN_PORT/a.json" "$FICUS_PID" || {
    log_tail "$TMP/ficus.log"
    die "ficus did not start on port $LISTEN_PORT"
}

# ---- the answers are right before anything is measured --------------------

for p in home a.json b.json c.json; do
    code=$(curl -s -m 5 -o "$TMP/got-$p" -w '%{http_code}' "http://127.0.0.1:$LISTEN_PORT/$p") ||
        die "GET /$p through ficus failed"
    [[ $code == 200 ]] || die "GET /$p through ficus answered $code: $(head -c 300 "$TMP/got-$p")"
done
"$PYTHON" - "$TMP" <<'EOF' || die "the answers through ficus are not what the backend serves"
import json, sys
d = sys.argv[1]
want = {k: json.load(open(f"{d}/www/{k}.json", encoding="utf-8")) for k in "abc"}
home = json.load(open(f"{d}/got-home", encoding="utf-8"))
assert isinstance(home, dict) and set(home) == {"a", "b", "c"}, f"/home has keys {sorted(home)}"
for k in "abc":
    assert home[k] == want[k], f"/home's {k} is not /{k}.json"
    assert json.load(open(f"{d}/got-{k}.json", encoding="utf-8")) == want[k], f"/{k}.json differs"
EOF
note "checked: /home is {a, b, c} with the three documents; /a.json, /b.json, /c.json proxied as served"

cat >"$TMP/cycle.lua" <<'EOF'
-- wrk: each connection's requests cycle /a.json, /b.json, /c.json
local paths = { "/a.json", "/b.json", "/c.json" }
local i = 0
request = function()
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
end
EOF

# ---- measuring -----------------------------------------------------------

check_alive() {
    alive "$FICUS_PID" || {
        log_tail "$TMP/ficus.log"
        die "ficus DIED during $1"
    }
    alive "$NGINX_PID" || die "nginx DIED during $1"
}

# latency ROUND KIND (agg | plain)
latency() {
    local round=$1 kind=$2 out=$TMP/lat-$1-$2.json paths=(/home)
    [[ $kind == plain ]] && paths=(/a.json /b.json /c.json)
    timeout -k 5 $((CLIENT_MAX_S + 10)) taskset -c "$LOAD_CPU" "$PYTHON" "$HERE/aggregate_client.py" \
        "$LISTEN_PORT" "$ITERATIONS" "$CLIENT_MAX_S" "${paths[@]}" >"$out" ||
        die "the latency client failed ($kind, round $round)"
    check_alive "latency $kind round $round"
    "$PYTHON" - "$out" "$round" "$kind" >>"$RUNS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
r.update(test="latency", round=int(sys.argv[2]), kind=sys.argv[3])
print(json.dumps(r))
EOF
    note "round $round latency $kind: p50 $(jq_field "$out" p50_ms) ms, p99 $(jq_field "$out" p99_ms) ms"
}

jq_field() {
    "$PYTHON" -c 'import json, sys; v = json.load(open(sys.argv[1]))[sys.argv[2]]; print(f"{v:.3f}")' "$1" "$2"
}

# Connections NGINX has accepted so far (its stub_status; this read is one).
backend_accepts() {
    curl -s -m 5 "http://127.0.0.1:$BACKEND_PORT/nginx_status" | awk 'NR == 3 {print $1}'
}

# throughput ROUND KIND (agg | plain)
throughput() {
    local round=$1 kind=$2 out=$TMP/wrk-$1-$2.txt t0 t1 a0 a1 args=("http://127.0.0.1:$LISTEN_PORT/home")
    [[ $kind == plain ]] && args=(-s "$TMP/cycle.lua" "http://127.0.0.1:$LISTEN_PORT/")
    a0=$(backend_accepts)
    t0=$(cpu_ticks "$FICUS_PID")
    timeout -k 5 $((DURATION + WRK_SLACK_S)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" "${args[@]}" >"$out" 2>&1 ||
        die "wrk failed ($kind, round $round): $(tail -n 3 "$out")"
    t1=$(cpu_ticks "$FICUS_PID")
    a1=$(backend_accepts)
    check_alive "wrk $kind round $round"
    "$PYTHON" - "$out" "$round" "$kind" "$((t1 - t0))" "$CLK_TCK" "$((a1 - a0 - 1))" >>"$RUNS" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
def num(pat, default=None):
    m = re.search(pat, text)
    return float(m.group(1)) if m else default
reqs = num(r"(\d+) requests in")
if reqs is None:
    sys.exit("no request count in the wrk output:\n" + text)
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
ticks, hz = int(sys.argv[4]), int(sys.argv[5])
print(json.dumps({"test": "cpu", "round": int(sys.argv[2]), "kind": sys.argv[3],
                  "requests": int(reqs), "rps": num(r"Requests/sec:\s+([\d.]+)"),
                  "non_2xx": int(num(r"Non-2xx or 3xx responses: (\d+)", 0)),
                  "socket_errors": errs, "cpu_ticks": ticks, "clk_tck": hz,
                  "backend_connections_opened": int(sys.argv[6]),
                  "cpu_us_per_request": ticks / hz / reqs * 1e6 if reqs else None}))
EOF
    note "round $round cpu $kind: $(grep -E 'Requests/sec' "$out" | tr -s ' '), ficus $((t1 - t0)) ticks," \
        "$((a1 - a0 - 1)) connections opened to nginx"
}

note "ficus $("$FICUS_BIN" version 2>/dev/null | head -n 1) on CPU $PROXY_CPU; nginx, wrk and the client on CPU $LOAD_CPU"
note "warming up (${WARMUP}s each)"
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$LISTEN_PORT/home" >/dev/null 2>&1 || true
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$TMP/cycle.lua" \
    "http://127.0.0.1:$LISTEN_PORT/" >/dev/null 2>&1 || true
check_alive "the warm-up"

for ((round = 1; round <= ROUNDS; round++)); do
    # Interleaved, the order swapped every round so that neither kind always
    # runs first (drift of the machine shows as spread, not as a bias).
    order=(agg plain)
    ((round % 2 == 0)) && order=(plain agg)
    for kind in "${order[@]}"; do latency "$round" "$kind"; done
    for kind in "${order[@]}"; do throughput "$round" "$kind"; done
done

# ---- the report ------------------------------------------------------------

mkdir -p "$HERE/results"
RESULT=$HERE/results/aggregate-$(date -u +%Y%m%dT%H%M%SZ).json
"$PYTHON" - "$RUNS" "$RESULT" "$("$FICUS_BIN" version 2>/dev/null | head -n 1)" \
    "$(nginx -v 2>&1 | head -n 1)" "$(wrk -v 2>&1 | head -n 1)" <<EOF
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rounds = sorted({r["round"] for r in runs})
def get(test, kind, rnd):
    return next(r for r in runs if r["test"] == test and r["kind"] == kind and r["round"] == rnd)
def med(xs):
    return statistics.median(xs)
def per_round(f):
    return [f(r) for r in rounds]
lat = {k: {q: per_round(lambda r: get("latency", k, r)[q]) for q in ("p50_ms", "p99_ms")}
       for k in ("agg", "plain")}
cpu = {k: {q: per_round(lambda r: get("cpu", k, r)[q]) for q in ("rps", "cpu_us_per_request")}
       for k in ("agg", "plain")}
# One aggregated request against three plain ones: a plain "iteration" is 3 requests.
cpu_iter = {"agg": cpu["agg"]["cpu_us_per_request"],
            "plain": [3 * x for x in cpu["plain"]["cpu_us_per_request"]]}
ratios = {
    "latency_p50": [a / p for a, p in zip(lat["agg"]["p50_ms"], lat["plain"]["p50_ms"])],
    "latency_p99": [a / p for a, p in zip(lat["agg"]["p99_ms"], lat["plain"]["p99_ms"])],
    "cpu": [a / p for a, p in zip(cpu_iter["agg"], cpu_iter["plain"])],
}
errors = sum(r.get("non_200", 0) + r.get("non_2xx", 0) + r.get("socket_errors", 0) for r in runs)
summary = {
    "agg": {"p50_ms": med(lat["agg"]["p50_ms"]), "p99_ms": med(lat["agg"]["p99_ms"]),
            "rps": med(cpu["agg"]["rps"]), "cpu_us_per_iteration": med(cpu_iter["agg"])},
    "plain3": {"p50_ms": med(lat["plain"]["p50_ms"]), "p99_ms": med(lat["plain"]["p99_ms"]),
               "rps": med(cpu["plain"]["rps"]), "cpu_us_per_iteration": med(cpu_iter["plain"])},
    "ratio_agg_over_plain3": {k: med(v) for k, v in ratios.items()},
    "ratios_per_round": ratios, "errors": errors,
    "backend_connections_opened": {
        k: sum(r["backend_connections_opened"] for r in runs if r["test"] == "cpu" and r["kind"] == k)
        for k in ("agg", "plain")},
}
doc = {"bench": "aggregate", "rounds": len(rounds), "duration_s": $DURATION,
       "iterations": $ITERATIONS, "conns": $CONNS, "proxy_cpu": $PROXY_CPU,
       "load_cpu": $LOAD_CPU, "summary": summary, "runs": runs,
       "versions": {"ficus": sys.argv[3], "nginx": sys.argv[4], "wrk": sys.argv[5]}}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1)
s = summary
print()
print(f"aggregation of 3 calls vs 3 sequential plain calls, medians of {len(rounds)} rounds")
print("| iteration | p50 ms | p99 ms | CPU us / iteration | req/s (wrk -c$CONNS) |")
print("|---|---|---|---|---|")
print(f"| GET /home (aggregate a,b,c) | {s['agg']['p50_ms']:.3f} | {s['agg']['p99_ms']:.3f} "
      f"| {s['agg']['cpu_us_per_iteration']:.1f} | {s['agg']['rps']:.0f} |")
print(f"| GET /a.json, /b.json, /c.json | {s['plain3']['p50_ms']:.3f} | {s['plain3']['p99_ms']:.3f} "
      f"| {s['plain3']['cpu_us_per_iteration']:.1f} | {s['plain3']['rps']:.0f} (x1/3 = "
      f"{s['plain3']['rps'] / 3:.0f} iterations/s) |")
r = s["ratio_agg_over_plain3"]
print(f"| ratio aggregation / 3 plain (paired per round) | {r['latency_p50']:.3f} "
      f"| {r['latency_p99']:.3f} | {r['cpu']:.3f} | |")
print()
print("per-round CPU ratios: " + " ".join(f"{x:.3f}" for x in ratios["cpu"]))
print("per-round p50 ratios: " + " ".join(f"{x:.3f}" for x in ratios["latency_p50"]))
opened = summary["backend_connections_opened"]
print(f"connections opened to nginx during the wrk runs: aggregation {opened['agg']}, "
      f"plain {opened['plain']} (the pool keeps 3 x CONNS + 16 idle: few or none once warm)")
print(f"errors (non-200, non-2xx, socket errors), all runs: {errors}")
print(f"raw numbers: {sys.argv[2]}")
if errors:
    sys.exit(1)
EOF
