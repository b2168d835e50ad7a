#!/usr/bin/env bash
# TLS termination: ficus against HAProxy with the same ECDSA P-256
# certificate, each on one core (CPU 1) with one worker/thread, the load
# (wrk, openssl s_time) and the backends (ficus mock) on the other (CPU 0).
# Interleaved rounds; prints a table of medians (CPU per request or per
# handshake, and its ratio to HAProxy's) and writes the raw numbers to
# bench/results/tls-<timestamp>.json. See bench/README.md.
#
#   bench/tls.sh
#
# Scenarios: ka-small / ka-large (keep-alive HTTPS, 300 B / 16 KiB bodies,
# wrk -c CONNS), full (a new connection and a full handshake per request:
# openssl s_time -new), resumed (a new connection resuming the session per
# request: openssl s_time -reuse).
#
# Environment (defaults in brackets):
#   FICUS_BIN [./ficus]  ROUNDS [5]  DURATION [5] seconds per run  CONNS [50]
#   PROXY_CPU [1]  LOAD_CPU [0]  KEEP_TMP [0]: 1 keeps the temp dir
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# die, note, no_arguments, launch, stop_pid, cpu_ticks ...: bench/lib.sh
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
no_arguments "$@"
FICUS_BIN=${FICUS_BIN:-./ficus}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PYTHON=${PYTHON:-python3}
STARTUP_S=10
WRK_SLACK_S=20
CLK_TCK=$(getconf CLK_TCK)


