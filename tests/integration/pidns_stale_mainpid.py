#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""pidns_stale_mainpid.py - run as PID 1 of a new PID namespace (unshare --pid --fork
--mount-proc) by test_reliability.py: a worker names a child with MAINPID=, then reaps that
child itself; a process of another user gets the freed number; batond is stopped. Prints
"stranger untouched" or "stranger got SIG...", and exits 0 either way (1: the scene could not
be set up)."""
import os
import re
import signal
import subprocess
import sys
import time

BUILD, WORKER, TMP = sys.argv[1], sys.argv[2], sys.argv[3]
DEADLINE = 60.0


def wait_line(lines, proc, pattern):
    rx = re.compile(pattern)
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = rx.search(line)
        if m:
            return m
    sys.exit(f"no line matching {pattern!r}:\n" + "".join(lines))


def main():
    marker = os.path.join(TMP, "stale-mainpid")
    gotfile = os.path.join(TMP, "stranger-got")
    b = subprocess.Popen([os.path.join(BUILD, "batond"), "--no-control", "-l", "127.0.0.1:0",
                          "--drain-timeout", "2s", "--", sys.executable, WORKER, "stale", marker],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    lines = []
    stranger = None
    try:
        m = wait_line(lines, b, r"main pid is now (\d+) \(was (\d+)\)")
        child, worker = int(m.group(1)), int(m.group(2))
        os.kill(worker, signal.SIGUSR1)
        # Reaped by the worker (or, once batond killed the worker for it, by batond): the
        # number is free when /proc has no entry for it, not even a zombie.
        end = time.monotonic() + DEADLINE
        while os.path.exists(f"/proc/{child}") and time.monotonic() < end:
            time.sleep(0.05)
        if os.path.exists(f"/proc/{child}"):
            sys.exit(f"pid {child} was never reaped")
        # The next pid the namespace gives out is the child's old one.
        code = ("import signal,sys,time\n"
                f"signal.signal(signal.SIGTERM,lambda s,f:(open({gotfile!r},'w').write('TERM'),"
                "sys.exit(0)))\n"
                "time.sleep(120)\n")
        for _ in range(20):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(child - 1))
            stranger = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534",
                                         "--clear-groups", sys.executable, "-c", code])
            if stranger.pid == child:
                break
            stranger.kill()
            stranger.wait()
            stranger = None
        if not stranger:
            sys.exit(f"could not place a process at pid {child}")
        time.sleep(0.5)  # the stranger installs its handler (a fault scene, not an assertion)
        b.send_signal(signal.SIGTERM)
        try:
            b.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            b.kill()
        got = open(gotfile).read() if os.path.exists(gotfile) else ""
        alive = stranger.poll() is None
        print("stranger untouched" if not got and alive else f"stranger got SIG{got or 'KILL'}")
        print("".join(lines), file=sys.stderr)
    finally:
        if stranger and stranger.poll() is None:
            stranger.kill()
        if b.poll() is None:
            b.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
