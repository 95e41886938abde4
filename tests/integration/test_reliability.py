# SPDX-License-Identifier: MIT
"""test_reliability.py - batond and its workers when something around them misbehaves:
a paused batond, strangers on the notify socket (issue #15)."""
import errno
import os
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
