# SPDX-License-Identifier: MIT
"""test_batond.py - batond with real workers on loopback: reloads, rollbacks, drains, crashes."""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

from harness import environ_of
from harness import (Batond, Load, TestFailure, alive, bin_path, broken_while, check, read_all,
                     reload_and_wait, serving_pid, socket_inodes, start_time, target_of,
                     wait_for)

HTTPD = bin_path("example-httpd")


def started(b, gen=1):
    b.wait_log(rf"generation {gen}: \d+/\d+ workers ready")


def test_twenty_reloads_under_load_drop_nothing_and_replace_every_pid():
    b = Batond(["-l", "127.0.0.1:0", "-n", "4", "--drain-timeout", "20s"], [HTTPD])
    try:
        addr = b.address()
        started(b)
        load = Load(target_of(addr), duration="120s", threads=4)
        try:
            wait_for(lambda: len(b.workers()) == 4, "4 workers")
            for gen in range(2, 22):
                old = set(b.workers())
                check(len(old) == 4, f"before reload {gen}: workers {old}")
                check(reload_and_wait(b, gen) == "done", f"reload {gen} failed:\n{b.log()}")
                wait_for(lambda: not any(alive(p) for p in old), f"generation {gen - 1} to exit")
                new = set(b.workers())
                check(len(new) == 4 and not (new & old),
                      f"reload {gen} did not replace the workers: old {old} new {new}")
            check(load.proc.poll() is None, "the load ended before the reloads did")
            res = load.finish()
        finally:
            load.kill()
        check(res["ok"] > 0, f"no request succeeded: {res}")
        check(res["failed"] == 0, f"{res['failed']} failed requests over 20 reloads: {res}")
        # 21 generations of 4 workers served; connection-per-request sees most of them.
        check(res["pids"] > 4, f"replies came from only {res['pids']} pids")
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, "batond did not exit 0 after SIGTERM")
    finally:
        b.cleanup()


def test_new_generation_that_exits_1_is_rolled_back_with_zero_failed():
    with tempfile.TemporaryDirectory() as d:
        flag = os.path.join(d, "broken")
        cmd = broken_while(flag, "exit 1", [HTTPD])
        b = Batond(["-l", "127.0.0.1:0", "-n", "2"], cmd)
        try:
            addr = b.address()
            started(b)
            old = set(b.workers())
            load = Load(target_of(addr), duration="120s", threads=4)
            try:
                open(flag, "w").close()
                check(reload_and_wait(b, 2) == "failed", "broken generation was not rolled back")
                m, _ = b.wait_log(r"reload to generation 2 failed: (.*)")
                check("exited with status 1 before it was ready" in m.group(1),
                      f"unclear reason: {m.group(0)}")
                os.unlink(flag)
                # The old generation still serves, and a good reload afterwards works.
                # The failed generation's processes go away (killed, then reaped) shortly after.
                wait_for(lambda: set(b.workers()) == old, f"only the old workers {old} left")
                check(serving_pid(addr) in old, "a reply came from outside generation 1")
                check(reload_and_wait(b, 3) == "done", "the next reload failed")
                res = load.finish()
            finally:
                load.kill()
            check(res["failed"] == 0, f"{res['failed']} failed requests: {res}")
            check(res["ok"] > 0, f"no request succeeded: {res}")
        finally:
            b.cleanup()


def test_new_generation_that_is_never_ready_is_killed_at_the_ready_timeout():
    with tempfile.TemporaryDirectory() as d:
        flag = os.path.join(d, "slow")
        cmd = broken_while(flag, "exec sleep 600", [HTTPD])
        b = Batond(["-l", "127.0.0.1:0", "--ready-timeout", "1s"], cmd)
        try:
            addr = b.address()
            started(b)
            old = set(b.workers())
            open(flag, "w").close()
            check(reload_and_wait(b, 2) == "failed", "a never-ready generation was kept")
            b.wait_log(r"reload to generation 2 failed: worker 0 \(pid \d+\) was not ready in time")
            b.wait_log(r"generation 2: all workers exited")
            check(set(b.workers()) == old, "the old generation was touched")
            check(serving_pid(addr) in old, "the old generation does not serve")
        finally:
            b.cleanup()


