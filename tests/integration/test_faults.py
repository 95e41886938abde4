# SPDX-License-Identifier: MIT
"""test_faults.py - the fault suite's fast cases (issue #15): batond under faults of its own
environment, of its workers and of strangers. The long cases are tests/soak (make soak);
docs/RELIABILITY.md lists every scenario with the test that covers it."""
import os
import socket
import subprocess
import tempfile

from harness import DEADLINE, Batond, bin_path, check, wait_for

HTTPD = bin_path("example-httpd")
IDLE_CONNECTIONS = 100  # silent connections to the control socket: over every limit it has

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def in_own_mounts(script):
    """A launcher prefix: runs script (sh, $0 = the argument after it) in a private mount
    namespace, then execs batond in place, so that a test's mounts vanish with it."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script + '\nexec "$@"']


def marked_worker(mark):
    """A worker command that leaves mark behind if it ever starts."""
    return ["/bin/sh", "-c", f"touch {mark}; exec sleep 600"]


def test_a_pid_file_on_a_full_file_system_exits_2_and_starts_no_worker():
    with tempfile.TemporaryDirectory() as d:
        fs, mark = os.path.join(d, "fs"), os.path.join(d, "started")
        os.mkdir(fs)
        # One page of tmpfs, filled: the pid file's inode can be made, its bytes cannot.
        fill = 'mount -t tmpfs -o size=4k tmpfs "$0" && { head -c 1M /dev/zero > "$0/fill"; }'
        b = Batond(["-l", "127.0.0.1:0", "--pid-file", f"{fs}/batond.pid"],
                   marked_worker(mark), prefix=in_own_mounts(fill) + [fs])
        try:
            check(b.wait_exit() == 2, f"exit status, log:\n{b.log()}")
            check(f"write pid file {fs}/batond.pid: No space left on device" in b.log(),
                  b.log())
            check(not os.path.exists(mark), "a worker was started")
        finally:
            b.cleanup()


def test_an_unusable_runtime_directory_exits_2_and_starts_no_worker():
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        ro, marks = os.path.join(d, "ro"), os.path.join(d, "marks")
        os.mkdir(ro)
        os.mkdir(marks)
        os.chmod(marks, 0o777)  # a worker of either user could leave its mark
        mark = os.path.join(marks, "started")
        cases = [
            # Not batond's to write in: a non-root batond whose directory is root's.
            (NOBODY, d, "Permission denied"),
            # A read-only file system, as root.
            (in_own_mounts('mount -t tmpfs -o ro tmpfs "$0"') + [ro], ro,
             "Read-only file system"),
        ]
        for prefix, rundir, reason in cases:
            b = Batond(["-l", "127.0.0.1:0"], marked_worker(mark), prefix=prefix,
                       env={"RUNTIME_DIRECTORY": rundir})
            try:
                check(b.wait_exit() == 2, f"{rundir}: exit status, log:\n{b.log()}")
                check(f"control socket {rundir}/batond.sock: {reason}" in b.log(), b.log())
                check(not os.path.exists(mark), "a worker was started")
            finally:
                b.cleanup()


def connect_unix(path):
    """A connection to path once its backlog has room (within DEADLINE), then blocking reads."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    wait_for(lambda: s.connect_ex(path) == 0, f"room in the backlog of {path}")
    s.settimeout(DEADLINE)
    return s


def ctl(b, *args, timeout=60):
    """batonctl against b's control socket; a hang fails the test (TimeoutExpired)."""
    p = subprocess.run([bin_path("batonctl"), "-c", b.control(), *args], capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def test_idle_connections_to_the_control_socket_do_not_lock_batonctl_out():
    """Any process of batond's uid (every worker, by default) could open 32 connections and
    say nothing: batonctl then hung for ever. Now the oldest idle connection makes room, and
    each one is closed when it sends no whole request within 5 s."""
    b = Batond(["-l", "127.0.0.1:0"], [HTTPD])
    idle = []
    try:
        b.wait_log(r"generation 1: 1/1 workers ready")
        for _ in range(IDLE_CONNECTIONS):
            idle.append(connect_unix(b.control()))
        rc, out = ctl(b, "status")
        check(rc == 0 and "generation 1" in out, f"status: {rc} {out}")
        rc, out = ctl(b, "reload")
        check(rc == 0 and "reload done" in out, f"reload: {rc} {out}")
        # The rest are closed at their deadline, whatever they do meanwhile.
        for s in idle:
            check(s.recv(1) == b"", "an idle connection got a reply")
        rc, out = ctl(b, "stop")
        check(rc == 0 and "stopping" in out, f"stop: {rc} {out}")
        check(b.wait_exit() == 0, "exit status")
    finally:
        for s in idle:
            s.close()
        b.cleanup()
