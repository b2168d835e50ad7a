"""What /proc says about a process the tests started (Linux): its resident
memory, its open descriptors, the connections it accepted on a port and its
open-file limit, and a Footprint taken as a baseline that later checks
compare against (after abuse, every accepted connection and descriptor must
be given back and memory must be back near where it was)."""

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


def _socket_inodes(pid):
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(int(link[len("socket:["):-1]))
    return inodes


def accepted_connections(pid, port):
    """TCP connections the process holds on local port `port`, listening
    sockets aside: the clients it accepted there."""
    inodes = _socket_inodes(pid)
    n = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as fh:
            next(fh)  # the column names
            for line in fh:
                f = line.split()
                local_port = int(f[1].rsplit(":", 1)[1], 16)
                listening = f[3] == "0A"
                if local_port == port and not listening and int(f[9]) in inodes:
                    n += 1
    return n


def _poll(problem, timeout):
    """Calls problem() until it returns None or timeout seconds (scaled here)
    pass; returns its last answer. Closing a connection takes a loop turn or
    a linger, freeing its memory one more."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        p = problem()
        if p is None or time.monotonic() >= deadline:
            return p
        time.sleep(0.05)


class Footprint:
    """Descriptors and RSS of a process serving on `port`, at one moment: take
    it after a warm-up, so that what is allocated once and kept (buffers,
    pooled upstream connections) is in the baseline."""

    def __init__(self, pid, port):
        self.pid = pid
        self.port = port
        self.fds = open_fds(pid)
        self.clients = accepted_connections(pid, port)
        self.rss_kib = rss_kib(pid)

    def fds_back(self, slack, timeout):
        """None once the process holds no more accepted connections than at
        the baseline, and at most slack more descriptors in all (pooled
        upstream connections come and go); polled for up to timeout seconds.
        Else what is wrong."""

        def problem():
            clients = accepted_connections(self.pid, self.port)
            fds = open_fds(self.pid)
            if clients <= self.clients and fds <= self.fds + slack:
                return None
            return (f"pid {self.pid} holds {fds} descriptors, {clients} of them accepted "
                    f"connections on port {self.port}, {scaled(timeout):.0f}s later; baseline "
                    f"{self.fds} ({self.clients}) + slack {slack}")

        return _poll(problem, timeout)

    def rss_over(self, margin_kib, timeout=0.0):
        """None once RSS is at most the baseline + margin_kib (polled for up
        to timeout seconds), else what is wrong."""

        def problem():
            now = rss_kib(self.pid)
            if now <= self.rss_kib + margin_kib:
                return None
            return (f"pid {self.pid} RSS {now} KiB; baseline {self.rss_kib} KiB + margin "
                    f"{margin_kib} KiB")

        return _poll(problem, timeout)
