# SPDX-License-Identifier: MIT
"""test_loadgen.py - the load client counts what a client would: a reply framed by the server's
close is ok (RFC 9112 section 6.3), --timeout bounds a whole request with its retry, and
durations may have a fraction (1.5s)."""
import socket
import subprocess
import threading
import time

from harness import DEADLINE, bin_path, check


class Server:
    """A listener on 127.0.0.1 whose connections are served by handle(conn, n), n counting the
    connections from 0; one thread per connection, all stopped at close()."""

    def __init__(self, handle):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        n = 0
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()
            n += 1

    def _serve(self, c, n):
        try:
            self.handle(c, n)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


def read_request(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


def loadgen(*args):
    p = subprocess.run([bin_path("loadgen"), "--quiet", *args], capture_output=True, text=True,
                       timeout=DEADLINE)
    line = [l for l in p.stdout.splitlines() if l.startswith("loadgen: ")]
    check(line, f"no summary: {p.stdout!r} {p.stderr!r}")
    return {k: int(v) for k, v in (kv.split("=") for kv in line[0][9:].split())}


def test_a_reply_without_content_length_ended_by_the_servers_close_is_ok():
    def handle(c, n):
        if read_request(c):
            # HTTP/1.1, no Content-Length, no "Connection: close": the close ends the body.
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npid=4242\n")

    s = Server(handle)
    try:
        for keep in ([], ["-k"]):
            res = loadgen("-t", "2", "-n", "20", "-d", "30s", *keep, f"127.0.0.1:{s.port}")
            check(res["ok"] == 20 and res["failed"] == 0, f"{keep}: {res}")
            check(res["pids"] == 1, f"the body's pid= was not read: {res}")
    finally:
        s.close()


def test_timeout_bounds_the_whole_request_with_its_retry():
    # Connection 0 answers the first request and keeps it alive, then takes 1.5 s to close on
    # the second without a byte; loadgen retries on connection 1, which answers after 1.5 s
    # more. With --timeout 2s the second request took 3 s: a timeout, not an ok.
    def handle(c, n):
        if n == 0:
            read_request(c)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npid=4242\n")
            read_request(c)
            time.sleep(1.5)
            return
        read_request(c)
        time.sleep(1.5)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npid=4242\n")

    s = Server(handle)
    try:
        res = loadgen("-t", "1", "-n", "2", "-k", "--timeout", "2s", "-d", "30s",
                      f"127.0.0.1:{s.port}")
    finally:
        s.close()
    check(res["ok"] == 1 and res["timeout"] == 1 and res["retried"] == 1, f"{res}")


def test_durations_take_a_fraction():
    def handle(c, n):
        while read_request(c):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npid=4242\n")

    s = Server(handle)
    try:
        res = loadgen("-t", "1", "-k", "-d", "0.5s", "--timeout", "1.5s", f"127.0.0.1:{s.port}")
    finally:
        s.close()
    check(res["ok"] > 0 and res["failed"] == 0, f"{res}")
    p = subprocess.run([bin_path("loadgen"), "-d", "1.5us", "127.0.0.1:1"], capture_output=True,
                       text=True, timeout=DEADLINE)
    check(p.returncode == 2 and "--duration 1.5us" in p.stderr,
          f"a duration finer than 1 us was taken: {p.returncode} {p.stderr!r}")
