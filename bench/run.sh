#!/usr/bin/env bash
# ficus vs HAProxy vs NGINX on loopback: each proxy on one core (CPU 1) with one
# worker, wrk and the mock backend sharing the other core (CPU 0). Prints a table
# of medians over interleaved rounds and writes the raw numbers to
# bench/results/<timestamp>.json. See bench/README.md.
#
#   bench/run.sh [throughput|full|memory|all|trace]      (default: throughput)
#
# Environment (defaults in brackets):
#   FICUS_BIN [./ficus]  DURATION [5] seconds per run  ROUNDS [5]  CONNS [50]
#   WARMUP [1] seconds   BACKEND [nginx]: nginx (static file), ficus (ficus mock)
#     or both (the whole run once per backend, one table each)
#   PROXIES ["ficus haproxy nginx"]  MEM_CONNS [10000]  PROXY_CPU [1]  LOAD_CPU [0]
#     "base" in PROXIES runs FICUS_BASE_BIN (another ficus build, e.g. the one
#     before a change) with the same config, in the same interleaved rounds
#   NOISE_MAX_PCT [5] NOISE_RETRIES [2]: a run during which other processes used
#     more than 5% of a core is measured again, at most twice
#   KEEP_TMP [0]: 1 keeps the temp dir (configs, logs, wrk outputs)
#   SHADOW_PERCENT [10]: small-shadow's shadow.percent (1-100)
#   SCENARIOS [all of the mode's]: the scenarios to run, e.g. "small large", or
#     "small-key small-jwt small-rl" (edge security: API key, RS256 JWT, rate limit),
#     or "small-shadow" (shadow copies of 10% of the requests, compared), or
#     "small-hedge" (hedging armed, after 1s: it never fires), or
#     "small-reload" (a reload block, no reload happening)
set -euo pipefail

MODE=${1:-throughput}
case "$MODE" in
throughput | full | memory | all | trace) ;;
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: bench/run.sh [throughput|full|memory|all|trace]" >&2
    exit 2
    ;;
esac

HERE=$(cd "$(dirname "$0")" && pwd)
FICUS_BIN=${FICUS_BIN:-./ficus}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-50}
WARMUP=${WARMUP:-1}
NOISE_MAX_PCT=${NOISE_MAX_PCT:-5}
NOISE_RETRIES=${NOISE_RETRIES:-2}
BACKEND=${BACKEND:-nginx}
if [[ $BACKEND == both ]]; then
    # The ratios between proxies depend on the backend (bench/README.md): one
    # whole run per backend, each with its own table and JSON.
    rc=0
    for b in nginx ficus; do
        echo "==== backend: $b"
        BACKEND=$b "$0" "$@" || rc=$?
    done
    exit "$rc"
fi
PROXIES=${PROXIES:-ficus haproxy nginx}
MEM_CONNS=${MEM_CONNS:-10000}
SHADOW_PERCENT=${SHADOW_PERCENT:-10} # small-shadow: the share of the requests copied
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PYTHON=${PYTHON:-python3}
SMALL_BYTES=300
LARGE_BYTES=16384
STARTUP_S=10                  # a process that is not serving by then failed to start
WRK_SLACK_S=20                # wrk's own -d bounds it; this is the safety net
MEM_CLIENT_S=$((60 + MEM_CONNS / 100)) # the idle-connection client gives up after this

# die, note, launch, stop_pid, cpu_ticks ...: bench/lib.sh
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

for tool in wrk taskset curl "$PYTHON"; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
for p in $PROXIES; do
    case "$p" in
    ficus) ;;
    base) [[ -x ${FICUS_BASE_BIN:-} ]] || die "PROXIES has base: set FICUS_BASE_BIN to a ficus binary" ;;
    haproxy | nginx) command -v "$p" >/dev/null || die "$p is required (or drop it from PROXIES)" ;;
    *) die "unknown proxy '$p' in PROXIES" ;;
    esac
