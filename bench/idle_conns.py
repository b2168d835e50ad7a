#!/usr/bin/env python3
"""Opens N keep-alive connections to 127.0.0.1:PORT; each sends one GET, reads the
whole response and then stays open and idle. Prints "READY key=value..." once all
are done (or the deadline passed), then holds them until SIGTERM or --hold seconds.
Used by bench/run.sh memory to measure a proxy's memory per idle connection."""
import argparse
import errno
import selectors
import signal
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: ficus-bench-idle\r\n\r\n"


class Conn:
    __slots__ = ("sock", "buf", "sent")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.sent = False


def response_done(buf):
    """(done, status) once a whole Content-Length or chunked response is in buf."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False, None
    head = buf[:head_end].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split()[1])
    except (IndexError, ValueError):
        return True, None
    body = buf[head_end + 4:]
    fields = {}
    for h in head[1:]:
        k, _, v = h.partition(":")
        fields[k.strip().lower()] = v.strip()
    if "content-length" in fields:
        return len(body) >= int(fields["content-length"]), status
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return body.endswith(b"0\r\n\r\n"), status
    return status in (204, 304), status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--inflight", type=int, default=200,
                    help="connections opening at once (keeps the accept backlog short)")
    ap.add_argument("--deadline", type=float, default=120, help="seconds to open them all")
    ap.add_argument("--hold", type=float, default=600, help="seconds to hold them at most")
    a = ap.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sel = selectors.DefaultSelector()
    idle, stats = [], {"failed": 0, "bad_status": 0}
    started = pending = 0
    t0 = time.monotonic()
    end = t0 + a.deadline

    def fail(c):
        stats["failed"] += 1
        sel.unregister(c.sock)
        c.sock.close()

    while (started < a.conns or pending) and time.monotonic() < end:
        while started < a.conns and pending < a.inflight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex(("127.0.0.1", a.port))
            started += 1
            if rc not in (0, errno.EINPROGRESS):
                stats["failed"] += 1
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE, Conn(s))
            pending += 1
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            if not c.sent:
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    fail(c)
                    pending -= 1
                    continue
                try:
                    c.sock.send(REQUEST)
                except OSError:
                    fail(c)
                    pending -= 1
                    continue
                c.sent = True
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                fail(c)
                pending -= 1
                continue
            c.buf += data
            done, status = response_done(c.buf)
            if done:
                pending -= 1
                sel.unregister(c.sock)
                if status != 200:
                    stats["bad_status"] += 1
                c.buf = b""
                idle.append(c.sock)
    elapsed = time.monotonic() - t0
    unfinished = pending + (a.conns - started)

    # A proxy that drops idle connections early would flatter its memory figure.
    time.sleep(1)
    probe = selectors.DefaultSelector()
    for s in idle:
        probe.register(s, selectors.EVENT_READ)
    closed = len(probe.select(timeout=0))
    print(f"READY open={len(idle) - closed} closed_by_peer={closed} failed={stats['failed']} "
          f"unfinished={unfinished} bad_status={stats['bad_status']} "
          f"open_seconds={elapsed:.1f}", flush=True)
    time.sleep(a.hold)


if __name__ == "__main__":
    main()
