#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""reload_cost.py - batond's own CPU per reload against workers x listeners (issue #16).

Usage: tests/bench/reload_cost.py [BUILD]. For each (workers, listeners) pair, batond runs
`sleep` workers with --ready none (ready at spawn: what is measured is batond's own work of
a reload, not a server's start-up), then R reloads each waited for with batonctl; its CPU time
comes from /proc/PID/schedstat (nanoseconds on the CPU), read before and after. The control
socket and the worker record beside it live on tmpfs, as they do in /run/baton by default. Prints one
line per pair and a markdown table; writes BUILD/reload_cost.csv. Loopback only.

Knobs: COST_RELOADS=40, COST_WORKERS=1,4,8,64, COST_LISTENERS=1,1000, COST_REPEAT=3 (median).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
RELOADS = int(os.environ.get("COST_RELOADS", "40"))
WORKERS = [int(x) for x in os.environ.get("COST_WORKERS", "1,4,8,64").split(",")]
LISTENERS = [int(x) for x in os.environ.get("COST_LISTENERS", "1,1000").split(",")]
REPEAT = int(os.environ.get("COST_REPEAT", "3"))
DEADLINE = 120.0


def oncpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# The control socket (and the worker record beside it) on tmpfs, as in /run/baton by default.
RUNDIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


def one(workers, listeners):
    with tempfile.TemporaryDirectory(dir=RUNDIR) as d:
        sock = os.path.join(d, "ctl.sock")
        args = [os.path.join(BUILD, "batond"), "-c", sock, "-n", str(workers), "--ready", "none",
                "--drain-timeout", "10s"]
        for _ in range(listeners):
            args += ["-l", "127.0.0.1:0"]
        b = subprocess.Popen(args + ["--", "sleep", "3600"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines = []
        ready = threading.Event()

        def reader():
            for line in b.stderr:
                lines.append(line)
                if "generation 1:" in line and "ready" in line:
                    ready.set()
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            if not ready.wait(DEADLINE):
                sys.exit(f"batond did not start:\n{''.join(lines[-20:])}")
            ctl = [os.path.join(BUILD, "batonctl"), "-q", "-c", sock, "reload"]
            subprocess.run(ctl, check=True, capture_output=True, timeout=DEADLINE)  # warm-up
            c0 = oncpu_ns(b.pid)
            for _ in range(RELOADS):
                subprocess.run(ctl, check=True, capture_output=True, timeout=DEADLINE)
            c1 = oncpu_ns(b.pid)
            hwm = status(b.pid, "VmHWM")
            return (c1 - c0) / RELOADS / 1e6, hwm
        finally:
            b.terminate()
            try:
                b.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                b.kill()
                b.wait()


def main():
    rows = []
    for listeners in LISTENERS:
        for workers in WORKERS:
            runs = [one(workers, listeners) for _ in range(REPEAT)]
            ms = [r[0] for r in runs]
            med = statistics.median(ms)
            rows.append((workers, listeners, med, min(ms), max(ms), max(r[1] for r in runs)))
            print(f"reload cost: {workers} workers x {listeners} listeners: {med:.2f} ms of "
                  f"batond CPU per reload (min {min(ms):.2f}, max {max(ms):.2f}; "
                  f"{med / workers:.3f} ms per worker)", flush=True)
    with open(os.path.join(BUILD, "reload_cost.csv"), "w") as f:
        f.write("workers,listeners,ms_median,ms_min,ms_max,vmhwm_kib\n")
        for r in rows:
            f.write(",".join(str(round(x, 3)) if isinstance(x, float) else str(x) for x in r) +
                    "\n")
    print("\n| workers | listeners | batond CPU per reload (median, min-max) | per worker |")
    print("|---|---|---|---|")
    for w, l, med, lo, hi, _ in rows:
        print(f"| {w} | {l} | {med:.2f} ms ({lo:.2f}-{hi:.2f}) | {med / w:.3f} ms |")


if __name__ == "__main__":
    main()
