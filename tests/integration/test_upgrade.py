# SPDX-License-Identifier: MIT
"""test_upgrade.py - batond re-executes itself (SIGUSR2) and adopts its running workers."""
import json
import os
import shutil
import subprocess
import signal
import tempfile

from harness import (Batond, Load, alive, bin_path, check, serving_pid, steady_fds, target_of,
                     wait_for)

HTTPD = bin_path("example-httpd")


def fd_count(pid):
    return len(steady_fds(pid))


def upgrade(b, n):
    """SIGUSR2, then the n-th takeover line."""
    mark = b.mark()
    b.signal(signal.SIGUSR2)
    m, i = b.wait_log(r"upgrade: took over (\d+) listeners and (\d+) workers|upgrade .*refused",
                      start=mark)
    if "took over" in m.group(0):
        # Settled: every event source of the new image is set up.
        b.wait_log(r"batond \d+ \(upgraded\):", start=i)
    return m.group(0)


def test_twenty_self_upgrades_under_load_keep_the_workers_and_drop_nothing():
    with tempfile.TemporaryDirectory() as d:
        b = Batond(["-l", "127.0.0.1:0", "-l", f"unix:{d}/s.sock", "-n", "4",
                    "--pid-file", f"{d}/pid"], [HTTPD])
        try:
            addr = b.address()
            b.wait_log(r"generation 1: 4/4 workers ready")
            workers = b.workers()
            fds = fd_count(b.pid)
            load = Load(target_of(addr), duration="120s", threads=4)
            try:
                for i in range(20):
                    line = upgrade(b, i)
                    check("took over 2 listeners and 4 workers" in line, f"upgrade {i}: {line}")
                    # Twice in make check one more child of batond showed for a moment after the
                    # takeover line (gone when the message was made): wait for the same set.
                    wait_for(lambda: b.workers() == workers,
                             f"upgrade {i}: workers {workers}, now {b.workers()}")
                    check(fd_count(b.pid) == fds, f"upgrade {i}: {fds} fds -> {fd_count(b.pid)}")
                res = load.finish()
            finally:
                load.kill()
            check(res["ok"] > 0 and res["failed"] == 0, f"load over 20 upgrades: {res}")
            check(open(f"{d}/pid").read().strip() == str(b.pid), "pid file")
            # The upgraded batond still rolls generations and stops cleanly.
            b.signal(signal.SIGHUP)
            b.wait_log(r"generation 2: .*reload done")
            wait_for(lambda: not (set(b.workers()) & set(workers)), "generation 1 to exit")
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, "exit status")
            check(not os.path.exists(f"{d}/s.sock"), "socket file left behind")
        finally:
            b.cleanup()


def test_upgrade_to_a_binary_that_exits_at_once_leaves_the_old_batond_serving():
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "batond")
        shutil.copy(bin_path("batond"), exe)
        b = Batond(["-l", "127.0.0.1:0"], [HTTPD], batond=exe)
        try:
            addr = b.address()
            b.wait_log(r"generation 1: 1/1 workers ready")
            w = b.workers()
            with open(exe + ".bad", "w") as f:
                f.write("#!/bin/sh\nexit 0\n")
            os.chmod(exe + ".bad", 0o755)
            os.rename(exe, exe + ".good")
            os.rename(exe + ".bad", exe)
            line = upgrade(b, 0)
            check("refused" in line, f"a broken binary was executed: {line}")
            check(b.proc.poll() is None, "batond died")
            check(serving_pid(addr) in w, "the old generation does not serve")
            os.rename(exe + ".good", exe)
            line = upgrade(b, 1)
            check("took over" in line, f"the good binary: {line}")
            check(b.workers() == w, "workers changed")
        finally:
            b.cleanup()


def test_upgrade_to_another_state_version_hands_over_and_rolls_a_fresh_generation():
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "batond")
        real = os.path.join(d, "batond.next")
        shutil.copy(bin_path("batond"), exe)
        shutil.copy(bin_path("batond"), real)
        b = Batond(["-l", "127.0.0.1:0", "-l", f"u=unix:{d}/u.sock", "-n", "2"], [HTTPD],
                   batond=exe)
        try:
            addr = b.address()
            b.wait_log(r"generation 1: 2/2 workers ready")
            old = set(b.workers())
            # The "new release": speaks state version 999, so only the minimal handoff works.
            with open(exe + ".tmp", "w") as f:
                f.write("#!/bin/sh\n"
                        'if [ "$1" = --upgrade-check ]; then echo "baton-upgrade-ok 999"; '
                        "exit 0; fi\n"
                        f'exec "{real}" "$@"\n')
            os.chmod(exe + ".tmp", 0o755)
            os.rename(exe + ".tmp", exe)
            load = Load(target_of(addr), duration="120s", threads=4)
            try:
                mark = b.mark()
                b.signal(signal.SIGUSR2)
                b.wait_log(r"took over the minimal handoff: 2 listeners, 2 workers", start=mark)
                b.wait_log(r"generation \d+: 2/2 workers ready in .*; reload done", start=mark)
                wait_for(lambda: not any(alive(p) for p in old), "the adopted workers to drain")
                new = set(b.workers())
                check(len(new) == 2 and not (new & old), f"{old} -> {new}")
                res = load.finish()
            finally:
                load.kill()
            check(res["failed"] == 0 and res["ok"] > 0, res)
            check(b.proc.poll() is None, "batond died")
            check(serving_pid(f"unix:{d}/u.sock") in new, "the Unix listener is not served")
        finally:
            b.cleanup()


def test_status_after_an_upgrade_still_names_the_last_reload():
    b = Batond(["-l", "127.0.0.1:0"], [HTTPD])
    try:
        b.wait_log(r"generation 1: 1/1 workers ready")
        b.signal(signal.SIGHUP)
        b.wait_log(r"generation 2: .*reload done")
        before = status(b)
        check("last reload: generation 2: " in before, before)
        check("took over" in upgrade(b, 0), "upgrade")
        after = status(b)
        check("last reload: generation 2: " in after, f"before:\n{before}\nafter:\n{after}")
        last = json.loads(status(b, "--json"))["last_reload"]
        check(last and last["generation"] == 2 and last["ok"], last)
    finally:
        b.cleanup()


def status(b, *args):
    p = subprocess.run([bin_path("batonctl"), "-c", b.control(), "status", *args],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, p.stderr)
    return p.stdout
