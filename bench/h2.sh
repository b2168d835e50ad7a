#!/usr/bin/env bash
# Downstream HTTP/2: ficus against HAProxy's HTTP/2 front end, over TLS (ALPN
# h2, the same ECDSA P-256 certificate) and in cleartext with prior knowledge,
# both proxying to the same NGINX backend over HTTP/1.1 keep-alive (the 300 B
# body of run.sh). Each proxy on one core (CPU 1) with one worker/thread;
# h2load (CLIENTS connections, STREAMS streams each) and the backend on the
# other (CPU 0). Interleaved rounds; prints a table of medians (req/s, CPU per
# request, ficus/HAProxy ratios, h2load's failures) and writes the raw numbers
# to bench/results/h2-<timestamp>.json. See bench/README.md.
#
#   bench/h2.sh
#
# Scenarios: tls (https://, ALPN h2), clear (http://: h2load's prior knowledge),
# upstream (as clear, but each proxy speaks HTTP/2 to the backend too: NGINX's
# second, h2c listener; ficus's target group `protocol: h2`, HAProxy's
# `proto h2` server). The table's "upstream conns" is how many connections
# the proxy held to the backend in the middle of a run: the multiplexing.
#
# Environment (defaults in brackets):
#   FICUS_BIN [./ficus]  ROUNDS [5]  DURATION [5] seconds per run  WARMUP [1]
#   CLIENTS [10] h2load -c  STREAMS [100] h2load -m (streams per connection)
#   MAX_STREAMS [100]: server.http2.max_concurrent_streams of ficus and
#     tune.h2.max-concurrent-streams of HAProxy; "default" leaves both out of
#     the configurations (each proxy's own default, 100 for both)
#   SCENARIOS ["tls clear upstream"]  PROXY_CPU [1]  LOAD_CPU [0]
#   KEEP_TMP [0]: 1 keeps the temp dir (configs, logs, h2load outputs)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# die, note, no_arguments, launch, cpu_ticks, free_ports, bench_cert ...: bench/lib.sh
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
no_arguments "$@"
FICUS_BIN=${FICUS_BIN:-./ficus}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CLIENTS=${CLIENTS:-10}
STREAMS=${STREAMS:-100}
MAX_STREAMS=${MAX_STREAMS:-100}
SCENARIOS=${SCENARIOS:-tls clear upstream}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PYTHON=${PYTHON:-python3}
SMALL_BYTES=300 # run.sh's small body
STARTUP_S=10    # a process that is not serving by then failed to start
H2LOAD_SLACK_S=20 # h2load's own -D bounds it; this is the safety net
CLK_TCK=$(getconf CLK_TCK)