for tool in wrk haproxy openssl taskset curl timeout "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
for v in ROUNDS DURATION CONNS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((10#${!v} < 1)); then
        die "$v must be a positive integer"
    fi
done
[[ -x $FICUS_BIN ]] || die "no ficus binary at $FICUS_BIN (make ficus, or set FICUS_BIN)"
FICUS_BIN=$(realpath "$FICUS_BIN")

TMP=$(mktemp -d /tmp/ficus-tlsbench.XXXXXX)
RUNS=$TMP/runs.jsonl
: >"$RUNS"

read -r SMALL_PORT LARGE_PORT FICUS_PORT HAP_PORT ADMIN_PORT < <("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')

# The certificate both proxies serve.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null || die "openssl req failed"
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"
head -c 300 /dev/zero | tr '\0' 'a' >"$TMP/small.body"
head -c 16384 /dev/zero | tr '\0' 'b' >"$TMP/large.body"

cat >"$TMP/ficus.yaml" <<EOF
server:
  listen: [{address: "127.0.0.1:$FICUS_PORT", tls: {cert: "$TMP/cert.pem", key: "$TMP/key.pem"}}]
  workers: 1
  drain_delay: 0s
  drain_timeout: 2s
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
access_log: {path: "off"}
target_groups:
  small: {targets: ["127.0.0.1:$SMALL_PORT"], keepalive: {max_idle: 128}}
  large: {targets: ["127.0.0.1:$LARGE_PORT"], keepalive: {max_idle: 128}}
routes:
  - {name: large, match: {path_prefix: /large}, backends: [{target_group: large, weight: 1}]}
  - {name: small, match: {path_prefix: /}, backends: [{target_group: small, weight: 1}]}
EOF
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:$HAP_PORT ssl crt $TMP/haproxy.pem alpn http/1.1
    use_backend large if { path_beg /large }
    default_backend small
backend small
    server s 127.0.0.1:$SMALL_PORT
backend large
    server s 127.0.0.1:$LARGE_PORT
EOF

launch "$TMP/small.log" taskset -c "$LOAD_CPU" "$FICUS_BIN" mock --listen "127.0.0.1:$SMALL_PORT" \
    --body-file "$TMP/small.body" --workers 1 --name small
SMALL_PID=$STARTED
launch "$TMP/large.log" taskset -c "$LOAD_CPU" "$FICUS_BIN" mock --listen "127.0.0.1:$LARGE_PORT" \
    --body-file "$TMP/large.body" --workers 1 --name large
LARGE_PID=$STARTED
wait_http "http://127.0.0.1:$SMALL_PORT/" "$SMALL_PID" || die "mock small did not start"
wait_http "http://127.0.0.1:$LARGE_PORT/" "$LARGE_PID" || die "mock large did not start"
launch "$TMP/ficus.log" taskset -c "$PROXY_CPU" "$FICUS_BIN" run -c "$TMP/ficus.yaml"
FICUS_PID=$STARTED
launch "$TMP/haproxy.log" taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/haproxy.cfg"
HAP_PID=$STARTED
for p in "ficus:$FICUS_PORT:$FICUS_PID" "haproxy:$HAP_PORT:$HAP_PID"; do
    IFS=: read -r name port pid <<<"$p"
    for ((i = 0; ; i++)); do
        alive "$pid" || { log_tail "$TMP/$name.log"; die "$name exited"; }
        curl -sk -o /dev/null -m 1 "https://127.0.0.1:$port/" && break
        ((i < STARTUP_S * 10)) || die "$name did not serve HTTPS on $port"
        sleep 0.1
    done
    # The answers are the backends' bodies.
    [[ $(curl -sk "https://127.0.0.1:$port/large" | wc -c) == 16384 ]] || die "$name /large is wrong"
    [[ $(curl -sk "https://127.0.0.1:$port/x" | wc -c) == 300 ]] || die "$name /x is wrong"
done

# run ROUND SCENARIO PROXY PORT PID: one measurement, a JSON line in $RUNS.
run() {
    local round=$1 scen=$2 name=$3 port=$4 pid=$5 out=$TMP/$2-$3-$1.txt t0 t1
    t0=$(cpu_ticks "$pid")
    case "$scen" in
    ka-small | ka-large)
        local path=/x
        [[ $scen == ka-large ]] && path=/large
        timeout -k 5 $((DURATION + WRK_SLACK_S)) taskset -c "$LOAD_CPU" \
            wrk -t1 -c"$CONNS" -d"${DURATION}s" "https://127.0.0.1:$port$path" >"$out" 2>&1 ||
            die "wrk failed ($scen $name): $(tail -n 3 "$out")"
        ;;
    full | resumed)
        local mode=-new
        [[ $scen == resumed ]] && mode=-reuse
        timeout -k 5 $((DURATION + WRK_SLACK_S)) taskset -c "$LOAD_CPU" \
            openssl s_time -connect "127.0.0.1:$port" -www /x "$mode" -time "$DURATION" \
            >"$out" 2>&1 || die "s_time failed ($scen $name): $(tail -n 3 "$out")"
        ;;
    esac
    t1=$(cpu_ticks "$pid")
    alive "$pid" || { log_tail "$TMP/$name.log"; die "$name died in $scen"; }
    "$PYTHON" - "$out" "$round" "$scen" "$name" "$((t1 - t0))" "$CLK_TCK" >>"$RUNS" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
scen = sys.argv[3]
if scen.startswith("ka-"):
    m = re.search(r"(\d+) requests in", text)
    n = int(m.group(1)) if m else 0
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs += int(m.group(1)) if m else 0
else:
    # s_time: "N connections in T real seconds" for its mode (the last such line)
    ms = re.findall(r"(\d+) connections in [\d.]+s", text)
    n = int(ms[-1]) if ms else 0
    errs = 0
if n == 0:
    sys.exit("nothing measured:\n" + text[-600:])
ticks, hz = int(sys.argv[5]), int(sys.argv[6])
print(json.dumps({"round": int(sys.argv[2]), "scenario": scen, "proxy": sys.argv[4],
                  "count": n, "errors": errs, "cpu_ticks": ticks, "clk_tck": hz,
                  "cpu_us_each": ticks / hz / n * 1e6}))
EOF
    note "round $round $scen $name: $(tail -n 1 "$RUNS")"
}

SCENARIOS=(ka-small ka-large full resumed)
for ((round = 1; round <= ROUNDS; round++)); do
    for scen in "${SCENARIOS[@]}"; do
        if ((round % 2)); then
            run "$round" "$scen" ficus "$FICUS_PORT" "$FICUS_PID"
            run "$round" "$scen" haproxy "$HAP_PORT" "$HAP_PID"
        else
            run "$round" "$scen" haproxy "$HAP_PORT" "$HAP_PID"
            run "$round" "$scen" ficus "$FICUS_PORT" "$FICUS_PID"
        fi
    done
done
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^ficus_tls_handshakes_total' >&2 || true

mkdir -p "$HERE/results"
RESULT=$HERE/results/tls-$(date -u +%Y%m%dT%H%M%SZ).json
"$PYTHON" - "$RUNS" "$RESULT" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
scens = ["ka-small", "ka-large", "full", "resumed"]
unit = {"ka-small": "request", "ka-large": "request", "full": "handshake", "resumed": "handshake"}
table = {}
print("\nTLS: ficus vs HAProxy, the same ECDSA P-256 certificate (medians of %d rounds)"
      % max(r["round"] for r in runs))
print("| scenario | ficus CPU us | HAProxy CPU us | CPU ficus/HAProxy (paired) | ficus n | HAProxy n |")
print("|---|---|---|---|---|---|")
for s in scens:
    f = [r for r in runs if r["scenario"] == s and r["proxy"] == "ficus"]
    h = [r for r in runs if r["scenario"] == s and r["proxy"] == "haproxy"]
    hb = {r["round"]: r for r in h}
    ratio = statistics.median(r["cpu_us_each"] / hb[r["round"]]["cpu_us_each"] for r in f)
    row = {"ficus_cpu_us": statistics.median(r["cpu_us_each"] for r in f),
           "haproxy_cpu_us": statistics.median(r["cpu_us_each"] for r in h),
           "cpu_ratio": ratio,
           "ficus_count": statistics.median(r["count"] for r in f),
           "haproxy_count": statistics.median(r["count"] for r in h),
           "errors": sum(r["errors"] for r in f + h), "per": unit[s]}
    table[s] = row
    print(f"| {s} (per {unit[s]}) | {row['ficus_cpu_us']:.1f} | {row['haproxy_cpu_us']:.1f} | "
          f"{ratio:.3f} | {row['ficus_count']:.0f} | {row['haproxy_count']:.0f} |")
errors = sum(r["errors"] for r in runs)
print(f"errors: {errors}   (n: requests or connections made in one run, median)")
json.dump({"runs": runs, "table": table}, open(sys.argv[2], "w"), indent=1)
print("raw numbers:", sys.argv[2])
sys.exit(1 if errors else 0)
EOF
