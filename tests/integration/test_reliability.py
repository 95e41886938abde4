# SPDX-License-Identifier: MIT
"""test_reliability.py - batond and its workers when something around them misbehaves:
a paused batond, strangers on the notify socket (issue #15)."""
import errno
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

from harness import environ_of
from harness import (Batond, Load, alive, bin_path, check, http_get, outcome, queue_clients,
                     reload_and_wait, target_of, wait_for)

HTTPD = bin_path("example-httpd")
QUEUED = 20  # clients in the accept queue when batond is killed
PAUSE_SEC = 5  # batond stopped this long: far more STATUS lines than its queue holds (10)


def worker_env(pid):
    return environ_of(pid)


def test_a_paused_batond_stalls_no_worker_under_load():
    # example-httpd reports its in-flight count (STATUS=) a few times a second. With a
    # blocking sd_notify() every worker stopped in it once batond's queue was full, and the
    # requests it held timed out; libbaton now never blocks, so none may fail.
    b = Batond(["-l", "127.0.0.1:0", "-n", "2"], [HTTPD])
    try:
        addr = b.address()
        b.wait_log(r"generation 1: 2/2 workers ready")
        load = Load(target_of(addr), duration="60s", threads=4, extra=("--timeout", "2s"))
        try:
            wait_for(lambda: len(b.workers()) == 2, "2 workers")
            b.signal(signal.SIGSTOP)
            try:
                # The load goes on while batond reads nothing; a reply per request proves it.
                deadline = time.monotonic() + PAUSE_SEC
                while time.monotonic() < deadline:
                    check(load.proc.poll() is None, "the load ended during the pause")
                    time.sleep(0.5)
            finally:
                b.signal(signal.SIGCONT)
            res = load.finish()
        finally:
            load.kill()
        check(res["ok"] > 0, f"no request succeeded: {res}")
        check(res["failed"] == 0, f"{res['failed']} requests failed while batond was paused: {res}")
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, "batond did not exit 0")
    finally:
        b.cleanup()


def test_the_notify_socket_is_a_path_only_root_and_batonds_uid_may_use():
    b = Batond(["-l", "127.0.0.1:0", "-n", "1"], [HTTPD])
    try:
        b.wait_log(r"generation 1: 1/1 workers ready")
        w = b.workers()[0]
        path = worker_env(w)[b"NOTIFY_SOCKET"].decode()
        check(path.startswith("/"), f"NOTIFY_SOCKET is not a path: {path!r}")
        st = os.stat(path)
        check(stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600,
              f"{path}: mode {oct(st.st_mode)}")
        # A stranger (uid 65534) cannot fill batond's queue: the file refuses it.
        probe = ("import socket,sys\n"
                 "s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\n"
                 "try:\n s.sendto(b'STATUS=stranger',sys.argv[1])\nexcept OSError as e:\n"
                 " print(e.errno)\nelse:\n print(0)\n")
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-c", probe, path],
                             capture_output=True, text=True, timeout=30)
        check(out.stdout.strip() == str(errno.EACCES),
              f"uid 65534 sending to {path}: {out.stdout!r} {out.stderr!r}")
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, "batond did not exit 0")
        check(not os.path.exists(path), f"{path} left behind after the stop")
    finally:
        b.cleanup()


def test_notify_socket_at_abstract_on_request_and_at_a_given_path():
    with tempfile.TemporaryDirectory() as d:
        given = os.path.join(d, "n.sock")
        for arg, want in (("@", "@"), (given, given)):
            b = Batond(["-l", "127.0.0.1:0", "--notify-socket", arg], [HTTPD])
            try:
                b.wait_log(r"generation 1: 1/1 workers ready")
                got = worker_env(b.workers()[0])[b"NOTIFY_SOCKET"].decode()
                check(got.startswith(want) if want == "@" else got == want,
                      f"--notify-socket {arg}: NOTIFY_SOCKET={got!r}")
                b.signal(signal.SIGTERM)
                check(b.wait_exit() == 0, "batond did not exit 0")
            finally:
                b.cleanup()
        check(not os.path.exists(given), f"{given} left behind")


HERE = os.path.dirname(os.path.abspath(__file__))
MAINPID_WORKER = os.path.join(HERE, "mainpid_worker.py")


