#!/bin/sh
# Includes point down the layers, never up. Each folder lists the folders it
# may include from (besides itself). Exits 1 on the first wrong include.
set -e
cd "$(dirname "$0")/.."
allowed() {
    case "$1" in
    core) echo "" ;;
    config) echo "core http" ;;
    net) echo "core" ;;
    http) echo "core" ;;
    client) echo "core net http" ;;
    routing) echo "core config http client" ;;
    observe) echo "core config client" ;;
    proxy) echo "core config net http client routing observe policy" ;;
    policy) echo "core config net http client" ;;
    admin) echo "core net http client observe" ;;
    tools) echo "core config net http client" ;;
    app) echo "core config net http client routing observe policy proxy admin tools" ;;
    *) echo "core config net http client routing observe policy proxy admin tools app" ;;
    esac
}
bad=0
for f in $(find src -name '*.c' -o -name '*.h'); do
    dir=$(echo "$f" | cut -d/ -f2)
    case "$dir" in *.c|*.h) dir=main ;; esac
    ok="$dir $(allowed "$dir")"
    for inc in $(grep -oE '^#include "[a-z_]+/' "$f" | sed 's/#include "//; s#/##'); do
        case " $ok " in
        *" $inc "*) ;;
        *) echo "layering: $f includes $inc/ (a $dir/ file may include: $ok)"; bad=1 ;;
        esac
    done
done
[ "$bad" -eq 0 ] && echo "layering: clean"
exit "$bad"
