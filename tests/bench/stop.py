#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""stop.py - clients reset at a final stop with 1,000 queued connections: batond vs a plain close.

Three runs on loopback, each with N clients connected and their request sent while nobody
accepts (batond's workers are stopped with SIGSTOP, the plain server never accepts):
  plain close        a server closes its listener: the kernel resets every queued client
  batond immediate   --stop-mode immediate: workers told to drain before taking the queue
  batond graceful    the two-stage close: refuse new SYNs, let workers take the queue, close
Prints one line per run and a markdown table; run by `make bench` (tests/bench/run).
"""
import os
import resource
import signal
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("BUILD", sys.argv[1] if len(sys.argv) > 1 else "build")

from harness import Batond  # noqa: E402
from test_stop import TINY, outcome  # noqa: E402

N = 1000


def clients(port):
    out = []
    for _ in range(N):
        c = socket.create_connection(("127.0.0.1", port), timeout=60)
        c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        out.append(c)
    return out


def tally(results):
    return {k: results.count(k) for k in ("ok", "reset", "empty", "bad")}


def plain_close():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    cs = clients(srv.getsockname()[1])
    t0 = time.monotonic()
    srv.close()
    dt = time.monotonic() - t0
    return tally([outcome(c) for c in cs]), dt


def batond(mode):
    b = Batond(["-l", "127.0.0.1:0", "--backlog", "4096", "-n", "2", "--stop-mode", mode,
                "--drain-timeout", "60s"], [sys.executable, TINY])
    try:
        port = int(b.address().rsplit(":", 1)[1])
        b.wait_log(r"generation 1: 2/2 workers ready")
        workers = b.workers()
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        cs = clients(port)
        t0 = time.monotonic()
        b.signal(signal.SIGTERM)
        if mode == "graceful":
            b.wait_log(r"stop: new connections refused")
        else:
            b.wait_log(r"stopping: ")
        for w in workers:
            os.kill(w, signal.SIGCONT)
        results = [outcome(c) for c in cs]
        b.wait_exit(timeout=120)
        dt = time.monotonic() - t0
        return tally(results), dt
    finally:
        b.cleanup()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * N)), hard))
    rows = []
    for name, fn in (("plain close()", plain_close),
                     ("batond --stop-mode immediate", lambda: batond("immediate")),
                     ("batond --stop-mode graceful", lambda: batond("graceful"))):
        t, dt = fn()
        print(f"stop: {name}: ok={t['ok']} reset={t['reset']} empty={t['empty']} "
              f"bad={t['bad']} stop_ms={dt * 1000:.0f}", flush=True)
        rows.append((name, t, dt))
    print()
    print(f"| {N} queued clients | served | reset | empty | stop duration |")
    print("|---|---:|---:|---:|---:|")
    for name, t, dt in rows:
        print(f"| {name} | {t['ok']} | {t['reset']} | {t['empty']} | {dt * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
