#!/bin/sh
# Installs ficus's build and test dependencies from Debian's archive, only
# those missing. Used by `make demo`, `make test` and CI (runs as root or sudo).
set -e
BUILD="gcc make pkg-config libuv1-dev node-llhttp libssl-dev libyaml-dev libpcre2-dev libjansson-dev libhiredis-dev"
TEST="libcmocka-dev python3 python3-pytest clang libclang-rt-14-dev curl openssl util-linux wrk haproxy nginx-light redis-server prometheus clang-format cppcheck procps bc"
case "${1:-all}" in
  build) WANT="$BUILD" ;;
  *) WANT="$BUILD $TEST" ;;
esac
MISSING=""
for p in $WANT; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING="$MISSING $p"
done
[ -z "$MISSING" ] && exit 0
echo "installing:$MISSING"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $MISSING
