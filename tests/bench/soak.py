#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""soak.py - make soak: many reloads under load with random worker faults (issue #15).

Usage: tests/bench/soak.py [BUILD]. batond -n 4 runs example-httpd through a wrapper that draws
a fault for each worker it starts: 1 in 8 exits 1 at once (a broken build), 1 in 8 is not ready
within --ready-timeout and is killed before it accepts anything (a hung start); the rest serve.
A generation with a faulty worker is rolled back and the old one keeps serving. SOAK_RELOADS
reloads (default 1000), each waited for with batonctl, under loadgen's load. Prints and checks:
failed requests (target 0), reloads done and rolled back, batond's VmRSS and open fds at the
start and at the end (target: the same). Loopback only; bounded by the count and a deadline.
"""
import os
import subprocess
import sys
import tempfile
import time

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
RELOADS = int(os.environ.get("SOAK_RELOADS", "1000"))
DEADLINE = float(os.environ.get("SOAK_DEADLINE", "3600"))

WRAPPER = """#!/bin/sh
[ -e "$FAULTS" ] || exec "$HTTPD"
r=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
case $((r % 8)) in
0) exec "$HTTPD" --fail-start ;;
1) exec "$HTTPD" --startup-delay 5s ;;
*) exec "$HTTPD" ;;
esac
"""


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    build = os.path.abspath(BUILD)
    with tempfile.TemporaryDirectory() as d:
        wrapper = os.path.join(d, "faulty-httpd")
        with open(wrapper, "w") as f:
            f.write(WRAPPER)
        os.chmod(wrapper, 0o755)
        sock = os.path.join(d, "ctl.sock")
        faults = os.path.join(d, "faults")
        env = dict(os.environ, HTTPD=os.path.join(build, "example-httpd"), FAULTS=faults)
        b = subprocess.Popen([os.path.join(build, "batond"), "-c", sock, "-l", "127.0.0.1:0",
                              "-n", "4", "--ready-timeout", "1s", "--drain-timeout", "10s",
                              "--", wrapper], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        addr = None
        for line in b.stderr:
            if "listening on" in line and addr is None:
                addr = line.split()[3]
            if "workers ready" in line:
                break
        ctl = [os.path.join(build, "batonctl"), "-c", sock]
        subprocess.Popen(["cat"], stdin=b.stderr, stdout=subprocess.DEVNULL)
        if b.poll() is not None or addr is None:
            sys.exit(f"soak: batond did not start (exit {b.poll()})")
        open(faults, "w").close()  # the first generation serves: faults from now on
        rss0, fds0 = status_kib(b.pid, "VmRSS"), fds(b.pid)
        load = subprocess.Popen([os.path.join(build, "loadgen"), "-t", "2", "-d",
                                 f"{int(DEADLINE)}s", "--quiet", addr.replace("tcp://", "")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ok = rolled = 0
        t0 = time.monotonic()
        for _ in range(RELOADS):
            if time.monotonic() - t0 > DEADLINE:
                break
            rc = subprocess.run(ctl + ["reload"], capture_output=True).returncode
            if rc == 0:
                ok += 1
            else:
                rolled += 1
        load.send_signal(2)
        out, _ = load.communicate(timeout=120)
        # One more reload without faults, so the last generation is like the first; then the
        # same counts.
        os.unlink(faults)
        subprocess.run(ctl + ["reload"], capture_output=True, check=True)
        rss1, fds1 = status_kib(b.pid, "VmRSS"), fds(b.pid)
        hwm = status_kib(b.pid, "VmHWM")
        subprocess.run(ctl + ["stop"], capture_output=True)
        b.wait(timeout=120)
        summary = [l for l in out.splitlines() if l.startswith("loadgen:")][-1]
        counts = dict(kv.split("=") for kv in summary.split()[1:])
        failed = int(counts["failed"])
        print(f"soak: {ok + rolled} reloads in {time.monotonic() - t0:.0f}s: {ok} done, "
              f"{rolled} rolled back (a faulty worker); {counts['requests']} requests, "
              f"{failed} failed; batond VmRSS {rss0} -> {rss1} KiB (VmHWM {hwm}), fds "
              f"{fds0} -> {fds1}; exit {b.returncode}")
        bad = failed != 0 or fds1 != fds0 or b.returncode != 0
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