for tool in h2load haproxy nginx openssl taskset curl timeout ss "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
for v in ROUNDS DURATION CLIENTS STREAMS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((10#${!v} < 1)); then
        die "$v must be a positive integer"
    fi
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be a whole number of seconds"
if [[ $MAX_STREAMS != default ]] &&
    { ! [[ $MAX_STREAMS =~ ^[0-9]+$ ]] || ((10#$MAX_STREAMS < 1)); }; then
    die "MAX_STREAMS must be a positive integer or 'default'"
fi
for s in $SCENARIOS; do
    [[ $s == tls || $s == clear || $s == upstream ]] ||
        die "unknown scenario '$s' in SCENARIOS (tls, clear, upstream)"
done
[[ -x $FICUS_BIN ]] || die "no ficus binary at $FICUS_BIN (make ficus, or set FICUS_BIN)"
FICUS_BIN=$(realpath "$FICUS_BIN")
if (($(nproc) < 2)); then
    note "only one CPU: proxy and load share it, numbers mean little"
    PROXY_CPU=0
    LOAD_CPU=0
fi

# CLIENTS x STREAMS requests in flight: as many upstream connections at once
# per proxy, all kept idle between bursts (a smaller pool would reconnect),
# and ficus's circuit breaker limits (1024 by default) raised above it.
INFLIGHT=$((CLIENTS * STREAMS))
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
((NOFILE >= 2 * INFLIGHT + 256)) || die "open-file limit $NOFILE is too low for $INFLIGHT streams"

TMP=$(mktemp -d /tmp/ficus-h2bench.XXXXXX)
chmod 755 "$TMP" # the NGINX worker drops to nobody and must read the body
RUNS=$TMP/runs.jsonl
: >"$RUNS"

read -r BACKEND_PORT BACKEND_H2 FICUS_TLS FICUS_CLEAR HAP_TLS HAP_CLEAR ADMIN_PORT \
    <<<"$(free_ports 7)"
bench_cert "$TMP" # the certificate both proxies serve
# run.sh's small body: its benchmark line repeated, cut at SMALL_BYTES.
for ((i = 0; i < SMALL_BYTES / 58 + 1; i++)); do
    echo "ficus benchmark body 0123456789abcdefghijklmnopqrstuvwxyz"
done | head -c "$SMALL_BYTES" >"$TMP/small.body"

cat >"$TMP/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/backend.pid;
error_log $TMP/backend.err warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((NOFILE - 64)); }
http {
    access_log off;
    keepalive_requests 100000000;
    default_type text/plain;
    client_body_temp_path $TMP/nginx-body;
    proxy_temp_path $TMP/nginx-proxy;
    fastcgi_temp_path $TMP/nginx-fastcgi;
    uwsgi_temp_path $TMP/nginx-uwsgi;
    scgi_temp_path $TMP/nginx-scgi;
    server {
        # every proxy connects up to INFLIGHT times at once when a run starts
        listen 127.0.0.1:$BACKEND_PORT backlog=$((INFLIGHT + 256));
        location = /nginx_status { stub_status; } # "accepts": connections opened to it
        location / { root $TMP; try_files /small.body =404; }
    }
    server {
        # the upstream scenario: HTTP/2 in cleartext (prior knowledge)
        listen 127.0.0.1:$BACKEND_H2 http2 backlog=$((INFLIGHT + 256));
        location / { root $TMP; try_files /small.body =404; }
    }
}
EOF

FICUS_H2=""
HAP_H2=""
if [[ $MAX_STREAMS != default ]]; then
    FICUS_H2="  http2: {max_concurrent_streams: $((10#$MAX_STREAMS))}"
    HAP_H2="    tune.h2.max-concurrent-streams $((10#$MAX_STREAMS))"
fi
cat >"$TMP/ficus.yaml" <<EOF
server:
  listen:
    - {address: "127.0.0.1:$FICUS_TLS", tls: {cert: "$TMP/cert.pem", key: "$TMP/key.pem"}}
    - "127.0.0.1:$FICUS_CLEAR"
  workers: 1
  drain_delay: 0s
  drain_timeout: 2s
$FICUS_H2
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
access_log: {path: "off"}
target_groups:
  backend:
    targets: ["127.0.0.1:$BACKEND_PORT"]
    connect_timeout: 5s # HAProxy's timeout connect
    max_connections: $((2 * INFLIGHT + 64))
    max_pending: $((INFLIGHT + 64))
    max_requests: $((INFLIGHT + 64))
    keepalive: {max_idle: $((INFLIGHT + 64)), idle_timeout: 60s}
  backend_h2:
    targets: ["127.0.0.1:$BACKEND_H2"]
    protocol: h2
    connect_timeout: 5s
    max_connections: $((INFLIGHT + 64))
    max_pending: $((INFLIGHT + 64))
    max_requests: $((INFLIGHT + 64))
    keepalive: {max_idle: 64, idle_timeout: 60s}
routes:
  - {name: h2up, match: {path_prefix: /h2up/}, backends: [{target_group: backend_h2, weight: 1}]}
  - {name: all, match: {path_prefix: /}, backends: [{target_group: backend, weight: 1}]}
EOF
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    # HAProxy keeps idle server connections only while its descriptors in use
    # stay under 20-25% of what maxconn sizes (tune.pool-low/high-fd-ratio):
    # maxconn must leave room for INFLIGHT idle ones, or it reconnects all the
    # time. A hard descriptor limit below that size must not stop it.
    maxconn $((4 * INFLIGHT + 256))
    no strict-limits
    ssl-default-bind-options ssl-min-ver TLSv1.2
$HAP_H2
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$HAP_TLS ssl crt $TMP/haproxy.pem alpn h2,http/1.1
    bind 127.0.0.1:$HAP_CLEAR proto h2
    use_backend be_h2 if { path_beg /h2up/ }
    default_backend be
backend be
    server s 127.0.0.1:$BACKEND_PORT
backend be_h2
    server s2 127.0.0.1:$BACKEND_H2 proto h2
EOF

launch "$TMP/backend.log" taskset -c "$LOAD_CPU" nginx -p "$TMP" -c "$TMP/backend.conf" \
    -e "$TMP/backend.err"
BACKEND_PID=$STARTED
BACKEND_STATUS=http://127.0.0.1:$BACKEND_PORT/nginx_status
wait_http "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID" || {
    log_tail "$TMP/backend.err"
    die "the NGINX backend did not start"
}
"$FICUS_BIN" check -c "$TMP/ficus.yaml" >"$TMP/ficus.log" 2>&1 || {
    log_tail "$TMP/ficus.log"
    die "ficus check -c $TMP/ficus.yaml failed"
}
launch "$TMP/ficus.log" taskset -c "$PROXY_CPU" "$FICUS_BIN" run -c "$TMP/ficus.yaml"
FICUS_PID=$STARTED
launch "$TMP/haproxy.log" taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg"
HAP_PID=$STARTED

# Each proxy answers HTTP/2 with the backend's body on both listeners.
for p in "ficus:$FICUS_TLS:$FICUS_CLEAR:$FICUS_PID" "haproxy:$HAP_TLS:$HAP_CLEAR:$HAP_PID"; do
    IFS=: read -r name tport cport pid <<<"$p"
    for ((i = 0; ; i++)); do
        alive "$pid" || { log_tail "$TMP/$name.log"; die "$name exited"; }
        curl -sk -o /dev/null -m 1 "https://127.0.0.1:$tport/" && break
        ((i < STARTUP_S * 10)) || die "$name did not serve HTTPS on $tport"
        sleep 0.1
    done
    got=$(curl -sk --http2 -o /dev/null -m 5 -w '%{http_version} %{http_code} %{size_download}' \
        "https://127.0.0.1:$tport/x") || got="curl-failed"
    [[ $got == "2 200 $SMALL_BYTES" ]] ||
        die "$name over TLS: got '$got', want '2 200 $SMALL_BYTES'"
    got=$(curl -s --http2-prior-knowledge -o /dev/null -m 5 \
        -w '%{http_version} %{http_code} %{size_download}' "http://127.0.0.1:$cport/x") ||
        got="curl-failed"
    [[ $got == "2 200 $SMALL_BYTES" ]] ||
        die "$name in cleartext: got '$got', want '2 200 $SMALL_BYTES'"
    got=$(curl -s --http2-prior-knowledge -o /dev/null -m 5 \
        -w '%{http_version} %{http_code} %{size_download}' "http://127.0.0.1:$cport/h2up/x") ||
        got="curl-failed"
    [[ $got == "2 200 $SMALL_BYTES" ]] ||
        die "$name, HTTP/2 to the backend: got '$got', want '2 200 $SMALL_BYTES'"
done

# h2load_url SCENARIO PROXY
h2load_url() {
    case "$1-$2" in
    tls-ficus) echo "https://127.0.0.1:$FICUS_TLS/x" ;;
    tls-haproxy) echo "https://127.0.0.1:$HAP_TLS/x" ;;
    clear-ficus) echo "http://127.0.0.1:$FICUS_CLEAR/x" ;;
    clear-haproxy) echo "http://127.0.0.1:$HAP_CLEAR/x" ;;
    upstream-ficus) echo "http://127.0.0.1:$FICUS_CLEAR/h2up/x" ;;
    upstream-haproxy) echo "http://127.0.0.1:$HAP_CLEAR/h2up/x" ;;
    esac
}

