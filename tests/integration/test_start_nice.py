# SPDX-License-Identifier: MIT
"""test_start_nice.py - --start-nice N (issue #16): a starting generation yields the CPU to the
serving one until it is ready, then gets batond's priority back.

The worker here says READY=1 only when the test lets it (a file per generation), so the test
can read its nice value while it starts and after it is ready.
"""
import os
import subprocess
import sys
import tempfile

from harness import Batond, bin_path, check, wait_for

WORKER = r"""
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
go = sys.argv[1] + "." + os.environ["BATON_GENERATION"]
while not os.path.exists(go):
    time.sleep(0.02)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"READY=1")
while True:
    time.sleep(3600)
"""


def nice_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def test_a_starting_generation_runs_lower_until_ready_then_gets_batonds_priority_back():
    with tempfile.TemporaryDirectory() as d:
        script, go = os.path.join(d, "worker.py"), os.path.join(d, "go")
        with open(script, "w") as f:
            f.write(WORKER)
        open(go + ".1", "w").close()
        b = Batond(["-l", "127.0.0.1:0", "--start-nice", "7", "-v"], [sys.executable, script, go])
        try:
            base = nice_of(b.pid)
            b.wait_log(r"generation 1: 1/1 workers ready")
            first = b.workers()[0]
            # Nobody serves yet while the first generation starts: no reason to yield.
            check(nice_of(first) == base, f"generation 1 ran at nice {nice_of(first)}, "
                  f"batond at {base}")
            b.signal(1)  # SIGHUP: a reload
            m, _ = b.wait_log(r"generation 2 worker 0: started pid (\d+)")
            second = int(m.group(1))
            check(nice_of(second) == min(base + 7, 19),
                  f"starting worker at nice {nice_of(second)}, expected {min(base + 7, 19)}")
            check(nice_of(first) == base, "the serving worker's priority changed")
            open(go + ".2", "w").close()
            b.wait_log(r"generation 2: 1/1 workers ready")
            wait_for(lambda: nice_of(second) == base, f"worker {second} back at nice {base}")
        finally:
            b.cleanup()


def test_start_nice_that_could_not_be_undone_is_refused_at_start():
    """uid 65534 with RLIMIT_NICE 0 can lower a priority but never raise it back."""
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "prlimit", "--nice=0", "--",
                        bin_path("batond"), "--no-control", "-l", "127.0.0.1:0",
                        "--start-nice", "5", "--", "/bin/true"],
                       capture_output=True, text=True, timeout=60)
    check(p.returncode == 2, f"batond exited {p.returncode}:\n{p.stderr}")
    check("--start-nice 5: this batond could not give a ready worker its priority back"
          in p.stderr and "CAP_SYS_NICE" in p.stderr, p.stderr)
