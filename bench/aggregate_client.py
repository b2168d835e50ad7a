#!/usr/bin/env python3
"""Sequential latency client of bench/aggregate.sh: one keep-alive connection,
ITERATIONS iterations, each the PATHS fetched one after the other (each answer
read whole before the next request goes). Prints one JSON object: the
iterations' latencies (ms) at p50/p90/p99, the mean, the number of answers
that were not 200 and the wall time.

    aggregate_client.py PORT ITERATIONS DEADLINE_S PATH [PATH...]

DEADLINE_S bounds the run: iterations stop there (the count done is reported).
Standard library only."""

import http.client
import json
import sys
import time


def percentile(sorted_ms, q):
    if not sorted_ms:
        return None
    i = min(len(sorted_ms) - 1, max(0, int(round(q * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[i]


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    port, iterations, deadline_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    paths = sys.argv[4:]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    lat_ms, bad, reconnects = [], 0, 0
    start = time.monotonic()
    stop_at = start + deadline_s
    for _ in range(iterations):
        if time.monotonic() > stop_at:
            break
        t0 = time.perf_counter_ns()
        for p in paths:
            try:
                conn.request("GET", p)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    bad += 1
                if r.will_close:
                    conn.close()
                    reconnects += 1
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                reconnects += 1
        lat_ms.append((time.perf_counter_ns() - t0) / 1e6)
    wall = time.monotonic() - start
    conn.close()
    s = sorted(lat_ms)
    print(json.dumps({
        "paths": paths, "iterations": len(lat_ms), "non_200": bad,
        "reconnects": reconnects, "wall_s": round(wall, 3),
        "p50_ms": percentile(s, 0.50), "p90_ms": percentile(s, 0.90),
        "p99_ms": percentile(s, 0.99),
        "mean_ms": sum(s) / len(s) if s else None,
    }))


if __name__ == "__main__":
    main()
