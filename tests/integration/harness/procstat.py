"""What /proc says about a process the tests started (Linux): its resident
memory, its open descriptors and its open-file limit, and a Footprint taken
as a baseline that later checks compare against (after abuse, descriptors
must come back and memory must be back near where it was)."""

import os
import time

from .procs import scaled


def rss_kib(pid):
    """Resident set size (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def open_fds(pid):
    """Descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid):
    """The process's soft RLIMIT_NOFILE ("Max open files"); None if unlimited."""
    with open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                soft = line[len("Max open files"):].split()[0]
                return None if soft == "unlimited" else int(soft)
    raise RuntimeError(f"no open-file limit in /proc/{pid}/limits")


def _settled(measure, limit, timeout):
    """Polls measure() until it is at most limit or timeout seconds (scaled
    here) pass; returns the last value. Closing a connection takes a loop turn
    or a linger, freeing its memory one more."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = measure()
        if value <= limit or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)


class Footprint:
    """Descriptors and RSS of a process at one moment: take it after a
    warm-up, so that buffers allocated once and kept are in the baseline."""

    def __init__(self, pid):
        self.pid = pid
        self.fds = open_fds(pid)
        self.rss_kib = rss_kib(pid)

    def fds_back(self, slack, timeout):
        """None once the descriptor count is at most the baseline + slack
        (polled for up to timeout seconds), else what is wrong."""
        now = _settled(lambda: open_fds(self.pid), self.fds + slack, timeout)
        if now <= self.fds + slack:
            return None
        return (f"pid {self.pid} holds {now} descriptors {scaled(timeout):.0f}s later; "
                f"baseline {self.fds} + slack {slack}")

    def rss_over(self, margin_kib, timeout=0.0):
        """None once RSS is at most the baseline + margin_kib (polled for up
        to timeout seconds), else what is wrong."""
        now = _settled(lambda: rss_kib(self.pid), self.rss_kib + margin_kib, timeout)
        if now <= self.rss_kib + margin_kib:
            return None
        return (f"pid {self.pid} RSS {now} KiB; baseline {self.rss_kib} KiB + margin "
                f"{margin_kib} KiB")