def test_worker_that_ignores_sigterm_is_killed_at_the_drain_deadline():
    b = Batond(["-l", "127.0.0.1:0", "--drain-timeout", "1s"], [HTTPD, "--ignore-term"])
    try:
        started(b)
        old = b.workers()
        check(len(old) == 1, f"workers: {old}")
        check(reload_and_wait(b, 2) == "done", "reload failed")
        b.wait_log(rf"generation 1 worker 0 \(pid {old[0]}\): drain deadline passed; killing it")
        b.wait_log(rf"generation 1 worker 0 \(pid {old[0]}\): exited with signal KILL")
        wait_for(lambda: not alive(old[0]), "the stuck worker to die")
    finally:
        b.cleanup()


def test_crashed_worker_is_respawned():
    b = Batond(["-l", "127.0.0.1:0", "-n", "2"], [HTTPD])
    try:
        addr = b.address()
        started(b)
        before = b.workers()
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        b.wait_log(rf"\(pid {victim}\): exited unexpectedly with signal KILL; respawning in 100ms")
        b.wait_log(r"generation 1 worker \d \(pid \d+\): respawned and ready")
        after = wait_for(lambda: (lambda w: w if len(w) == 2 else None)(b.workers()),
                         "2 workers again")
        check(victim not in after and before[1] in after, f"{before} -> {after}")
        check(serving_pid(addr) in after, "a reply from an unknown pid")
    finally:
        b.cleanup()


def test_worker_sees_exactly_stdio_and_its_listeners():
    with tempfile.TemporaryDirectory() as d:
        # sleep opens nothing of its own: whatever it has, it inherited.
        b = Batond(["-l", "127.0.0.1:0", "-l", f"api=unix:{d}/api.sock", "-l", "[::1]:0",
                    "--ready", "none"], ["sleep", "600"])
        try:
            started(b)
            w = wait_for(lambda: b.workers(), "the worker")[0]
            fds = sorted(int(x) for x in os.listdir(f"/proc/{w}/fd"))
            check(fds == [0, 1, 2, 3, 4, 5], f"worker fds {fds}")
            mine = socket_inodes(b.pid)
            theirs = socket_inodes(w)
            for fd in (3, 4, 5):
                check(theirs.get(fd) in mine.values(), f"worker fd {fd} is not a batond listener")
            check(len({theirs[3], theirs[4], theirs[5]}) == 3, "listeners out of order or shared")
            env = environ_of(w)
            check(env.get(b"LISTEN_FDS") == b"3",
                  f"LISTEN_FDS={env.get(b'LISTEN_FDS')} in {w}'s environment "
                  f"({os.readlink(f'/proc/{w}/exe')}): {sorted(env)}")
            check(env[b"LISTEN_PID"] == str(w).encode(), "LISTEN_PID is not the worker's pid")
            check(env[b"LISTEN_FDNAMES"] == b"listen0:api:listen2", "LISTEN_FDNAMES")
            check(env[b"BATON_GENERATION"] == b"1" and env[b"BATON_WORKER"] == b"0", "BATON_*")
            check(env[b"NOTIFY_SOCKET"].startswith(b"/"), "NOTIFY_SOCKET is not a path")
            with open(f"/proc/{w}/stat") as f:
                pgrp = int(f.read().rsplit(")", 1)[1].split()[2])
            check(pgrp == w, f"worker does not lead its process group ({pgrp})")
            with open(f"/proc/{w}/status") as f:
                st = f.read()
            check(re.search(r"^SigBlk:\s*0+$", st, re.M), "worker starts with signals blocked")
            check(re.search(r"^SigIgn:\s*0+$", st, re.M), "worker starts with signals ignored")
        finally:
            b.cleanup()


