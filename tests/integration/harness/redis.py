"""A real redis-server on 127.0.0.1 for the fleet-wide limits: no
persistence, its own port, stopped (or killed and restarted) by the test."""

import shutil
import socket
import subprocess
import time

from .procs import free_port


class Redis:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self):
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed (scripts/install-deps.sh)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def command(self, *args):
        """One command over RESP; the raw reply bytes."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(out)
            return s.recv(65536)

    def ping(self):
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None
