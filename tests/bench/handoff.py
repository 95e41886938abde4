#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""handoff.py - issue #4's figures: handing 1, 100 and 1,000 listeners to a --pass scm worker,
and a reload's time from `batonctl reload` until the old generation is gone.

Handoff: the worker (tests/integration/scm_worker.py's protocol code) times from sending HELLO
to holding every listener fd; each of 7 generations measures once; medians reported.
Reload: 4 example-httpd workers (ready as soon as they run), 20 reloads, each timed from
starting `batonctl reload` until every pid of the old generation has exited.
"""
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("BUILD", sys.argv[1] if len(sys.argv) > 1 else "build")

from harness import Batond, alive, bin_path, wait_for  # noqa: E402

WORKER = r'''
import os, socket, struct, sys, time
sys.path.insert(0, sys.argv[2])
from scm_worker import HELLO, LISTENERS, READY, message, receive
ch = socket.socket(fileno=int(os.environ.pop("BATON_FD")))
t0 = time.monotonic_ns()
ch.sendall(message(HELLO, struct.pack("<IHH", os.getpid(), 1, 0)))
fds, total = [], None
while total is None or len(fds) < total:
    kind, body, got = receive(ch)
    first, count, total = struct.unpack("<HHH", body[:6])
    fds += got
dt = (time.monotonic_ns() - t0) // 1000
with open(sys.argv[1], "a") as f:
    f.write(f"{len(fds)} {dt}\n")
ch.sendall(message(READY))
time.sleep(600)
'''


def handoff(n, d):
    out = os.path.join(d, f"handoff-{n}")
    args = []
    for _ in range(n):
        args += ["-l", "127.0.0.1:0"]
    b = Batond(args + ["--pass", "scm", "--drain-timeout", "1s", "-c", f"{d}/ctl-{n}"],
               [sys.executable, "-c", WORKER, out, os.path.join(HERE, "..", "integration")])
    try:
        b.wait_log(r"generation 1: 1/1 workers ready", timeout=120)
        for gen in range(2, 8):
            mark = b.mark()
            b.signal(1)  # SIGHUP
            b.wait_log(rf"generation {gen}: .*reload done", start=mark, timeout=120)
        rows = [line.split() for line in open(out)]
        assert all(int(r[0]) == n for r in rows), rows
        return [int(r[1]) for r in rows]
    finally:
        b.cleanup()


def reload_time(d):
    sock = f"{d}/ctl.sock"
    b = Batond(["-c", sock, "-l", "127.0.0.1:0", "-n", "4"], [bin_path("example-httpd")])
    try:
        b.wait_log(r"generation 1: 4/4 workers ready")
        times = []
        for _ in range(20):
            old = b.workers()
            t0 = time.monotonic()
            subprocess.run([bin_path("batonctl"), "-c", sock, "reload"], check=True,
                           stdout=subprocess.DEVNULL)
            while any(alive(p) for p in old):
                time.sleep(0.0005)
            times.append((time.monotonic() - t0) * 1000)
            wait_for(lambda: len(b.workers()) == 4, "4 workers")
        return times
    finally:
        b.cleanup()


def main():
    with tempfile.TemporaryDirectory() as d:
        print("| listeners handed over | median | min | max | target |")
        print("|---:|---:|---:|---:|---|")
        for n in (1, 100, 1000):
            us = handoff(n, d)
            print(f"| {n} | {statistics.median(us) / 1000:.2f} ms | {min(us) / 1000:.2f} ms | "
                  f"{max(us) / 1000:.2f} ms | {'< 5 ms for 1,000' if n == 1000 else ''} |",
                  flush=True)
        t = sorted(reload_time(d))
        print()
        print("| reload, 4 workers ready at once | median | p90 | max | target |")
        print("|---|---:|---:|---:|---|")
        print(f"| `batonctl reload` to old generation gone | {statistics.median(t):.1f} ms | "
              f"{t[int(len(t) * 0.9) - 1]:.1f} ms | {t[-1]:.1f} ms | < 20 ms |")


if __name__ == "__main__":
    main()
