"""Load from wrk, with the counts a test asserts on."""

import re
import subprocess


def wrk(url, seconds, connections=16):
    """Runs wrk against url; returns (requests, socket errors, non-2xx/3xx
    answers, wrk's output)."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
                          url], capture_output=True, text=True, timeout=seconds + 30).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    return total, errors, non2xx, out