def test_every_listener_kind_is_served():
    with tempfile.TemporaryDirectory() as d:
        b = Batond(["-l", "127.0.0.1:0", "-l", f"api=unix:{d}/api.sock", "-l", "[::1]:0",
                    "-l", "unix:@baton-test-%d" % os.getpid()], [HTTPD])
        try:
            started(b)
            w = b.workers()[0]
            for name in ("listen0", "api", "listen2", "listen3"):
                spec = b.address(name)
                check(serving_pid(spec) == w, f"{spec} not served by the worker")
        finally:
            b.cleanup()


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)


def accept_queue(port):
    """Accept-queue length of the TCP listener on port (rx_queue of a LISTEN row)."""
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].split(":")[1], 16) == port:
                return int(cols[4].split(":")[1], 16)
    raise TestFailure(f"no listener on port {port}")


def test_graceful_stop_finishes_requests_in_flight_and_cleans_up():
    with tempfile.TemporaryDirectory() as d:
        pidfile = f"{d}/batond.pid"
        sock = f"{d}/s.sock"
        b = Batond(["-l", "127.0.0.1:0", "-l", f"unix:{sock}", "--pid-file", pidfile, "-n", "2"],
                   [HTTPD])
        try:
            addr = b.address()
            port = int(addr.rsplit(":", 1)[1])
            started(b)
            check(open(pidfile).read().strip() == str(b.pid), "pid file content")
            # Eight slow requests in flight, all accepted by a worker before the stop.
            clients = []
            for _ in range(8):
                c = socket.create_connection(("127.0.0.1", port), timeout=30)
                c.sendall(b"GET /slow?ms=1500 HTTP/1.0\r\nHost: x\r\n\r\n")
                clients.append(c)
            wait_for(lambda: accept_queue(port) == 0, "workers to accept every client")
            b.signal(signal.SIGTERM)
            replies = []
            for c in clients:
                replies.append(read_all(c))
                c.close()
            check(b.wait_exit() == 0, "batond exit status")
            complete = [r for r in replies if r.startswith(b"HTTP/1.1 200") and b"pid=" in r]
            check(len(complete) == 8, f"{8 - len(complete)} of 8 requests in flight were lost")
            check(not os.path.exists(sock), "the socket file was left behind")
            check(not os.path.exists(pidfile), "the pid file was left behind")
            check(not any(alive(p) and start_time(p) == t for p, t in b.known.items()),
                  "a worker outlived batond")
        finally:
            b.cleanup()


def test_first_generation_that_never_gets_ready_exits_1():
    b = Batond(["-l", "127.0.0.1:0", "-n", "2"], ["/bin/sh", "-c", "exit 3"])
    try:
        check(b.wait_exit() == 1, "exit status")
        b.wait_log(r"generation 1 failed to start: worker \d \(pid \d+\) exited with status 3")
    finally:
        b.cleanup()


def test_notify_from_a_process_that_is_not_a_worker_is_ignored():
    b = Batond(["-l", "127.0.0.1:0"], [HTTPD, "--startup-delay", "3s"])
    try:
        b.address()
        w = wait_for(lambda: b.workers(), "the worker")[0]
        # Until its execve() the child still has batond's environment.
        env = wait_for(lambda: (lambda e: e if b"NOTIFY_SOCKET" in e else None)(environ(w)),
                       "the worker's exec")
        addr = env[b"NOTIFY_SOCKET"].decode()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"READY=1", addr)
        s.close()
        # Ready only by the worker itself, after its delay.
        m, _ = b.wait_log(r"generation 1: 1/1 workers ready in (\d+)(ms|s)")
        ms = int(m.group(1)) * (1000 if m.group(2) == "s" else 1)
        check(ms >= 2900, f"a stranger's READY=1 made generation 1 ready after {ms}ms")
    finally:
        b.cleanup()


def run_bad(args):
    p = subprocess.run([bin_path("batond")] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30)
    return p.returncode, p.stderr


