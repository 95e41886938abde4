# SPDX-License-Identifier: MIT
"""test_scm.py - --pass scm: listeners over the channel, READY and DRAIN over it too."""
import os
import signal
import socket
import struct
import sys
import tempfile

from harness import (Batond, Load, TestFailure, alive, bin_path, check, reload_and_wait,
                     steady_fds, target_of, wait_for)
from scm_worker import LISTENERS, HELLO, message, receive

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = [sys.executable, os.path.join(HERE, "scm_worker.py")]


def test_scm_workers_get_their_listeners_over_the_channel_through_reloads():
    with tempfile.TemporaryDirectory() as d:
        b = Batond(["-l", "127.0.0.1:0", "-l", f"unix:{d}/s.sock", "--pass", "scm", "-n", "2",
                    "-v"], WORKER)
        try:
            addr = b.address()
            b.wait_log(r"generation 1: 2/2 workers ready")
            w = b.workers()[0]
            # Only the channel was inherited (plus what the worker opened itself).
            check(os.readlink(f"/proc/{w}/fd/3").startswith("socket:"), "no channel at fd 3")
            load = Load(target_of(addr), duration="120s", threads=4)
            try:
                for gen in range(2, 7):
                    old = set(b.workers())
                    check(reload_and_wait(b, gen) == "done", f"reload {gen} failed:\n{b.log()}")
                    wait_for(lambda: not any(alive(p) for p in old), "old generation to exit")
                res = load.finish()
            finally:
                load.kill()
            check(res["failed"] == 0 and res["ok"] > 0, res)
            wait_for(lambda: b.count(r"sent DRAIN to worker pid") >= 10, "DRAIN over the channel")
            check(b.count(r"sent SIGTERM to worker pid") == 0, "the signal was used instead")
        finally:
            b.cleanup()


def test_fd_socket_hands_the_listeners_to_a_process_batond_did_not_spawn():
    with tempfile.TemporaryDirectory() as d:
        b = Batond(["-l", "web=127.0.0.1:0", "--fd-socket", f"{d}/fd.sock", "--ready", "none"],
                   ["sleep", "600"])
        try:
            addr = b.address("web")
            b.wait_log(r"generation 1: 1/1 workers ready")
            c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            c.connect(f"{d}/fd.sock")
            c.sendall(message(HELLO, struct.pack("<IHH", os.getpid(), 2, 0)))
            kind, body, fds = receive(c)
            c.close()
            check(kind == LISTENERS and len(fds) == 1, f"{kind} {fds}")
            s = socket.socket(fileno=fds[0])
            check(target_of(addr).endswith(":%d" % s.getsockname()[1]), "another socket")
            check(b"web" in body and b"tcp://127.0.0.1:" in body, body)
            s.close()
        finally:
            b.cleanup()


def comm(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def test_scm_channels_survive_a_self_upgrade():
    b = Batond(["-l", "127.0.0.1:0", "--pass", "scm", "-n", "2", "-v"], WORKER)
    try:
        addr = b.address()
        b.wait_log(r"generation 1: 2/2 workers ready")
        workers = b.workers()
        load = Load(target_of(addr), duration="120s", threads=4)
        try:
            for i in range(3):
                mark = b.mark()
                b.signal(signal.SIGUSR2)
                b.wait_log(r"upgrade: took over 1 listeners and 2 workers", start=mark)
                b.wait_log(r"\(upgraded\)", start=mark)
            # One more child of batond showed for a moment once (see test_upgrade.py); new
            # workers would never make the sets equal again.
            try:
                wait_for(lambda: b.workers() == workers, "the same workers after the upgrades")
            except TestFailure:
                now = b.workers()
                raise TestFailure(f"the upgrade restarted workers (channels lost?): {workers} "
                                  f"before, {now} after; {[(p, comm(p)) for p in now]}; "
                                  f"log:\n{b.log()}")
            check(reload_and_wait(b, 2) == "done", f"reload 2 failed:\n{b.log()}")
            wait_for(lambda: not any(alive(p) for p in workers), "generation 1 to exit")
            res = load.finish()
        finally:
            load.kill()
        check(res["failed"] == 0 and res["ok"] > 0, res)
        # The adopted channels carried the drain of generation 1.
        wait_for(lambda: b.count(r"sent DRAIN to worker pid") >= 2, "DRAIN over adopted channels")
    finally:
        b.cleanup()


def test_ten_thousand_bad_messages_cost_the_fd_socket_nothing():
    import random
    with tempfile.TemporaryDirectory() as d:
        b = Batond(["-l", "127.0.0.1:0", "--fd-socket", f"{d}/fd.sock", "--ready", "none"],
                   ["sleep", "600"])
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            fds_before = steady_fds(b.pid)
            before = len(fds_before)
            rnd = random.Random(4)
            garbage = [
                b"",                                                  # empty record
                b"NOPE" + bytes(8),                                   # bad magic
                message(HELLO, struct.pack("<IHH", 1, 2, 0))[:-1],    # truncated
                message(HELLO, struct.pack("<IHH", 1, 2, 0)) + b"x",  # trailing byte
                b"BATN" + bytes([9, 0, 1, 0, 8, 0, 0, 0]) + bytes(8), # unknown major
                message(HELLO, struct.pack("<IHH", 1, 1, 0)),         # WORKER role here
                message(7, b""),                                      # ERROR, malformed
                message(3),                                           # READY before HELLO
            ]
            sent = 0
            while sent < 10000:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                c.settimeout(30)
                # A full backlog answers a Unix connect with EAGAIN: wait for batond.
                wait_for(lambda: c.connect_ex(f"{d}/fd.sock") == 0, "room in the backlog")
                # Several bad messages per connection, a random one sometimes cut short.
                for _ in range(10):
                    msg = rnd.choice(garbage)
                    if rnd.random() < 0.2:
                        msg = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 40)))
                    try:
                        c.send(msg)
                    except (BrokenPipeError, ConnectionResetError):
                        break
                    sent += 1
                c.close()
            # Still serving every good client, and no fd left behind.
            c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            c.connect(f"{d}/fd.sock")
            c.sendall(message(HELLO, struct.pack("<IHH", os.getpid(), 2, 0)))
            kind, _, fds = receive(c)
            c.close()
            check(kind == LISTENERS and len(fds) == 1, "a good client was not served")
            os.close(fds[0])
            try:
                wait_for(lambda: len(steady_fds(b.pid)) == before,
                         f"batond's fds back to {before}")
            except TestFailure as e:
                raise TestFailure(f"{e}; batond holds {steady_fds(b.pid)}; before {fds_before}")
            check(b.proc.poll() is None, "batond died")
        finally:
            b.cleanup()


