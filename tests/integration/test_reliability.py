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

from harness import Batond, Load, bin_path, check, target_of, wait_for

HTTPD = bin_path("example-httpd")
PAUSE_SEC = 5  # batond stopped this long: far more STATUS lines than its queue holds (10)


def worker_env(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)


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