# h2load_run OUT SECONDS URL
h2load_run() {
    timeout -k 5 $(($2 + H2LOAD_SLACK_S)) taskset -c "$LOAD_CPU" \
        h2load -t 1 -c "$CLIENTS" -m "$STREAMS" -D "$2" "$3" >"$1" 2>&1
}

# run ROUND SCENARIO PROXY PID: one measurement, a JSON line in $RUNS.
run() {
    local round=$1 scen=$2 name=$3 pid=$4 out=$TMP/$2-$3-$1.txt t0 t1 c0 c1 a0 a1 rc=0
    local port=$BACKEND_PORT sampler
    [[ $scen == upstream ]] && port=$BACKEND_H2
    a0=$(nginx_accepts "$BACKEND_STATUS")
    t0=$(cpu_ticks "$pid")
    c0=$(cpu_core_ticks "$PROXY_CPU")
    # The proxy's connections to the backend, halfway through the run.
    (sleep "$(awk -v d="$DURATION" 'BEGIN {print d / 2}')"
        ss -Htn state established "( dport = :$port )" | wc -l >"$out.conns") &
    sampler=$!
    h2load_run "$out" "$DURATION" "$(h2load_url "$scen" "$name")" || rc=$?
    wait "$sampler" || true
    t1=$(cpu_ticks "$pid")
    c1=$(cpu_core_ticks "$PROXY_CPU")
    a1=$(nginx_accepts "$BACKEND_STATUS")
    alive "$pid" || { log_tail "$TMP/$name.log"; die "$name died in $scen (round $round)"; }
    ((rc == 0)) || die "h2load failed ($scen $name, status $rc): $(tail -n 5 "$out")"
    "$PYTHON" - "$out" "$round" "$scen" "$name" "$((t1 - t0))" "$CLK_TCK" "$DURATION" \
        "$c0" "$c1" "$((a1 - a0 - 1))" "$(cat "$out.conns" 2>/dev/null || echo -1)" \
        >>"$RUNS" <<'EOF'
import json, re, sys
out, rnd, scen, name, ticks, hz, dur = sys.argv[1:8]
backend_conns = int(sys.argv[10])
held_conns = int(sys.argv[11])
b0, n0 = map(int, sys.argv[8].split())
b1, n1 = map(int, sys.argv[9].split())
text = open(out).read()
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
              r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
if not m:
    sys.exit(f"{out}: no h2load summary:\n" + text[-600:])
total, started, done, ok, failed, errored, timeout = map(int, m.groups())
st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
codes = dict(zip(("2xx", "3xx", "4xx", "5xx"), map(int, st.groups()))) if st else {}
proto = re.search(r"Application protocol: (\S+)", text)
proto = proto.group(1) if proto else "?"
fin = re.search(r"finished in ([\d.]+)s", text)
secs = float(fin.group(1)) if fin else float(dur)
ticks, hz = int(ticks), int(hz)
bad = failed + errored + timeout + sum(v for k, v in codes.items() if k != "2xx")
# over TLS ALPN must have chosen h2; in cleartext h2load says h2c
want = "h2" if scen == "tls" else "h2c"
busy, tot = b1 - b0, n1 - n0
row = {"round": int(rnd), "scenario": scen, "proxy": name, "protocol": proto,
       "requests": ok, "total": total, "started": started, "done": done,
       "failed": failed, "errored": errored, "timeout": timeout, "status": codes,
       "seconds": secs, "req_s": ok / secs if secs else 0.0,
       "cpu_ticks": ticks, "clk_tck": hz, "backend_conns_opened": backend_conns,
       "backend_conns_held": held_conns,
       "cpu_us_per_req": ticks / hz / ok * 1e6 if ok else None,
       # the proxy core's busy time that was not the proxy's, in % of the run
       "others_pct": max(0.0, (busy - ticks) / tot * 100) if tot else 0.0,
       "flagged": bad > 0 or proto != want or ok == 0}
print(json.dumps(row))
EOF
    local line
    line=$(tail -n 1 "$RUNS")
    note "round $round $scen $name: $line"
    if [[ $line == *'"flagged": true'* ]]; then
        note "round $round $scen $name FLAGGED: h2load said:"
        grep -E '^(Application protocol|requests|status codes|traffic):' "$out" >&2 || true
        grep -viE '^(Application protocol|requests|status codes|traffic):' "$out" |
            grep -iE 'error|fail|reset|goaway|refused|timeout' | head -n 10 >&2 || true
    fi
}