done
[[ $BACKEND == ficus || $BACKEND == nginx ]] || die "BACKEND must be nginx, ficus or both"
if ! [[ $SHADOW_PERCENT =~ ^[0-9]{1,3}$ ]] || ((10#$SHADOW_PERCENT < 1 || 10#$SHADOW_PERCENT > 100)); then
    die "SHADOW_PERCENT must be an integer from 1 to 100"
fi
SHADOW_PERCENT=$((10#$SHADOW_PERCENT))
[[ $BACKEND == nginx ]] && { command -v nginx >/dev/null || die "BACKEND=nginx needs nginx"; }
[[ -x $FICUS_BIN ]] || die "no ficus binary at $FICUS_BIN (make ficus, or set FICUS_BIN)"
FICUS_BIN=$(realpath "$FICUS_BIN")
if (($(nproc) < 2)); then
    note "only one CPU: proxy and load share it, numbers mean little"
    PROXY_CPU=0
    LOAD_CPU=0
fi

# 10k idle connections need 10k descriptors in the client and in each proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

TMP=$(mktemp -d /tmp/ficus-bench.XXXXXX)
chmod 755 "$TMP" # nginx workers drop to nobody and must reach their temp paths
RUNS=$TMP/runs.jsonl
MEMS=$TMP/memory.jsonl
: >"$RUNS"
: >"$MEMS"




# Stops a proxy and says so when it did not exit cleanly on SIGTERM.
stop_proxy() {
    local tag=$1 pid=$2
    stop_pid "$pid"
    if ((STOP_KILLED)); then
        note "$tag did not exit within 5 s of SIGTERM; killed"
    elif ((STOP_RC != 0 && STOP_RC != 143)); then
        note "$tag exited with status $STOP_RC on SIGTERM"
        log_tail "$TMP/$tag.log"
    fi
}



free_ports() {
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}



# VmRSS in KiB of PID and its children.
rss_kib() {
    local sum=0 p v
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

# "busy total" ticks of one CPU from /proc/stat. busy counts irq and softirq
# because the kernel also charges them to the process they interrupted (our
# proxy's stime includes loopback softirq work), and steal: time the hypervisor
# gave to other guests is lost to us too.
cpu_core_ticks() {
    awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9,
        $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

# Children's user+system CPU, in clock ticks, from the output of `times`.
children_ticks() {
    awk -v hz="$CLK_TCK" 'NR == 2 {split($1, u, /[ms]/); split($2, k, /[ms]/)
        printf "%d\n", (u[1] * 60 + u[2] + k[1] * 60 + k[2]) * hz + 0.5}' "$1"
}


# ---- configs -----------------------------------------------------------

# The bodies the backends serve: small.body and large.body (text), and
# small.json, a JSON document of about SMALL_BYTES (an order with nested objects,
# arrays, numbers, true and null) for small-shadow, so that its comparison
# parses and compares JSON values as it would for an API.
make_bodies() {
    "$PYTHON" - "$TMP" "$SMALL_BYTES" "$LARGE_BYTES" <<'EOF'
import json, sys
d, small, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = b"ficus benchmark body 0123456789abcdefghijklmnopqrstuvwxyz\n"
for name, n in (("small", small), ("large", large)):
    with open(f"{d}/{name}.body", "wb") as f:
        f.write((line * (n // len(line) + 1))[:n])
order = {"id": 1042, "status": "shipped",
         "customer": {"id": "c-7701", "name": "Ada Lovelace", "tier": "gold"},
         "items": [{"sku": "A-100", "qty": 2, "price": 12.5, "tags": ["fragile"]},
                   {"sku": "B-220", "qty": 1, "price": 7.25, "tags": []}],
         "total": 32.25, "currency": "EUR", "paid": True, "coupon": None,
         "created_at": "2026-12-04T10:00:00Z"}
with open(f"{d}/small.json", "w", encoding="utf-8") as f:
    f.write(json.dumps(order, separators=(",", ":")) + "\n")  # 300 bytes
EOF
}

# The credentials of the edge scenarios, made anew for each run: an API key
# (BENCH_KEY, its sha-256 in BENCH_KEY_SHA256), and an RSA-2048 key whose JWKS
# goes to $TMP/jwks.json with a token it signed in BENCH_JWT (RS256, kid as in
# the JWKS, iss/aud as ficus_paired_yaml configures, exp a day away). The JWT
# needs python3-cryptography (through tests/integration/harness/tokens.py);
# without it BENCH_JWT stays empty and small-jwt is skipped.
BENCH_JWT_ISSUER=https://id.bench
BENCH_JWT_AUDIENCE=bench
BENCH_RATE=1000000 # requests per second and burst: far above one core's rate
BENCH_KEY=""
BENCH_KEY_SHA256=""
BENCH_JWT=""
make_credentials() {
    read -r BENCH_KEY BENCH_KEY_SHA256 < <("$PYTHON" -c '
import hashlib, secrets
k = secrets.token_hex(24)
print(k, hashlib.sha256(k.encode()).hexdigest())')
    [[ -n $BENCH_KEY_SHA256 ]] || die "could not make the bench API key"
    if ! BENCH_JWT=$("$PYTHON" - "$HERE/../tests/integration/harness" "$TMP/jwks.json" \
        "$BENCH_JWT_ISSUER" "$BENCH_JWT_AUDIENCE" 2>"$TMP/jwt.err" <<'EOF'
import sys, time
sys.path.insert(0, sys.argv[1])
import tokens
key = tokens.Key("RS256", "bench-rs256")
with open(sys.argv[2], "w", encoding="utf-8") as f:
    f.write(tokens.jwks(key))
print(tokens.token(key, iss=sys.argv[3], aud=sys.argv[4], sub="bench-user",
                   exp=int(time.time()) + 86400))
EOF
    ) || [[ -z $BENCH_JWT ]]; then
        note "could not make the bench JWT (python3-cryptography?); small-jwt is skipped:"
        tail -n 3 "$TMP/jwt.err" >&2 || true
        BENCH_JWT=""
    fi
}

# ficus_yaml_head FILE LISTEN_PORT ADMIN_PORT BACKEND_PORT ACCESS_LOG MAX_CONNS IDLE:
# what every ficus configuration of the bench starts with (written anew).
ficus_yaml_head() {
    cat >"$1" <<EOF
server:
  listen: ["127.0.0.1:$2"]
  workers: 1
  max_connections: $6
  idle_timeout: $7
  drain_delay: 0s     # the bench stops it with SIGTERM between scenarios
  drain_timeout: 2s
admin:
  listen: "127.0.0.1:$3"
access_log:
  path: $5
EOF
}

# ficus_yaml FILE LISTEN_PORT ADMIN_PORT BACKEND_PORT ACCESS_LOG MAX_CONNS IDLE [RESILIENCE]
# RESILIENCE=1: the route has retries and a 90/10 split whose canary falls back
# to the primary; both groups are the same backend, so nothing fails and the
# run measures what the machinery costs.
ficus_yaml() {
    if ((${8:-0} >= 5)); then
        ficus_paired_yaml "$@"
        return
    fi
    if [[ ${8:-0} == 3 ]]; then
        ficus_full_yaml "$@"
        return
    fi
    if [[ ${8:-0} == 2 ]]; then
        # Tracing at sample_ratio 1.0 to a live collector (a ficus mock on the
        # load core that answers 200): every request exports two spans.
        ficus_yaml "$1" "$2" "$3" "$4" "$5" "$6" "$7" 0
        cat >>"$1" <<EOF
tracing:
  otlp_endpoint: "http://127.0.0.1:$COLLECTOR_PORT/v1/traces"
  sample_ratio: 1.0
EOF
        return
    fi
    if [[ ${8:-0} == 1 ]]; then
        ficus_yaml_head "$@"
        cat >>"$1" <<EOF
target_groups:
  primary:
    targets: ["127.0.0.1:$4"]
    keepalive: {max_idle: 64, idle_timeout: 60s}
    outlier_detection: {consecutive_errors: 5}
  canary:
    targets: ["127.0.0.1:$4"]
    keepalive: {max_idle: 64, idle_timeout: 60s}
    outlier_detection: {consecutive_errors: 5}
routes:
  - name: all
    match: {path_prefix: /}
    retries: {attempts: 2, per_try_timeout: 4s, retry_on: [5xx, connect-failure], backoff: 25ms}
    backends:
      - {target_group: primary, weight: 90}
      - {target_group: canary, weight: 10, fallback: primary}
EOF
        return
    fi
    ficus_plain_yaml "$@"
}

# ficus_plain_yaml FILE ... [MODE]: plain ficus, one group and one route.
# MODE 8 (small-shadow) adds the group the copies go to: the same backend,
# with a pool of its own, as a new service beside the old one would have.
ficus_plain_yaml() {
    ficus_yaml_head "$@"
    local groups=(backend) group
    [[ ${8:-0} == 8 ]] && groups+=(shadow)
    echo "target_groups:" >>"$1"
    for group in "${groups[@]}"; do
        cat >>"$1" <<EOF
  $group:
    targets: ["127.0.0.1:$4"]
    keepalive: {max_idle: 64, idle_timeout: 60s}
EOF
    done
    cat >>"$1" <<EOF
routes:
  - name: all
    match: {path_prefix: /}
    backends: [{target_group: backend, weight: 100}]
EOF
}

# ficus_paired_yaml FILE ... MODE: plain ficus's configuration plus one step
# on its route, measured against plain ficus (PAIRED_MODE). The edge security
# steps (scenarios small-key, small-jwt, small-rl; make_credentials makes the
# key and the token) are configured so that every bench request passes them.
# MODE 5: an API key is required (X-Api-Key, known by its sha-256); 6: an
# RS256 bearer JWT is required (the worker verifies the token once, then finds
# it in its cache); 7: a local rate limit by ip far above what one core can
# serve, so that it never trips; 8 (small-shadow): SHADOW_PERCENT (10%) of
# the requests are copied to the group "shadow" (the same backend) and its
# answers compared with the client's (status and body; the body is JSON, so
# compared as values); 9 (small-hedge): hedging armed after 1s, which a
# loopback answer never reaches, so what is measured is the armed timer and
# the per-request cap bookkeeping; 10 (small-reload): a top-level reload
# block and no reload: what is measured is the check for a trial generation
# and the disarmed figures' compare (requests are counted during a trial only).
ficus_paired_yaml() {
    ficus_plain_yaml "$@"
    case "$8" in
    5)
        cat >>"$1" <<EOF
    auth: {client: required}
clients:
  - id: bench
    api_keys_sha256: ["$BENCH_KEY_SHA256"]
EOF
        ;;
    6)
        cat >>"$1" <<EOF
    auth: {user: {provider: main, required: true}}
jwt_providers:
  main:
    issuer: "$BENCH_JWT_ISSUER"
    audiences: ["$BENCH_JWT_AUDIENCE"]
    jwks_file: $TMP/jwks.json
    algorithms: [RS256]
    forward_claims: {sub: X-User-Id}
EOF
        ;;
    7)
        cat >>"$1" <<EOF
    rate_limit: {requests_per_second: $BENCH_RATE, burst: $BENCH_RATE, by: ip, scope: local}
EOF
        ;;
    10)
        cat >>"$1" <<EOF
reload: {canary_percent: 10, bake: 30s, min_requests: 100}
EOF
        ;;
    9)
        cat >>"$1" <<EOF
    retries: {attempts: 0, retry_on: [5xx], hedge: {after: 1s, max_percent: 5}}
EOF
        ;;
    8)
        cat >>"$1" <<EOF
    shadow:
      target_group: shadow
      percent: $SHADOW_PERCENT
      compare: {}
EOF
        ;;
    *) die "ficus_paired_yaml: unknown mode $8" ;;
    esac
}

# The full profile (scenarios full-small, full-large), the same job in each
# proxy: four routes tried in order (a regex route, two prefix routes, and the
# catch-all that wrk requests, so every request runs the regex and two prefix
# tests first); the catch-all splits 90/10 between two groups with the canary
# falling back to the primary, has retries armed and rewrites request headers;
# the access log is on, to a file; metrics are scraped once a second. Both
# groups are the same backend, so nothing fails: what is measured is the cost
# of the machinery when all is well.
ficus_full_yaml() {
    ficus_yaml_head "$@"
    cat >>"$1" <<EOF
target_groups:
  primary:
    targets: ["127.0.0.1:$4"]
    keepalive: {max_idle: 64, idle_timeout: 60s}
  canary:
    targets: ["127.0.0.1:$4"]
    keepalive: {max_idle: 64, idle_timeout: 60s}
routes:
  - name: orders
    match: {path_regex: "/users/([0-9]+)/orders\$"}
    backends: [{target_group: primary, weight: 100, path: "/orders/\$1"}]
  - name: api
    match: {path_prefix: /api/}
    backends: [{target_group: primary, weight: 100}]
  - name: static
    match: {path_prefix: /static/}
    backends: [{target_group: primary, weight: 100}]
  - name: all
    match: {path_prefix: /}
    retries: {attempts: 2, per_try_timeout: 4s, retry_on: [5xx, connect-failure], backoff: 25ms}
    request_headers: {set: {X-Gateway: bench, X-Route: all}, remove: [X-Debug, X-Internal]}
    backends:
      - {target_group: primary, weight: 90}
      - {target_group: canary, weight: 10, fallback: primary}
EOF
}

# haproxy_cfg FILE LISTEN_PORT BACKEND_PORT MAXCONN IDLE [FULL ACCESS_LOG METRICS_PORT]
# FULL=1: the full profile (see ficus_full_yaml). HAProxy has no fallback
# group: the split is two servers weighted 90/10 and a failed try is retried
# on the other server (retry-on + option redispatch), the closest equivalent.
# The access log goes to stdout, which start_proxy sends to ACCESS_LOG.
haproxy_cfg() {
    if [[ ${6:-0} == 1 ]]; then
        cat >"$1" <<EOF
global
    nbthread 1
    maxconn $4
    no strict-limits
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client $5
    timeout server 60s
    timeout http-keep-alive $5
frontend metrics
    bind 127.0.0.1:$8
    no log
    http-request use-service prometheus-exporter if { path /metrics }
frontend fe
    bind 127.0.0.1:$2
    acl orders path_reg ^/users/([0-9]+)/orders\$
    acl api path_beg /api/
    acl static path_beg /static/
    http-request replace-path ^/users/([0-9]+)/orders\$ /orders/\1 if orders
    use_backend be_primary if orders or api or static
    default_backend be_split
backend be_primary
    server s1 127.0.0.1:$3
backend be_split
    balance roundrobin
    retries 1
    retry-on conn-failure empty-response response-timeout 500 502 503 504
    option redispatch 1
    http-request set-header X-Gateway bench
    http-request set-header X-Route all
    http-request del-header X-Debug
    http-request del-header X-Internal
    server primary 127.0.0.1:$3 weight 90
    server canary 127.0.0.1:$3 weight 10
EOF
        return
    fi
    cat >"$1" <<EOF
global
    nbthread 1
    maxconn $4
    # HAProxy reserves two descriptors per connection; the hard limit may be
    # lower than that for 10k connections that are idle (no server side).
    no strict-limits
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client $5
    timeout server 60s
    timeout http-keep-alive $5
frontend fe
    bind 127.0.0.1:$2
    default_backend be
backend be
    server s1 127.0.0.1:$3
EOF
}

# nginx_proxy_cfg FILE LISTEN_PORT BACKEND_PORT IDLE [FULL ACCESS_LOG METRICS_PORT]
# keepalive_requests is raised both ways: its default (1000) would make nginx
# alone reconnect every 1000 requests, which the others never do.
# FULL=1: the full profile (see ficus_full_yaml). NGINX has no fallback group
# either: an upstream of two servers weighted 90/10, and proxy_next_upstream
# (2 tries) sends a failed request to the other server. The access log is
# buffered (64k, flushed every second), as ficus's is written by a thread;
# metrics are stub_status on their own port.
nginx_proxy_cfg() {
    local dir=${1%/*}
    if [[ ${5:-0} == 1 ]]; then
        cat >"$1" <<EOF
worker_processes 1;
daemon off;
pid $1.pid;
error_log $1.err warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((NOFILE - 64)); }
http {
    access_log $6 combined buffer=64k flush=1s;
    keepalive_timeout $4;
    keepalive_requests 100000000;
    client_body_temp_path $dir/nginx-body;
    proxy_temp_path $dir/nginx-proxy;
    fastcgi_temp_path $dir/nginx-fastcgi;
    uwsgi_temp_path $dir/nginx-uwsgi;
    scgi_temp_path $dir/nginx-scgi;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    upstream primary {
        server 127.0.0.1:$3;
        keepalive 64;
        keepalive_requests 100000000;
    }
    upstream split {
        server 127.0.0.1:$3 weight=90;
        server 127.0.0.1:$3 weight=10;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$7;
        access_log off;
        location = /metrics { stub_status; }
    }
    server {
        listen 127.0.0.1:$2;
        location ~ ^/users/([0-9]+)/orders\$ {
            proxy_pass http://primary/orders/\$1;
        }
        location /api/ { proxy_pass http://primary; }
        location /static/ { proxy_pass http://primary; }
        location / {
            proxy_pass http://split;
            proxy_next_upstream error timeout http_500 http_502 http_503 http_504;
            proxy_next_upstream_tries 2;
            proxy_set_header Connection "";
            proxy_set_header X-Gateway bench;
            proxy_set_header X-Route all;
            proxy_set_header X-Debug "";
            proxy_set_header X-Internal "";
        }
    }
}
EOF
        return
    fi
    cat >"$1" <<EOF
worker_processes 1;
daemon off;
pid $1.pid;
error_log $1.err warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $((NOFILE - 64)); }
http {
    access_log off;
    keepalive_timeout $4;
    keepalive_requests 100000000;
    client_body_temp_path $dir/nginx-body;
    proxy_temp_path $dir/nginx-proxy;
    fastcgi_temp_path $dir/nginx-fastcgi;
    uwsgi_temp_path $dir/nginx-uwsgi;
    scgi_temp_path $dir/nginx-scgi;
    upstream be {
        server 127.0.0.1:$3;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

# nginx_backend_cfg FILE LISTEN_PORT BODY_FILE
nginx_backend_cfg() {
    local dir=${1%/*}
    cat >"$1" <<EOF
worker_processes 1;
daemon off;
pid $1.pid;
error_log $1.err warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    default_type text/plain;
    types { application/json json; } # small.json; the other bodies are text
    client_body_temp_path $dir/nginx-body;
    proxy_temp_path $dir/nginx-proxy;
    fastcgi_temp_path $dir/nginx-fastcgi;
    uwsgi_temp_path $dir/nginx-uwsgi;
    scgi_temp_path $dir/nginx-scgi;
    server {
        listen 127.0.0.1:$2;
        location / { root $dir; try_files /${3##*/} =404; }
    }
}
EOF
}