def test_bad_command_lines_exit_2_with_a_clear_message():
    cases = [
        (["--", "true"], "no listener"),
        (["-l", "127.0.0.1:0"], "no worker command"),
        (["-l", "127.0.0.1:99999", "--", "true"], "invalid listen address '127.0.0.1:99999'"),
        (["-l", "nonsense", "--", "true"], "invalid listen address 'nonsense'"),
        (["-l", "127.0.0.1:0", "--bogus", "--", "true"], "unknown option '--bogus'"),
        (["-l", "127.0.0.1:0", "-n", "0", "--", "true"], "invalid --workers '0'"),
        (["-l", "127.0.0.1:0", "--drain-timeout", "5 minutes", "--", "true"],
         "invalid --drain-timeout"),
        (["-l", "127.0.0.1:0", "--drain-signal", "NOPE", "--", "true"], "invalid --drain-signal"),
        (["-l", "127.0.0.1:0", "--drain-signal", "KILL", "--", "true"],
         "a worker cannot catch SIGKILL"),
        (["-l", "a=b=127.0.0.1:0", "--", "true"], "expected [NAME=]HOST:PORT"),
        (["-l", "127.0.0.1:0", "--ready", "maybe", "--", "true"], "invalid --ready 'maybe'"),
        (["-l", "a=127.0.0.1:0", "-l", "a=127.0.0.1:0", "--", "true"], "duplicate listener name"),
        (["-l", "127.0.0.1:0", "--", "no-such-command-baton"],
         "worker command 'no-such-command-baton': No such file or directory"),
    ]
    for args, expect in cases:
        rc, err = run_bad(args)
        check(rc == 2, f"{args}: exit {rc}, stderr {err!r}")
        check(expect in err, f"{args}: expected {expect!r} in {err!r}")
        check(err.startswith("batond: "), f"{args}: message not prefixed: {err!r}")


def test_address_in_use_and_foreign_files_are_refused_and_left_alone():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        rc, err = run_bad(["-l", f"127.0.0.1:{port}", "--", "true"])
        check(rc == 2, f"exit {rc}")
        check(f"listen tcp://127.0.0.1:{port}: Address already in use" in err, err)
    finally:
        taken.close()
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/file"
        with open(path, "w") as f:
            f.write("precious")
        rc, err = run_bad(["-l", f"unix:{path}", "--", "true"])
        check(rc == 2 and f"listen unix:{path}: File exists" in err, f"{rc} {err}")
        check(open(path).read() == "precious", "a regular file was touched")


def test_help_and_version():
    p = subprocess.run([bin_path("batond"), "--help"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and "--drain-timeout" in p.stdout and "--ready" in p.stdout, "help")
    p = subprocess.run([bin_path("batond"), "--version"], capture_output=True, text=True,
                       timeout=30)
    check(p.returncode == 0 and re.match(r"batond \d+\.\d+\.\d+", p.stdout), "version")


def test_every_problem_of_a_command_line_is_reported_at_once():
    p = subprocess.run([bin_path("batond"), "--pass", "scm,env", "--ready-timeout", "soon",
                        "--", "true"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 2, f"exit {p.returncode}")
    lines = p.stderr.splitlines()
    check(any("invalid --pass 'scm,env': scm goes alone" in l for l in lines), p.stderr)
    check(any("invalid --ready-timeout 'soon'" in l for l in lines), p.stderr)
    check(any("no listener" in l for l in lines), p.stderr)
    check(lines[-1] == "batond: 3 problems with the command line (try 'batond --help')",
          p.stderr)


def test_help_says_what_0_means_for_every_timeout():
    out = subprocess.run([bin_path("batond"), "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    for opt in ("--ready-timeout", "--drain-timeout", "--stop-timeout"):
        text = out[out.index(opt):]
        text = text[:text.index("\n      --", 1)]
        check("0:" in text, f"{opt} does not say what 0 means: {text}")
