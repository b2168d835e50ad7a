#!/bin/sh
# Includes point down the layers, never up. Each folder lists the folders it
# may include from (besides itself). Exits 1 on the first wrong include.
set -e
cd "$(dirname "$0")/.."
allowed() {
    case "$1" in
    core) echo "" ;;
    config) echo "core" ;;
    net) echo "core" ;;
    http) echo "core" ;;
    routing) echo "core config http" ;;
    observe) echo "core config" ;;
    proxy) echo "core config net http routing observe policy" ;;
    policy) echo "core config net http" ;;
    admin) echo "core net http observe" ;;
    tools) echo "core config net http" ;;
    app) echo "core config net http routing observe policy proxy admin tools" ;;
    *) echo "core config net http routing observe policy proxy admin tools app" ;;
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