def test_fd_socket_refuses_a_peer_of_another_uid_unless_allowed():
    import subprocess
    peer = (
        "import os, socket, struct, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "c.connect(sys.argv[1])\n"
        "try:\n"
        "    c.sendall(b'BATN' + struct.pack('<BBHI', 1, 0, 1, 8) +\n"
        "              struct.pack('<IHH', os.getpid(), 2, 0))\n"
        "except BrokenPipeError:\n"
        "    pass  # refused before it spoke: the ERROR is still there to read\n"
        "try:\n"
        "    data, anc, _, _ = c.recvmsg(65536, socket.CMSG_SPACE(64))\n"
        "except ConnectionResetError:\n"
        "    data, anc = b'', []  # closed with our HELLO unread: the ERROR went with it\n"
        "print(struct.unpack('<H', data[6:8])[0] if data else 0, len(anc))\n")
    # A stranger gets ERROR (7), or a reset if batond closed before reading its HELLO: never
    # an fd. An allowed uid gets LISTENERS (2) with the listener.
    for allow, expect in (([], ("7 0", "0 0")), (["--fd-allow", "65534"], ("2 1",))):
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o755)
            b = Batond(["-l", "127.0.0.1:0", "--fd-socket", f"{d}/fd.sock", "--ready", "none",
                        *allow], ["sleep", "600"])
            try:
                b.wait_log(r"generation 1: 1/1 workers ready")
                if not allow:
                    # The file is 0600 then: open it up to show the credential check refuses.
                    os.chmod(f"{d}/fd.sock", 0o666)
                p = subprocess.run([sys.executable, "-c", peer, f"{d}/fd.sock"],
                                   capture_output=True, text=True, timeout=60)
                check(" ".join(p.stdout.split()) in expect, f"{allow}: {p.stdout!r} {p.stderr!r}")
                if not allow:
                    b.wait_log(r"uid 65534")
            finally:
                b.cleanup()


REFRESHER = r'''
import os, signal, socket, struct, sys, time
sys.path.insert(0, sys.argv[2])
from scm_worker import HELLO, LISTENERS, READY, message, receive
ch = socket.socket(fileno=int(os.environ.pop("BATON_FD")))

def take_set():
    names, fds, total = [], [], None
    while total is None or len(fds) < total:
        kind, body, got = receive(ch)
        if kind != LISTENERS:
            continue  # a DRAIN would come here; none is expected in this test
        first, count, total = struct.unpack("<HHH", body[:6])
        off = 6
        for _ in range(count):
            n = body[off + 1]
            names.append(body[off + 2:off + 2 + n].decode())
            off += 2 + n
            off += 1 + body[off]
        fds += got
    return names, fds

# Blocked before READY, so the test's SIGUSR1 can never arrive unblocked.
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
ch.sendall(message(HELLO, struct.pack("<IHH", os.getpid(), 1, 0)))
names, fds = take_set()
ch.sendall(message(READY))
signal.sigwait([signal.SIGUSR1])
ch.sendall(message(8))  # REFRESH
names, fds = take_set()
ports = [socket.socket(fileno=fd).getsockname()[1] for fd in fds]
with open(sys.argv[1], "w") as f:
    f.write(" ".join(f"{n}={p}" for n, p in zip(names, ports)))
time.sleep(600)
'''


def test_a_channel_worker_that_asks_gets_a_listener_added_at_runtime():
    import subprocess
    with tempfile.TemporaryDirectory() as d:
        out = f"{d}/refreshed"
        b = Batond(["-c", f"{d}/ctl", "-l", "web=127.0.0.1:0", "--pass", "scm"],
                   [sys.executable, "-c", REFRESHER, out, HERE])
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            p = subprocess.run([bin_path("batonctl"), "-c", f"{d}/ctl", "listen",
                                "extra=127.0.0.1:0"], capture_output=True, text=True, timeout=60)
            check(p.returncode == 0, p.stderr)
            port = int(p.stdout.split("tcp://127.0.0.1:")[1].split()[0])
            os.kill(b.workers()[0], signal.SIGUSR1)
            got = wait_for(lambda: os.path.exists(out) and open(out).read(), "the refreshed set")
            check(f"extra={port}" in got.split() and got.split()[0].startswith("web="), got)
        finally:
            b.cleanup()