read -ra SCEN <<<"$SCENARIOS"
note "ficus pid $FICUS_PID, haproxy pid $HAP_PID (CPU $PROXY_CPU); NGINX backend pid" \
    "$BACKEND_PID and h2load (-c $CLIENTS -m $STREAMS) on CPU $LOAD_CPU;" \
    "max_concurrent_streams: $MAX_STREAMS"
if ((WARMUP > 0)); then
    for scen in "${SCEN[@]}"; do
        for name in ficus haproxy; do
            out=$TMP/warmup-$scen-$name.txt
            h2load_run "$out" "$WARMUP" "$(h2load_url "$scen" "$name")" ||
                die "h2load warm-up failed ($scen $name): $(tail -n 5 "$out")"
        done
    done
fi
for ((round = 1; round <= ROUNDS; round++)); do
    for scen in "${SCEN[@]}"; do
        if ((round % 2)); then
            run "$round" "$scen" ficus "$FICUS_PID"
            run "$round" "$scen" haproxy "$HAP_PID"
        else
            run "$round" "$scen" haproxy "$HAP_PID"
            run "$round" "$scen" ficus "$FICUS_PID"
        fi
    done
done
METRICS=$(curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
    grep -E '^ficus_(http2_protocol_errors_total|tls_handshakes_total)' || true)