def test_a_stale_mainpid_never_makes_batond_signal_a_stranger():
    # A worker names a child as its main pid, then reaps that child itself; in a PID namespace
    # the test gives the freed number to a process of uid 65534 and stops batond. Before pidfds
    # batond sent that stranger its drain signal (and SIGKILL at the deadline).
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)  # the stranger (uid 65534) writes down the signal it got
        out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                              os.path.join(HERE, "pidns_stale_mainpid.py"),
                              os.path.dirname(bin_path("batond")), MAINPID_WORKER, d],
                             capture_output=True, text=True, timeout=180)
    check(out.returncode == 0, f"the scene could not be set up: {out.stdout} {out.stderr}")
    check(out.stdout.strip() == "stranger untouched", f"{out.stdout}\n{out.stderr}")


def test_mainpid_from_a_group_member_or_for_a_non_descendant_is_ignored():
    for mode, why in (("member", "only the main process may name another"),
                      ("stranger", "not a descendant of the worker")):
        b = Batond(["-l", "127.0.0.1:0"], [sys.executable, MAINPID_WORKER, mode])
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            b.wait_log(re.escape(why))
            check(b.count(r"main pid is now") == 0, f"{mode}: MAINPID accepted:\n{b.log()}")
            w = b.workers()
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, f"{mode}: batond did not exit 0")
            check(len(w) == 1, f"{mode}: workers {w}")
        finally:
            b.cleanup()


def test_a_main_process_reaped_by_its_parent_counts_as_the_workers_exit():
    with tempfile.TemporaryDirectory() as d:
        marker = os.path.join(d, "reaped")
        b = Batond(["-l", "127.0.0.1:0"], [sys.executable, MAINPID_WORKER, "stale", marker])
        try:
            m, _ = b.wait_log(r"main pid is now (\d+) \(was (\d+)\)")
            child, worker = int(m.group(1)), int(m.group(2))
            os.kill(worker, signal.SIGUSR1)
            b.wait_log(rf"main pid {child} exited")
            # The rest of its group goes, and the slot is served again.
            wait_for(lambda: not os.path.exists(f"/proc/{worker}") or
                     open(f"/proc/{worker}/stat").read().split()[2] == "Z", "the old worker")
            b.wait_log(r"respawn|restart|crashed|exited", timeout=60)
            wait_for(lambda: [p for p in b.workers() if p not in (worker, child)],
                     "a new worker")
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, "batond did not exit 0")
        finally:
            b.cleanup()


def status_pids(sock):
    out = subprocess.run([bin_path("batonctl"), "-q", "-c", sock, "status", "--json"],
                         capture_output=True, text=True, timeout=30)
    check(out.returncode == 0, f"batonctl status: {out.stderr}")
    s = __import__("json").loads(out.stdout)
    return {w["pid"] for g in s["generations"] for w in g["workers"]}, s


def test_a_batond_killed_with_sigkill_is_replaced_by_one_that_takes_over_its_workers():
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "ctl.sock")
        args = ["-c", sock, "-l", "127.0.0.1:0", "-n", "2", "--drain-timeout", "20s"]
        b1 = Batond(args, [HTTPD])
        b2 = None
        try:
            addr = b1.address()
            b1.wait_log(r"generation 1: 2/2 workers ready")
            old = set(b1.workers())
            load = Load(target_of(addr), duration="60s", threads=4)
            try:
                wait_for(lambda: http_get(addr) is not None, "a first reply under load")
                b1.proc.kill()
                b1.proc.wait()
                check(all(alive(p) for p in old), "the workers died with batond")
                # Clients that queue while no batond runs: the workers are stopped (after the
                # kill: a group orphaned with a stopped member gets SIGHUP from the kernel).
                for p in old:
                    os.kill(p, signal.SIGSTOP)
                queued = queue_clients([addr], QUEUED)
                b2 = Batond(args, [HTTPD])
                b2.remember(old)
                b2.wait_log(r"took over 2 workers of batond pid \d+")
                b2.wait_log(r"batond \d+ \(took over\)")
                for p in old:
                    os.kill(p, signal.SIGCONT)
                results = [outcome(c, status=b"HTTP/1.1 200") for c in queued]
                check(results.count("ok") == QUEUED, f"queued at the kill: {results}")
                pids, s = status_pids(sock)
                check(pids == old and s["serving_generation"] == 1,
                      f"serving {pids} (generation {s['serving_generation']}), not {old}")
                check(all(alive(p) for p in old), "an adopted worker was restarted")
                # The next reload replaces them, through their pidfds.
                check(reload_and_wait(b2, 2) == "done", f"reload:\n{b2.log()}")
                wait_for(lambda: not any(alive(p) for p in old), "the adopted workers to exit")
                new = set(b2.workers())
                check(len(new) == 2 and not (new & old), f"old {old} new {new}")
                res = load.finish()
            finally:
                load.kill()
            check(res["ok"] > 0 and res["failed"] == 0,
                  f"{res['failed']} failed across the kill, the takeover and a reload: {res}")
            b2.signal(signal.SIGTERM)
            check(b2.wait_exit() == 0, "batond did not exit 0")
            check(not os.path.exists(sock + ".record"), "the record outlived a clean stop")
        finally:
            b1.cleanup()
            if b2:
                b2.cleanup()