# ---- starting things ---------------------------------------------------

# start_backend NAME PORT BODY_FILE [KIND (default $BACKEND)]; sets STARTED.
start_backend() {
    local name=$1 port=$2 body=$3 kind=${4:-$BACKEND}
    if [[ $kind == ficus ]]; then
        launch "$TMP/$name.log" taskset -c "$LOAD_CPU" "$FICUS_BIN" mock \
            --listen "127.0.0.1:$port" --body-file "$body" --workers 1 --name "$name"
    else
        nginx_backend_cfg "$TMP/$name.conf" "$port" "$body"
        launch "$TMP/$name.log" taskset -c "$LOAD_CPU" nginx -p "$TMP" -c "$TMP/$name.conf" \
            -e "$TMP/$name.conf.err"
    fi
    wait_http "http://127.0.0.1:$port/" "$STARTED" || {
        log_tail "$TMP/$name.log"
        die "backend $name did not start on port $port"
    }
}

# start_proxy KIND TAG LISTEN_PORT BACKEND_PORT [ACCESS_LOG] [MAX_CONNS] [IDLE];
# sets STARTED (0 when it failed to start; the reason is printed).
start_proxy() {
    local kind=$1 tag=$2 port=$3 bport=$4 alog=${5:-off} maxc=${6:-4096} idle=${7:-60s}
    local res=${8:-0} full=0
    ((res == 3)) && full=1
    local log=$TMP/$tag.log
    # HAProxy writes its access log to stdout: its log is the access log.
    [[ $kind == haproxy && $full == 1 ]] && log=$alog
    STARTED=0
    case "$kind" in
    ficus | base)
        local cfg=$TMP/$tag.yaml bin=$FICUS_BIN
        [[ $kind == base ]] && bin=$(realpath "$FICUS_BASE_BIN")
        ficus_yaml "$cfg" "$port" "${ADMIN_PORT[$tag]}" "$bport" "$alog" "$maxc" "$idle" "$res"
        if ! "$bin" check -c "$cfg" >"$log" 2>&1; then
            note "ficus check -c $cfg failed:"
            cat "$log" >&2
            return 0
        fi
        launch "$log" taskset -c "$PROXY_CPU" "$bin" run -c "$cfg"
        ;;
    haproxy)
        haproxy_cfg "$TMP/$tag.cfg" "$port" "$bport" "$maxc" "$idle" "$full" "$alog" \
            "${ADMIN_PORT[$tag]}"
        launch "$log" taskset -c "$PROXY_CPU" haproxy -db -f "$TMP/$tag.cfg"
        ;;
    nginx)
        nginx_proxy_cfg "$TMP/$tag.conf" "$port" "$bport" "$idle" "$full" "$alog" \
            "${ADMIN_PORT[$tag]}"
        launch "$log" taskset -c "$PROXY_CPU" nginx -p "$TMP" -c "$TMP/$tag.conf" \
            -e "$TMP/$tag.conf.err"
        ;;
    esac
    if ! wait_http "http://127.0.0.1:$port/" "$STARTED"; then
        note "$kind ($tag) did not start serving on port $port:"
        log_tail "$log"
        stop_pid "$STARTED"
        STARTED=0
    fi
}