[[ -n $METRICS ]] && echo "$METRICS" >&2
# metric_sum NAME [LABEL-REGEX]: the sum of NAME's series (those matching).
metric_sum() {
    awk -v m="$1" -v l="${2:-}" 'index($1, m "{") == 1 && $1 ~ l {s += $NF}
        END {printf "%d\n", s}' <<<"$METRICS"
}

mkdir -p "$HERE/results"
RESULT=$HERE/results/h2-$(date -u +%Y%m%dT%H%M%SZ).json
"$PYTHON" - "$RUNS" "$RESULT" "$SCENARIOS" \
    "rounds=$ROUNDS" "duration_s=$DURATION" "clients=$CLIENTS" "streams=$STREAMS" \
    "max_concurrent_streams=$MAX_STREAMS" "body_bytes=$SMALL_BYTES" \
    "ficus_http2_protocol_errors=$(metric_sum ficus_http2_protocol_errors_total)" \
    "ficus_tls_handshakes_ok=$(metric_sum ficus_tls_handshakes_total 'result="ok"')" \
    "proxy_cpu=$PROXY_CPU" "load_cpu=$LOAD_CPU" \
    "ficus=$("$FICUS_BIN" version 2>/dev/null | head -n 1)" \
    "haproxy=$(haproxy -v 2>/dev/null | head -n 1)" \
    "nginx=$(nginx -v 2>&1 | head -n 1)" \
    "h2load=$(h2load --version 2>/dev/null | head -n 1)" \
    "kernel=$(uname -r)" "nproc=$(nproc)" \
    "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
scens = sys.argv[3].split()
meta = dict(a.split("=", 1) for a in sys.argv[4:])
med = statistics.median
print("\nHTTP/2: ficus vs HAProxy, h2load -c %s -m %s, %s B body, max_concurrent_streams %s"
      " (medians of %s rounds)" % (meta["clients"], meta["streams"], meta["body_bytes"],
                                   meta["max_concurrent_streams"], meta["rounds"]))
