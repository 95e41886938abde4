# SPDX-License-Identifier: MIT
"""test_hello.py - worker/examples/hello.c, built against the staged install, under batond.

The Makefile builds build/hello the way a user would: pkg-config against `make install
DESTDIR=$(BUILD)/stage`. Here batond runs it through reloads under loadgen's load, with its
listeners passed both ways libbaton takes them (LISTEN_FDS and the channel).
"""
import os
import re
import signal

from harness import (BUILD, ROOT, Batond, Load, alive, bin_path, check, http_get,
                     reload_and_wait, target_of, wait_for)

HELLO = bin_path("hello")
STAGE = os.path.realpath(os.path.join(ROOT, BUILD, "stage"))
WORKERS = 2
REPLIES = 3  # requests of our own per generation, each answered by a worker of it


def reply_pid(addr):
    """The pid hello's reply names; its whole body is "pid=N\\n"."""
    body = http_get(addr)
    m = re.fullmatch(r"pid=(\d+)\n", body)
    check(m, f"reply body {body!r} does not name a pid")
    return int(m.group(1))


def libbaton_of(pid):
    """The libbaton.so files pid has mapped, from /proc/PID/maps."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1] for line in f if "libbaton.so" in line}


def reloads_under_load(args, reloads):
    """hello as batond's workers through reloads under load: each reload replaces every pid,
    each old worker exits 0 on its own, our replies come from the new generation; returns
    loadgen's counts and batond's log."""
    b = Batond(["-l", "127.0.0.1:0", "-n", str(WORKERS), "--drain-timeout", "20s"] + args,
               [HELLO])
    try:
        addr = b.address()
        b.wait_log(rf"generation 1: {WORKERS}/{WORKERS} workers ready")
        first = b.workers()
        check(len(first) == WORKERS, f"workers {first}")
        for p in first:
            libs = libbaton_of(p)
            check(libs and all(l.startswith(STAGE + os.sep) for l in libs),
                  f"worker {p} maps {libs}, not the staged install's library")
        load = Load(target_of(addr), duration="120s", threads=4)
        try:
            for gen in range(2, 2 + reloads):
                old = set(b.workers())
                check(len(old) == WORKERS, f"before reload {gen}: workers {old}")
                check(reload_and_wait(b, gen) == "done", f"reload {gen} failed:\n{b.log()}")
                wait_for(lambda: not any(alive(p) for p in old), f"generation {gen - 1} to exit")
                new = set(b.workers())
                check(len(new) == WORKERS and not (new & old),
                      f"reload {gen} did not replace the workers: old {old} new {new}")
                for _ in range(REPLIES):
                    pid = reply_pid(addr)
                    check(pid in new, f"generation {gen}: reply from pid {pid}, not {new}")
            check(load.proc.poll() is None, "the load ended before the reloads did")
            res = load.finish()
        finally:
            load.kill()
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, f"batond did not exit 0 after SIGTERM:\n{b.log()}")
        # Every worker drained exited by itself with status 0: none was killed at the deadline.
        n = WORKERS * (reloads + 1)
        wait_for(lambda: b.count(r"\(pid \d+\): exited with ") >= n, f"{n} exits logged")
        check(b.count(r"\(pid \d+\): exited with status 0$") == n,
              f"not every worker exited 0:\n{b.log()}")
        print(f"  hello, {reloads} reloads of {WORKERS} workers under load: {res}")
        return res, b.log()
    finally:
        b.cleanup()


def test_hello_serves_twenty_reloads_under_load_with_zero_failed_and_replaces_every_pid():
    res, _ = reloads_under_load([], 20)
    check(res["ok"] > 0, f"no request succeeded: {res}")
    check(res["failed"] == 0, f"{res['failed']} failed requests over 20 reloads: {res}")
    # 21 generations of 2 workers served; every reply loadgen counted named its pid.
    check(res["pids"] > WORKERS, f"replies came from only {res['pids']} pids")


def test_hello_over_the_channel_drains_on_drain_through_five_reloads_with_zero_failed():
    res, log = reloads_under_load(["--pass", "scm", "-v"], 5)
    check(res["ok"] > 0 and res["failed"] == 0, f"{res}")
    check(res["pids"] > WORKERS, f"replies came from only {res['pids']} pids")
    check(len(re.findall(r"sent DRAIN to worker pid", log)) >= WORKERS * 5,
          f"DRAIN was not sent over the channel:\n{log}")
    check("sent SIGTERM to worker pid" not in log, "a signal was used instead of DRAIN")
