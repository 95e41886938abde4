# SPDX-License-Identifier: MIT
"""test_ready.py - --ready listening: readiness seen in /proc, without the worker's help."""
import sys

from harness import Batond, bin_path, check, http_get

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
