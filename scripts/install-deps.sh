#!/bin/sh
# Installs ficus's build and test dependencies from Debian's archive, only
# those missing, and the npm packages of tests/otlp (the OTLP protobuf check).
# Used by `make demo`, `make test` and CI (runs as root or sudo).
#
# BUILD: the compiler, the C library's headers (only a recommendation of gcc,
#   which apt leaves out here), the libraries the Makefile's pkg-config line
#   links (libuv, OpenSSL, libyaml, PCRE2, jansson, hiredis, nghttp2) and llhttp's sources.
# TEST: cmocka (unit tests); pytest, python3-h2 (hostile HTTP/2 frame
#   sequences), python3-grpcio (gRPC client and server through ficus) and
#   nghttp2-client (nghttp in the drain test, h2load in bench/), python3-websockets and python3-cryptography
#   (keys and JWTs made in the black-box tests), python3-yaml (the alert
#   rules and their unit tests read in test_alert_rules.py);
#   clang with its sanitizer/fuzzer runtime (ASan build, fuzzing); curl,
#   openssl (probe's TLS test), util-linux (prlimit, taskset), wrk, haproxy,
#   nginx-light (backends and bench), prometheus (promtool check metrics,
#   check rules and test rules: deploy/prometheus),
#   clang-format, cppcheck, procps (pgrep in bench/), groff-base (the man
#   page test), redis-server (global throttles and rate limits), chromium and
#   fonts-dejavu-core (the migration board page, in a headless browser),
#   systemd (deploy/: `systemd-analyze verify` of the units; python3-yaml
#   also reads the Kubernetes manifests), kubectl from
#   kubernetes-client (`kubectl kustomize deploy/kubernetes`).
set -e
BUILD="gcc libc6-dev make pkg-config libuv1-dev node-llhttp libssl-dev libyaml-dev libpcre2-dev libjansson-dev libhiredis-dev libnghttp2-dev"
TEST="libcmocka-dev python3 python3-pytest python3-h2 python3-grpcio nghttp2-client python3-websockets python3-cryptography python3-yaml clang libclang-rt-14-dev curl openssl util-linux wrk haproxy nginx-light redis-server prometheus clang-format cppcheck procps groff-base chromium fonts-dejavu-core systemd"
case "${1:-all}" in
  build) WANT="$BUILD" ;;
  *) WANT="$BUILD $TEST"
     # node and npm run tests/otlp/check.js. A nodejs that brings its own npm
     # (NodeSource's) conflicts with Debian's npm package: ask apt only without one.
     command -v npm >/dev/null 2>&1 || WANT="$WANT nodejs npm"
     # Any kubectl renders the kustomization: one from Kubernetes' own packages
     # conflicts with Debian's kubernetes-client.
     command -v kubectl >/dev/null 2>&1 || WANT="$WANT kubernetes-client" ;;
esac
MISSING=""
for p in $WANT; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING="$MISSING $p"
done
if [ -n "$MISSING" ]; then
  echo "installing:$MISSING"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends $MISSING
fi
[ "${1:-all}" = build ] && exit 0
# The lock file is the stamp: npm ci again only when it changed.
OTLP="$(dirname "$0")/../tests/otlp"
if ! cmp -s "$OTLP/package-lock.json" "$OTLP/node_modules/.installed-lock.json"; then
  echo "installing: tests/otlp npm packages"
  (cd "$OTLP" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
     && cp package-lock.json node_modules/.installed-lock.json) ||
    echo "warning: npm ci in tests/otlp failed: the OTLP protobuf check will be skipped" >&2
fi
