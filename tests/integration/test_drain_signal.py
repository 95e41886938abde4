# SPDX-License-Identifier: MIT
"""test_drain_signal.py - once the first generation serves, batond says what its worker will do
with the drain signal (/proc/PID/status, and the preload shim's word): a loss with its fix, or
how it drains."""
import signal
import sys
import textwrap

from harness import Batond, check

# A LISTEN_FDS server that does to SIGTERM what its argument says, then waits in accept().
WORKER = textwrap.dedent(r'''
    import signal, socket, sys
    how = sys.argv[1]
    if how == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif how == "catch":
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    elif how == "block":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    s = socket.socket(fileno=3)
    s.setblocking(True)
    while True:
        c, _ = s.accept()
        c.close()
''')


def said_at_start(how, *args):
    """Starts a generation of the worker, returns batond's line about its drain signal."""
    b = Batond(["-l", "127.0.0.1:0", "--ready", "listening", "--drain-timeout", "1s", *args],
               [sys.executable, "-c", WORKER, how])
    try:
        m, _ = b.wait_log(r"worker pid (\d+) .*SIG\w+.*")
        line = m.group(0)
        check(int(m.group(1)) in b.workers(), f"the line names no worker: {line}")
        check(b.count(r"worker pid \d+ .*SIG") == 1, f"said more than once:\n{b.log()}")
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, f"batond did not stop cleanly:\n{b.log()}")
        return line
    finally:
        b.cleanup()


def test_a_worker_that_ignores_the_drain_signal_is_reported_with_the_fix():
    line = said_at_start("ignore")
    check("ignores SIGTERM" in line and "drain deadline (1s)" in line, line)
    check("--drain-signal" in line, f"no fix given: {line}")


def test_a_worker_killed_by_the_drain_signal_is_reported_with_the_fix():
    line = said_at_start("default")
    check("leaves SIGTERM at its default action" in line and "requests it holds fail" in line,
          line)
    check("--preload" in line, f"the shim's drain is not suggested: {line}")


def test_a_worker_that_catches_or_blocks_the_drain_signal_is_told_as_it_is():
    line = said_at_start("catch")
    check("catches SIGTERM: its own handler drains it" in line, line)
    line = said_at_start("block")
    check("blocks SIGTERM" in line and "signalfd" in line, line)