# Serves one request through URL (with REQ_HEADERS) and checks status and body
# size, so that a proxy answering errors fast is not reported as a fast proxy.
preflight() {
    local url=$1 want=$2 out
    out=$(curl -s -o /dev/null -m 5 -w '%{http_code} %{size_download}' "${REQ_HEADERS[@]}" \
        "$url") || out="curl-failed"
    if [[ $out != "200 $want" ]]; then
        note "preflight $url: got '$out', want '200 $want'"
        return 1
    fi
}

# Sum of a metric (ficus_requests_total by default) over all label sets,
# from the admin listener.
ficus_requests_total() {
    curl -s -m 5 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v m="${2:-ficus_requests_total}" \
            '$1 == m || index($1, m "{") == 1 {s += $NF} END {printf "%d\n", s}'
}

# watched_counter TAG: the ficus counter watched during each run of a variant
# and the key its growth is recorded under: spans the tracer dropped, requests
# the edge variants refused (all of them should pass: see preflight_target).
watched_counter() {
    case "$1" in
    ficus_trace-*) echo "ficus_trace_spans_dropped_total spans_dropped_delta" ;;
    ficus_key-* | ficus_jwt-*) echo "ficus_auth_failures_total auth_failures_delta" ;;
    ficus_rl-*) echo "ficus_rate_limited_total rate_limited_delta" ;;
    ficus_hedge-*) echo "ficus_hedges_total hedges_delta" ;;
    esac
}

