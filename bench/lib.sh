# shellcheck shell=bash
# shellcheck disable=SC2034 # STOP_RC and STOP_KILLED are read by the sourcing script
# Shared by the bench scripts (run.sh, aggregate.sh): messages, every
# process a script starts stopped on exit, and what they read of a process.
# The sourcing script sets TMP (removed on exit unless KEEP_TMP=1) and
# STARTUP_S (seconds a process has to serve) first.

die() {
    echo "bench: $*" >&2
    exit 1
}

# A script that takes no arguments: --help prints its header comment.
no_arguments() {
    case "${1:-}" in
    "") ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 (no arguments; see --help)" >&2
        exit 2
        ;;
    esac
}
note() { echo "bench: $*" >&2; }

# ---- process bookkeeping: every PID we start, stopped on exit ------------

PIDS=()

alive() {
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

# SIGTERM, then SIGKILL after 5 s; sets STOP_RC (exit status) and STOP_KILLED.
stop_pid() {
    local pid=$1 i=0
    STOP_RC=0
    STOP_KILLED=0
    kill -TERM "$pid" 2>/dev/null || i=50
    for (( ; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        STOP_KILLED=1
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
    # Reaped: the PID may be reused by someone else's process from now on.
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$pid" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    if [[ -z ${TMP:-} ]]; then
        : # stopped before it made one
    elif [[ ${KEEP_TMP:-0} == 1 ]]; then
        note "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}

trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" in the background with stdout+stderr to $1's log; sets STARTED.
launch() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# Waits until URL answers over HTTP while PID lives; 1 if it never does.
wait_http() {
    local url=$1 pid=$2 i
    for ((i = 0; i < STARTUP_S * 10; i++)); do
        alive "$pid" || return 1
        curl -s -o /dev/null -m 1 "$url" && return 0
        sleep 0.1
    done
    return 1
}

# Whole-process CPU ticks (utime+stime, all threads) of PID and its children:
# nginx does its work in a child of the master.
cpu_ticks() {
    local sum=0 p st f
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        st=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        st=${st##*) }
        read -ra f <<<"$st"
        # after "pid (comm) ", field 14 (utime) is at index 11
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}

log_tail() {
    note "---- last lines of $1 ----"
    tail -n 20 "$1" >&2 || true
    note "----"
}

# Connections an NGINX has accepted so far, from its stub_status at URL (this
# read is one of them).
nginx_accepts() {
    curl -s -m 5 "$1" | awk 'NR == 3 {print $1}'
}

# free_ports N: N free TCP ports on 127.0.0.1, separated by spaces.
free_ports() {
    "${PYTHON:-python3}" - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# "busy total" ticks of CPU $1 from /proc/stat. busy counts irq and softirq
# because the kernel also charges them to the process they interrupted, and
# steal: time the hypervisor gave to other guests is lost to us too.
cpu_core_ticks() {
    awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9,
        $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}

# bench_cert DIR: an ECDSA P-256 certificate for bench.test, valid two days:
# DIR/cert.pem, DIR/key.pem, and both in DIR/haproxy.pem.
bench_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null || die "openssl req failed"
    cat "$1/cert.pem" "$1/key.pem" >"$1/haproxy.pem"
}