print("| scenario | proxy | req/s | CPU us/req | failed | errored | timeout | non-2xx | "
      "flagged rounds | backend conns | upstream conns | others |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
table, flagged = {}, []
for s in scens:
    rows = {}
    for p in ("ficus", "haproxy"):
        rs = [r for r in runs if r["scenario"] == s and r["proxy"] == p]
        fl = [r["round"] for r in rs if r["flagged"]]
        flagged += [f"{s}/{p} round {n}" for n in fl]
        cpu = [r["cpu_us_per_req"] for r in rs if r["cpu_us_per_req"] is not None]
        row = {"req_s": med(r["req_s"] for r in rs), "cpu_us_per_req": med(cpu) if cpu else None,
               "failed": sum(r["failed"] for r in rs), "errored": sum(r["errored"] for r in rs),
               "timeout": sum(r["timeout"] for r in rs),
               "non_2xx": sum(v for r in rs for k, v in r["status"].items() if k != "2xx"),
               "flagged_rounds": fl, "others_pct_median": med(r["others_pct"] for r in rs),
               "others_pct_max": max(r["others_pct"] for r in rs),
               "backend_conns_opened": med(r["backend_conns_opened"] for r in rs),
               "backend_conns_held": med(r["backend_conns_held"] for r in rs)}
        rows[p] = row
        cpu_s = f"{row['cpu_us_per_req']:.2f}" if cpu else "-"
        print(f"| {s} | {p} | {row['req_s']:.0f} | {cpu_s} | {row['failed']} | "
              f"{row['errored']} | {row['timeout']} | {row['non_2xx']} | "
              f"{' '.join(map(str, fl)) or '-'} | {row['backend_conns_opened']:.0f} | "
              f"{row['backend_conns_held']:.0f} | "
              f"{row['others_pct_median']:.0f}/{row['others_pct_max']:.0f}% |")
    hb = {r["round"]: r for r in runs if r["scenario"] == s and r["proxy"] == "haproxy"}
    fr = [r for r in runs if r["scenario"] == s and r["proxy"] == "ficus" and r["round"] in hb]
    rq = [r["req_s"] / hb[r["round"]]["req_s"] for r in fr if hb[r["round"]]["req_s"]]
    cp = [r["cpu_us_per_req"] / hb[r["round"]]["cpu_us_per_req"] for r in fr
          if r["cpu_us_per_req"] and hb[r["round"]]["cpu_us_per_req"]]
    rows["ratio"] = {"req_s": med(rq) if rq else None, "cpu_per_req": med(cp) if cp else None,
                     "req_s_rounds": rq, "cpu_per_req_rounds": cp}
    table[s] = rows
print()
def fmt(v):
    return "-" if v is None else f"{v:.3f}"
for s in scens:
    r = table[s]["ratio"]
    rounds = " ".join(f"{x:.3f}" for x in r["cpu_per_req_rounds"])
    print(f"{s}: ficus/HAProxy req/s {fmt(r['req_s'])}, CPU per request {fmt(r['cpu_per_req'])}"
          f" (paired per round; CPU per round: {rounds})")
print("CPU us/req: the proxy's CPU (all threads) over the run / requests h2load counted"
      " succeeded; backend conns: connections opened to NGINX in a run (median);\n"
      "upstream conns: connections the proxy held to NGINX halfway through a run (median);\n"
      "others: the share of the proxy core other processes used during a run (median/max)")
perrs = int(meta["ficus_http2_protocol_errors"])
print(f"ficus_http2_protocol_errors_total: {perrs}; TLS handshakes: "
      f"{meta['ficus_tls_handshakes_ok']}")
if perrs:
    flagged.append(f"ficus counted {perrs} HTTP/2 protocol errors")
if flagged:
    print("FLAGGED (failed, errored, timed out or non-2xx requests, or not HTTP/2): "
          + ", ".join(flagged))
json.dump({"meta": meta, "runs": runs, "table": table}, open(sys.argv[2], "w"), indent=1)
print("raw numbers:", sys.argv[2])
sys.exit(1 if flagged else 0)
EOF