# The results of ficus_shadow_requests_total, in the order shadow_counts
# prints them; their growth is recorded per run as shadow_<result>_delta
# (shadow_error as shadow_error_delta).
SHADOW_RESULTS=(match mismatch shadow_error dropped skipped)

# shadow_counts ADMIN_PORT: ficus_shadow_requests_total of route "all" for each
# of SHADOW_RESULTS, on one line (0 for a series that is absent).
shadow_counts() {
    curl -s -m 5 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v names="${SHADOW_RESULTS[*]}" '
            BEGIN {k = split(names, r, " ")}
            index($1, "ficus_shadow_requests_total{") == 1 && index($1, "route=\"all\"") {
                for (i = 1; i <= k; i++)
                    if (index($1, "result=\"" r[i] "\"")) n[i] = $NF
            }
            END {for (i = 1; i <= k; i++) printf "%d%s", n[i], (i < k ? " " : "\n")}'
}

# route_config_has ADMIN_PORT KEY JSON: whether route "all" in the
# configuration ficus runs (GET /config) has KEY with (at least) the fields of
# JSON, nested objects included; says what it found when not.
route_config_has() {
    curl -s -m 5 "http://127.0.0.1:$1/config" | "$PYTHON" -c '
import json, sys
def within(want, got):
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and within(v, got[k]) for k, v in want.items())
    return want == got
key, want = sys.argv[1], json.loads(sys.argv[2])
got = [r.get(key) for r in json.load(sys.stdin)["routes"] if r.get("name") == "all"]
ok = len(got) == 1 and within(want, got[0])
sys.exit(0 if ok else f"bench: preflight: route all runs without {key} {want}: {got}")' "$2" "$3"
}

# preflight_shadow URL ADMIN_PORT: the proof that small-shadow measures copies
# sent and compared, not a route that copies nothing: 200 requests through the
# route make copies that compare equal (both groups are the same backend), none
# that differ or fail. Sets SHADOW_BODIES from the backend's content type: json
# (compared as JSON values) or bytes (ficus mock answers text/plain: compared
# byte for byte), and says so when it is bytes.
SHADOW_BODIES=json
preflight_shadow() {
    local url=$1 admin=$2 n=200 i ctype
    local -a c0 c1 grew=()
    read -ra c0 <<<"$(shadow_counts "$admin")"
    curl -s -m 5 "$url?preflight=[1-$n]" >/dev/null || {
        note "preflight $url: $n requests failed"
        return 1
    }
    for ((i = 0; i < 20; i++)); do # the last copies may end after their client's answer
        read -ra c1 <<<"$(shadow_counts "$admin")"
        ((c1[0] > c0[0])) && break
        sleep 0.1
    done
    for i in "${!SHADOW_RESULTS[@]}"; do
        grew+=("${SHADOW_RESULTS[i]} +$((c1[i] - c0[i]))")
    done
    if ((c1[0] == c0[0] || c1[1] != c0[1] || c1[2] != c0[2])); then
        note "preflight $url: $n requests, shadow copies: ${grew[*]};" \
            "want match above 0, mismatch and shadow_error +0"
        return 1
    fi
    ctype=$(curl -s -o /dev/null -m 5 -w '%{content_type}' "$url") || ctype=""
    note "preflight $url: $n requests, shadow copies: ${grew[*]} (${SHADOW_PERCENT}% expected)"
    SHADOW_BODIES=json
    if [[ $ctype != application/json* ]]; then
        SHADOW_BODIES=bytes
        note "  the backend answers '$ctype', not JSON: bodies are compared byte for byte"
    fi
}

# preflight_target KIND TAG BODY_BYTES: the preflight, and for the variants
# paired with plain ficus the proof that they do their job, lest a
# configuration or token mistake bench refusals or a route without the step:
# the authenticated preflight request grew no refusal counter; a request
# without the credential is refused 401 and counted (so that the per-run check
# that the counter does not grow means something); the rate limit and the
# shadow block are in the configuration ficus runs, and copies are made and
# compared (preflight_shadow).
preflight_target() {
    local kind=$1 tag=$2 url=http://127.0.0.1:${PORT_OF[$2]}/ admin=${ADMIN_PORT[$2]:-}
    local watch _key a0 a1 a2 code
    if [[ -z ${PAIRED_MODE[$kind]:-} ]]; then
        preflight "$url" "$3"
        return
    fi
    if [[ $kind == ficus_shadow ]]; then
        preflight "$url" "$3" || return 1
        route_config_has "$admin" shadow "{\"target_group\": \"shadow\",
            \"percent\": $SHADOW_PERCENT, \"compare\": {}}" || return 1
        preflight_shadow "$url" "$admin"
        return
    fi
    if [[ $kind == ficus_reload ]]; then
        preflight "$url" "$3" || return 1
        curl -s -m 5 "http://127.0.0.1:$admin/config" | "$PYTHON" -c '
import json, sys
sys.exit(0 if json.load(sys.stdin).get("reload", {}).get("canary_percent") == 10
         else "bench: preflight: ficus runs without the reload block")'
        return
    fi
    read -r watch _key <<<"$(watched_counter "$tag")"
    a0=$(ficus_requests_total "$admin" "$watch")
    preflight "$url" "$3" || return 1
    a1=$(ficus_requests_total "$admin" "$watch")
    if ((a1 != a0)); then
        note "preflight $url: $watch grew by $((a1 - a0)) on a request with credentials"
        return 1
    fi
    if [[ $kind == ficus_rl ]]; then
        route_config_has "$admin" rate_limit "{\"requests_per_second\": $BENCH_RATE}"
        return
    fi
    if [[ $kind == ficus_hedge ]]; then
        route_config_has "$admin" retries '{"hedge": {"after": "1s", "max_percent": 5}}'
        return
    fi
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$url") || code=curl-failed
    a2=$(ficus_requests_total "$admin" "$watch")
    if [[ $code != 401 ]] || ((a2 != a1 + 1)); then
        note "preflight $url without credentials: got $code and $watch +$((a2 - a1)), want 401 and +1"
        return 1
    fi
}

# ---- throughput --------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
LOG_DROP_WARNINGS=0
declare -A ADMIN_PORT PID_OF PORT_OF DEAD SCRAPE_URL ALOG_OF

# one_run SCENARIO TAG ROUND URL BACKEND_PID [ADMIN_PORT] [ACCESS_LOG_FILE]
# Measures one wrk run; a run during which other processes took more than
# NOISE_MAX_PCT of either core is recorded as discarded and measured again, at
# most NOISE_RETRIES times (a shared machine would otherwise decide the ranking).
one_run() {
    local attempt
    for ((attempt = 0; ; attempt++)); do
        measure_once "$attempt" "$@"
        ((MEASURE_DISCARDED)) || break
        sleep 2
    done
}

