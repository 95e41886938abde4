# SPDX-License-Identifier: MIT
"""test_ready.py - --ready listening: readiness seen in /proc, without the worker's help."""
import os
import signal
import sys

from harness import Batond, alive, bin_path, check, children_of, http_get, wait_for

HTTPD = bin_path("example-httpd")

# Each waits on fd 3 its own way, after a pause that a too-early "ready" would miss.
WAITERS = {
    "accept": (
        "import socket,time; time.sleep(1); s=socket.socket(fileno=3); s.setblocking(True); "
        "s.accept()"),
    "poll": ("import socket,select,time; time.sleep(1); p=select.poll(); p.register(3, "
             "select.POLLIN); p.poll()"),
    "select": "import select,time; time.sleep(1); select.select([3],[],[])",
    "epoll": ("import select,time; time.sleep(1); e=select.epoll(); e.register(3, "
              "select.EPOLLIN); e.poll()"),
}


def run_waiter(how):
    b = Batond(["-l", "127.0.0.1:0", "--ready", "listening", "--ready-timeout", "30s", "-v"],
               [sys.executable, "-c", WAITERS[how]])
    try:
        m, _ = b.wait_log(r"generation 1: 1/1 workers ready in (\d+)(ms|s)")
        ms = int(m.group(1)) * (1000 if m.group(2) == "s" else 1)
        check(ms >= 900, f"{how}: ready after {ms}ms, before the worker waited")
        check(b.count(r"waits on a listener") == 1, f"{how}: not seen in /proc")
    finally:
        b.cleanup()


def test_a_worker_blocked_in_accept_is_ready():
    run_waiter("accept")


def test_a_worker_waiting_in_poll_is_ready():
    run_waiter("poll")


def test_a_worker_waiting_in_select_is_ready():
    run_waiter("select")


def test_a_worker_with_the_listener_in_an_epoll_set_is_ready():
    run_waiter("epoll")


def test_a_child_in_a_session_of_its_own_is_seen_ready_and_killed_at_the_drain_deadline():
    # The worker forks; the child leaves the worker's process group with setsid() and waits
    # in epoll on fd 3: found as a descendant. Neither drains (TERM ignored), so at the drain
    # deadline batond must kill both, although the child is outside the worker's group.
    waiter = ("import os,select,signal,time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "if os.fork() == 0:\n"
              "    os.setsid(); time.sleep(1); e = select.epoll(); e.register(3, select.EPOLLIN)\n"
              "    e.poll()\n"
              "else:\n"
              "    os.close(3); os.wait()\n")
    b = Batond(["-l", "127.0.0.1:0", "--ready", "listening", "--ready-timeout", "30s",
                "--drain-timeout", "1s", "-v"], [sys.executable, "-c", waiter])
    kids = []
    try:
        b.wait_log(r"generation 1: 1/1 workers ready")
        check(b.count(r"waits on a listener") == 1, "not seen in /proc")
        kids = children_of(b.workers()[0])
        check(len(kids) == 1, f"children of the worker: {kids}")
        check(os.getpgid(kids[0]) != os.getpgid(b.workers()[0]), "the child kept the group")
        b.signal(signal.SIGTERM)
        b.wait_log(rf"killed pid {kids[0]}, of worker pid \d+ in another process group")
        check(b.wait_exit() == 0, "exit status")
        wait_for(lambda: not alive(kids[0]), "the child to die")
    finally:
        for pid in kids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        b.cleanup()


def test_the_notify_ready_of_a_worker_does_not_count_in_listening_mode_but_its_epoll_does():
    b = Batond(["-l", "127.0.0.1:0", "--ready", "listening", "-v"], [HTTPD])
    try:
        addr = b.address()
        b.wait_log(r"generation 1: 1/1 workers ready")
        check(b.count(r"waits on a listener") == 1, "readiness did not come from /proc")
        check("pid=" in http_get(addr), "not serving")
    finally:
        b.cleanup()


def test_a_worker_that_never_listens_misses_the_ready_timeout():
    b = Batond(["-l", "127.0.0.1:0", "--ready", "listening", "--ready-timeout", "1s"],
               ["sleep", "600"])
    try:
        check(b.wait_exit() == 1, "exit status")
        b.wait_log(r"generation 1 failed to start: worker 0 \(pid \d+\) was not ready in time")
    finally:
        b.cleanup()