def test_a_record_whose_workers_are_gone_is_ignored():
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "ctl.sock")
        args = ["-c", sock, "-l", "127.0.0.1:0"]
        b1 = Batond(args, [HTTPD])
        try:
            b1.wait_log(r"generation 1: 1/1 workers ready")
            old = b1.workers()
            b1.proc.kill()
            b1.proc.wait()
            for p in old:
                os.kill(p, signal.SIGKILL)
            wait_for(lambda: not any(alive(p) for p in old), "the workers to die")
        finally:
            b1.cleanup()
        b2 = Batond(args, [HTTPD])
        try:
            b2.wait_log(r"no worker of the batond before \(pid \d+\) is left")
            b2.wait_log(r"generation 1: 1/1 workers ready")
        finally:
            b2.cleanup()


def test_a_batond_of_an_ordinary_user_takes_over_the_workers_of_its_predecessor():
    # pidfd_getfd() needs ptrace access: the same user suffices here (no YAMA restriction).
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)
        sock = os.path.join(d, "ctl.sock")
        args = ["-c", sock, "-l", "127.0.0.1:0", "-n", "2"]
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        b1 = Batond(args, [HTTPD], prefix=nobody)
        b2 = None
        try:
            addr = b1.address()
            b1.wait_log(r"generation 1: 2/2 workers ready")
            old = set(b1.workers())
            b1.proc.kill()
            b1.proc.wait()
            b2 = Batond(args, [HTTPD], prefix=nobody)
            b2.remember(old)
            b2.wait_log(r"took over 2 workers of batond pid \d+")
            b2.wait_log(r"batond \d+ \(took over\)")
            check(all(alive(p) for p in old), "an adopted worker was restarted")
            http_get(addr)  # still served: it raises on anything but an HTTP reply
            b2.signal(signal.SIGTERM)
            check(b2.wait_exit() == 0, "batond did not exit 0")
            check(not any(alive(p) for p in old), "adopted workers outlived the stop")
        finally:
            b1.cleanup()
            if b2:
                b2.cleanup()


def test_without_a_record_batond_names_the_workers_that_hold_the_port_and_what_to_do():
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "ctl.sock")
        b1 = Batond(["-c", sock, "-l", "127.0.0.1:0", "-n", "2"], [HTTPD])
        try:
            addr = b1.address()
            b1.wait_log(r"generation 1: 2/2 workers ready")
            old = b1.workers()
            b1.proc.kill()
            b1.proc.wait()
            os.unlink(sock + ".record")
            port = addr.rsplit(":", 1)[1]
            b2 = Batond(["-c", sock, "-l", f"127.0.0.1:{port}", "-n", "2"], [HTTPD])
            try:
                check(b2.wait_exit() == 2, "batond did not exit 2 on an address in use")
                for p in old:
                    b2.wait_log(rf"is held by pid {p} \(example-httpd\), generation 1 worker")
                b2.wait_log(r"workers of a batond that is gone.*drain signal")
                check(all(alive(p) for p in old), "batond touched the holders")
            finally:
                b2.cleanup()
        finally:
            b1.cleanup()