# measure_once ATTEMPT SCENARIO TAG ROUND URL BACKEND_PID [ADMIN_PORT] [ACCESS_LOG_FILE]
# Sets MEASURE_DISCARDED.
measure_once() {
    local attempt=$1 scen=$2 tag=$3 round=$4 url=$5 bpid=$6 admin=${7:-} alog=${8:-}
    local pid=${PID_OF[$tag]} out=$TMP/wrk-$scen-$tag-$round-$attempt.txt
    local c0 c1 b0 b1 m0=0 m1=0 l0=0 l1=0 rc=0 scrape_pid=0 extra_core=()
    [[ -n $admin ]] && m0=$(ficus_requests_total "$admin")
    local watch watch_key d0=0 d1=0
    read -r watch watch_key <<<"$(watched_counter "$tag")"
    [[ -n $watch ]] && d0=$(ficus_requests_total "$admin" "$watch")
    local -a sh0=() sh1=()
    [[ $tag == ficus_shadow-* ]] && read -ra sh0 <<<"$(shadow_counts "$admin")"
    if [[ -n $alog ]]; then
        sleep 0.5 # let the lines of earlier requests (warm-up) reach the file
        l0=$(wc -l <"$alog")
    fi
    if [[ -n $alog && -n ${SCRAPE_URL[$tag]:-} ]]; then
        : >"$TMP/scrapes.txt"
        # shellcheck disable=SC2016 # expanded by the inner bash
        taskset -c "$LOAD_CPU" bash -c 'while :; do
            curl -s -m 2 -o "$2" -w "%{http_code}\n" "$1" >>"$3"
            sleep 1; done' scraper "${SCRAPE_URL[$tag]}" "$TMP/metrics.last" "$TMP/scrapes.txt" &
        scrape_pid=$!
        PIDS+=("$scrape_pid")
    fi
    local k0 k1 l0c l1c
    c0=$(cpu_ticks "$pid")
    b0=$(cpu_ticks "$bpid")
    k0=$(cpu_core_ticks "$PROXY_CPU")
    l0c=$(cpu_core_ticks "$LOAD_CPU")
    times >"$TMP/times0" # builtin: CPU of this shell's reaped children, wrk's included
    timeout $((DURATION + WRK_SLACK_S)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${REQ_HEADERS[@]}" "$url" >"$out" 2>&1 || rc=$?
    times >"$TMP/times1"
    l1c=$(cpu_core_ticks "$LOAD_CPU")
    k1=$(cpu_core_ticks "$PROXY_CPU")
    c1=$(cpu_ticks "$pid")
    b1=$(cpu_ticks "$bpid")
    # Work on each core that is not ours: other users of the machine. The load
    # core runs wrk and the backend; the proxy core runs the proxy (not for direct).
    local ours=$((c1 - c0)) wrk_ticks
    [[ $tag == direct-* ]] && ours=0
    wrk_ticks=$(($(children_ticks "$TMP/times1") - $(children_ticks "$TMP/times0")))
    local kb0 kt0 kb1 kt1 lb0 lt0 lb1 lt1
    read -r kb0 kt0 <<<"$k0"
    read -r kb1 kt1 <<<"$k1"
    read -r lb0 lt0 <<<"$l0c"
    read -r lb1 lt1 <<<"$l1c"
    extra_core=("core_other_ticks=$((kb1 - kb0 - ours))" "core_total_ticks=$((kt1 - kt0))"
        "load_other_ticks=$((lb1 - lb0 - (b1 - b0) - wrk_ticks))"
        "load_total_ticks=$((lt1 - lt0))" "wrk_ticks=$wrk_ticks")
    ((scrape_pid)) && stop_pid "$scrape_pid"
    local scrapes_ok=0 scrapes=0
    if ((scrape_pid)); then
        scrapes=$(wc -l <"$TMP/scrapes.txt")
        scrapes_ok=$(grep -c '^200$' "$TMP/scrapes.txt" || true)
    fi
    if [[ -n $alog ]]; then
        sleep 0.5 # the access log writer flushes on a timer
        l1=$(wc -l <"$alog")
    fi
    [[ -n $admin ]] && m1=$(ficus_requests_total "$admin")
    [[ -n $watch ]] && d1=$(ficus_requests_total "$admin" "$watch")
    ((${#sh0[@]})) && read -ra sh1 <<<"$(shadow_counts "$admin")"
    local crashed=0
    if ! alive "$pid"; then
        crashed=1
        DEAD[$tag]=1
        note "$tag DIED during $scen round $round (wrk: $url)"
        log_tail "$TMP/$tag.log"
    fi
    local noisy=0 discarded=0
    if (((kb1 - kb0 - ours) * 100 > NOISE_MAX_PCT * (kt1 - kt0) ||
        (lb1 - lb0 - (b1 - b0) - wrk_ticks) * 100 > NOISE_MAX_PCT * (lt1 - lt0))); then
        noisy=1
    fi
    ((noisy && !crashed && attempt < NOISE_RETRIES)) && discarded=1
    MEASURE_DISCARDED=$discarded
    local extra=("${extra_core[@]}" "attempt=$attempt" "noisy=$noisy" "discarded=$discarded")
    [[ -n $admin ]] && extra+=("metrics_requests_delta=$((m1 - m0))")
    [[ -n $alog ]] && extra+=("log_lines_delta=$((l1 - l0))")
    [[ -n $watch ]] && extra+=("$watch_key=$((d1 - d0))")
    local i
    for i in "${!sh0[@]}"; do
        extra+=("shadow_${SHADOW_RESULTS[i]#shadow_}_delta=$((sh1[i] - sh0[i]))")
    done
    ((${#sh0[@]})) && extra+=("shadow_percent=$SHADOW_PERCENT" "shadow_bodies=$SHADOW_BODIES")
    ((scrape_pid)) && extra+=("scrapes=$scrapes" "scrapes_ok=$scrapes_ok")
    "$PYTHON" "$HERE/report.py" record --out "$RUNS" --wrk "$out" \
        "scenario=$scen" "proxy=${tag%%-*}" "round=$round" "wrk_exit=$rc" \
        "proxy_ticks=$((c1 - c0))" "backend_ticks=$((b1 - b0))" "clk_tck=$CLK_TCK" \
        "crashed=$crashed" "${extra[@]}"
    tail -n 1 "$RUNS" | "$PYTHON" "$HERE/report.py" oneline >&2
}

warm() {
    timeout $((WARMUP + WRK_SLACK_S)) taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${REQ_HEADERS[@]}" "$1" >/dev/null 2>&1 || true
}

# The variants paired with plain ficus and their ficus_yaml modes
# (ficus_paired_yaml): edge security, and shadow copies.
declare -A PAIRED_MODE=([ficus_key]=5 [ficus_jwt]=6 [ficus_rl]=7 [ficus_shadow]=8 [ficus_hedge]=9 [ficus_reload]=10)
# curl/wrk arguments for the headers of every request: empty but in the edge
# scenarios, where both members of the pair get them (the same bytes in).
REQ_HEADERS=()

# scenario_wanted NAME: whether SCENARIOS (when set) lists it.
scenario_wanted() {
    [[ -z ${SCENARIOS:-} || " $SCENARIOS " == *" $1 "* ]]
}

# scenario NAME BACKEND_PORT BACKEND_PID BODY_BYTES WITH_LOG(0|1|2|3|4|5|6|7|8)
# 2: ficus_res (retries + 90/10 with fallback) paired with plain ficus;
# 5 to 10: a variant (PAIRED_MODE) paired with plain ficus.
scenario() {
    local scen=$1 bport=$2 bpid=$3 bytes=$4 with_log=$5
    local targets=() kind tag ports i=0 full=0
    local -a REQ_HEADERS=()
    scenario_wanted "$scen" || return 0
    if ((with_log >= 5)); then
        for kind in "${!PAIRED_MODE[@]}"; do
            ((PAIRED_MODE[$kind] == with_log)) && targets=("$kind" ficus)
        done
        if ((with_log == 6)) && [[ -z $BENCH_JWT ]]; then
            note "$scen skipped: no JWT to send"
            return 0
        fi
        ((with_log == 5)) && REQ_HEADERS=(-H "X-Api-Key: $BENCH_KEY")
        ((with_log == 6)) && REQ_HEADERS=(-H "Authorization: Bearer $BENCH_JWT")
        with_log=0
    elif ((with_log == 4)); then
        # The full profile: every proxy with its access log and metrics.
        read -ra targets <<<"$PROXIES"
        full=1
        with_log=0
    elif ((with_log == 3)); then
        targets=(ficus_trace ficus)
        with_log=0
    elif ((with_log == 2)); then
        targets=(ficus_res ficus)
        with_log=0
    elif ((with_log)); then
        # ficus_log: the access log on and /metrics scraped; ficus: the same
        # without, in the same rounds, so that the cost of both is a paired ratio.
        targets=(ficus_log ficus)
    else
        read -ra targets <<<"$PROXIES direct"
    fi
    read -ra ports <<<"$(free_ports $((2 * ${#targets[@]})))"
    local alog=""
    ((with_log)) && alog=$TMP/access-$scen.log && : >"$alog"
    for kind in "${targets[@]}"; do
        tag=$kind-$scen
        if [[ $kind == direct ]]; then
            PID_OF[$tag]=$bpid
            PORT_OF[$tag]=$bport
            continue
        fi
        ADMIN_PORT[$tag]=${ports[i + 1]}
        PORT_OF[$tag]=${ports[i]}
        i=$((i + 2))
        local log_path=off
        [[ $kind == ficus_log ]] && log_path=$alog
        local res=0
        [[ $kind == ficus_res ]] && res=1
        [[ $kind == ficus_trace ]] && res=2
        [[ -n ${PAIRED_MODE[$kind]:-} ]] && res=${PAIRED_MODE[$kind]}
        if ((full)); then
            res=3
            log_path=$TMP/access-$tag.log
            : >"$log_path"
        fi
        ALOG_OF[$tag]=""
        [[ $log_path != off ]] && ALOG_OF[$tag]=$log_path
        # ficus's admin port, or HAProxy's and NGINX's metrics port.
        SCRAPE_URL[$tag]=http://127.0.0.1:${ADMIN_PORT[$tag]}/metrics
        start_proxy "${kind%%_*}" "$tag" "${PORT_OF[$tag]}" "$bport" "$log_path" 4096 60s "$res"
        if ((STARTED == 0)); then
            DEAD[$tag]=1
            continue
        fi
        PID_OF[$tag]=$STARTED
    done
    for kind in "${targets[@]}"; do
        tag=$kind-$scen
        [[ -n ${DEAD[$tag]:-} ]] && continue
        if ! preflight_target "$kind" "$tag" "$bytes"; then
            log_tail "$TMP/$tag.log"
            DEAD[$tag]=1
            continue
        fi
        warm "http://127.0.0.1:${PORT_OF[$tag]}/"
    done
    local round admin
    for ((round = 1; round <= ROUNDS; round++)); do
        for kind in "${targets[@]}"; do
            tag=$kind-$scen
            [[ -n ${DEAD[$tag]:-} ]] && continue
            admin=""
            [[ $kind == ficus* ]] && admin=${ADMIN_PORT[$tag]}
            local run_log=${ALOG_OF[$tag]:-}
            one_run "$scen" "$tag" "$round" "http://127.0.0.1:${PORT_OF[$tag]}/" "$bpid" \
                "$admin" "$run_log"
        done
    done
    for kind in "${targets[@]}"; do
        tag=$kind-$scen
        [[ $kind == direct || -z ${PID_OF[$tag]:-} ]] && continue
        stop_proxy "$tag" "${PID_OF[$tag]}"
    done
    if ((full)); then
        for kind in "${targets[@]}"; do
            tag=$kind-$scen
            [[ -n ${ALOG_OF[$tag]:-} && -s ${ALOG_OF[$tag]} ]] || continue
            note "access log of $tag: $(wc -l <"${ALOG_OF[$tag]}") lines; first line:"
            head -n 1 "${ALOG_OF[$tag]}" >&2 || true
        done
    fi
    if [[ -n $alog ]]; then
        note "access log $alog: $(wc -l <"$alog") lines; first line:"
        head -n 1 "$alog" >&2 || true
        # ficus drops lines rather than block a worker when its writer falls behind.
        LOG_DROP_WARNINGS=$(grep -c 'lines dropped' "$TMP/ficus_log-$scen.log" || true)
        if ((LOG_DROP_WARNINGS)); then
            note "ficus reported dropped access-log lines:"
            grep 'lines dropped' "$TMP/ficus_log-$scen.log" | tail -n 5 >&2
        fi
    fi
}

# ---- memory: idle keep-alive connections ---------------------------------

# mem_one KIND BACKEND_PORT
mem_one() {
    local kind=$1 bport=$2 tag=$1-memory ports
    read -ra ports <<<"$(free_ports 2)"
    ADMIN_PORT[$tag]=${ports[1]}
    start_proxy "$kind" "$tag" "${ports[0]}" "$bport" off $((MEM_CONNS + 500)) 600s
    ((STARTED)) || {
        "$PYTHON" "$HERE/report.py" record --out "$MEMS" "proxy=$kind" "error=did not start"
        return 0
    }
    local pid=$STARTED url=http://127.0.0.1:${ports[0]}/
    preflight "$url" "$SMALL_BYTES" || log_tail "$TMP/$tag.log"
    # Touch the request path before the baseline so that lazy set-up is not
    # counted as per-connection memory.
    warm "$url"
    sleep 0.5
    local before after after_close client_log=$TMP/$tag.client
    : >"$client_log"
    before=$(rss_kib "$pid")
    "$PYTHON" "$HERE/idle_conns.py" --port "${ports[0]}" --conns "$MEM_CONNS" \
        --deadline "$MEM_CLIENT_S" --hold 600 >"$client_log" 2>&1 &
    local cpid=$!
    PIDS+=("$cpid")
    local i
    for ((i = 0; i < (MEM_CLIENT_S + 5) * 10; i++)); do
        grep -q '^READY' "$client_log" && break
        alive "$cpid" || break
        sleep 0.1
    done
    sleep 1
    after=$(rss_kib "$pid")
    local gauge=""
    [[ $kind == ficus ]] && gauge=$(curl -s -m 5 "http://127.0.0.1:${ADMIN_PORT[$tag]}/metrics" |
        awk '/^ficus_downstream_connections[{ ]/ {print $NF; exit}')
    local ready
    ready=$(grep '^READY' "$client_log" || echo "READY failed=1 error=client-did-not-finish")
    cat "$client_log" >&2
    stop_pid "$cpid"
    sleep 1
    after_close=$(rss_kib "$pid")
    local crashed=0
    alive "$pid" || {
        crashed=1
        note "$kind DIED in the memory scenario"
        log_tail "$TMP/$tag.log"
    }
    # READY line: key=value pairs from idle_conns.py (open, failed, closed_by_peer, ...)
    # shellcheck disable=SC2086
    "$PYTHON" "$HERE/report.py" record --out "$MEMS" "proxy=$kind" "conns=$MEM_CONNS" \
        "rss_before_kib=$before" "rss_after_kib=$after" "rss_after_close_kib=$after_close" \
        "crashed=$crashed" ${gauge:+"downstream_connections_gauge=$gauge"} ${ready#READY }
    stop_proxy "$tag" "$pid"
}

# Warns when other processes use the CPUs before we start: the numbers of a
# busy machine are noise. Busy as in cpu_core_ticks, all CPUs, over one second.
quiet_check() {
    local a b
    a=$(awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
    sleep 1
    b=$(awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
    local pct
    pct=$(awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; printf "%d", (t > 0 ? 100 * (y[1] - x[1]) / t : 0)}')
    if ((pct > 10)); then
        note "WARNING: the machine is busy before we start ($pct% CPU used by others):"
        note "  expect noisy numbers; see the 'others' column"
    fi
    echo "$pct"
}

# ---- main --------------------------------------------------------------

TS=$(date -u +%Y%m%dT%H%M%SZ)
BUSY_BEFORE=$(quiet_check)
make_bodies
read -r SMALL_PORT LARGE_PORT JSON_PORT <<<"$(free_ports 3)"
start_backend backend-small "$SMALL_PORT" "$TMP/small.body"
SMALL_PID=$STARTED
note "backend ($BACKEND) small body: 127.0.0.1:$SMALL_PORT pid $SMALL_PID"

if [[ $MODE == throughput || $MODE == all ]]; then
    start_backend backend-large "$LARGE_PORT" "$TMP/large.body"
    LARGE_PID=$STARTED
    note "backend ($BACKEND) large body: 127.0.0.1:$LARGE_PORT pid $LARGE_PID"
    note "throughput: $ROUNDS rounds x ${DURATION}s, $CONNS connections, proxies: $PROXIES"
    scenario small "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 0
    scenario large "$LARGE_PORT" "$LARGE_PID" "$LARGE_BYTES" 0
    if [[ " $PROXIES " == *" ficus "* ]]; then
        scenario small-log "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 1
        scenario small-res "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 2
        if scenario_wanted small-key || scenario_wanted small-jwt; then
            make_credentials
        fi
        scenario small-key "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 5
        scenario small-jwt "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 6
        scenario small-rl "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 7
        scenario small-hedge "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 9
        scenario small-reload "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 10
        if scenario_wanted small-shadow; then
            # A JSON body for both members of the pair, so that the copies'
            # answers are compared as JSON values, as an API's would be.
            start_backend backend-json "$JSON_PORT" "$TMP/small.json"
            note "backend ($BACKEND) small JSON body: 127.0.0.1:$JSON_PORT pid $STARTED"
            scenario small-shadow "$JSON_PORT" "$STARTED" "$(stat -c %s "$TMP/small.json")" 8
        fi
    fi
fi

if [[ $MODE == full || $MODE == throughput || $MODE == all ]]; then
    if [[ $MODE == full ]]; then
        start_backend backend-large "$LARGE_PORT" "$TMP/large.body"
        LARGE_PID=$STARTED
    fi
    note "full profile: four routes, regex, 90/10 split with fallback, retries, header"
    note "  rules, access log to a file, metrics scraped every second; proxies: $PROXIES"
    scenario full-small "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 4
    scenario full-large "$LARGE_PORT" "$LARGE_PID" "$LARGE_BYTES" 4
fi

if [[ $MODE == trace || (($MODE == throughput || $MODE == all) && " $PROXIES " == *" ficus "*) ]]; then
    read -r COLLECTOR_PORT <<<"$(free_ports 1)"
    # Always the mock: NGINX's static file would answer the exporter's POST 405.
    start_backend collector "$COLLECTOR_PORT" "$TMP/small.body" ficus
    note "OTLP collector (a ficus mock answering 200): 127.0.0.1:$COLLECTOR_PORT pid $STARTED"
    scenario small-trace "$SMALL_PORT" "$SMALL_PID" "$SMALL_BYTES" 3
fi

if [[ $MODE == memory || $MODE == all ]]; then
    if ((NOFILE < MEM_CONNS + 200)); then
        die "open-file limit $NOFILE is too low for MEM_CONNS=$MEM_CONNS"
    fi
    note "memory: $MEM_CONNS idle keep-alive connections per proxy"
    for p in $PROXIES; do
        mem_one "$p" "$SMALL_PORT"
    done
fi

mkdir -p "$HERE/results"
"$PYTHON" "$HERE/report.py" report --runs "$RUNS" --memory "$MEMS" \
    --json-out "$HERE/results/$TS.json" \
    "mode=$MODE" "access_log_drop_warnings=$LOG_DROP_WARNINGS" "duration_s=$DURATION" "rounds=$ROUNDS" "conns=$CONNS" \
    "backend=$BACKEND" "proxy_cpu=$PROXY_CPU" "load_cpu=$LOAD_CPU" \
    "small_body_bytes=$SMALL_BYTES" "large_body_bytes=$LARGE_BYTES" \
    "ficus=$("$FICUS_BIN" version 2>/dev/null | head -n 1)" \
    "haproxy=$(haproxy -v 2>/dev/null | head -n 1)" \
    "nginx=$(nginx -v 2>&1 | head -n 1)" \
    "wrk=$(wrk -v 2>&1 | head -n 1)" \
    "kernel=$(uname -r)" "nproc=$(nproc)" "busy_before_pct=$BUSY_BEFORE" \
    "cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
