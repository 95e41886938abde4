# SPDX-License-Identifier: MIT
"""test_libbaton.py - example-httpd on libbaton in every mode, and the script-language example.

Modes: standalone (--listen), systemd socket activation (systemd-socket-activate), batond
--pass env, and the channel (BATON_FD) driven by a fake batond written here from
docs/PROTOCOL.md, so the library is checked against the specification rather than against
batond's own code. worker/examples/example-server.py is run under batond through reloads.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile

from harness import (DEADLINE, ROOT, Batond, Load, Proc, TestFailure, alive, bin_path, check,
                     free_port, http_get, outcome, queue_clients, reload_and_wait, serving_pid,
                     target_of, wait_for)

HTTPD = bin_path("example-httpd")
EXAMPLE_SERVER = os.path.join(ROOT, "worker", "examples", "example-server.py")
SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"
RELOADS = 5
K = 10  # clients queued on a listener during a standalone stop

# docs/PROTOCOL.md
MAGIC = b"BATN"
HELLO, LISTENERS, READY, DRAIN, STATUS, DRAINED, ERROR = range(1, 8)
KIND_TCP, KIND_UNIX = 1, 3
O_CLOEXEC = 0o2000000


# example-httpd answers in HTTP/1.1.
HTTPD_OK = b"HTTP/1.1 200"


def test_standalone_serves_and_a_stop_serves_every_queued_client_first():
    """--listen: the drain refuses new connections but accepts what is queued (baton.3)."""
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/s.sock"
        port = free_port()
        p = Proc([HTTPD, "--listen", f"127.0.0.1:{port}", "--listen", f"unix:{sock}"])
        try:
            p.wait_log("serving on 2 listeners")
            spec = f"tcp://127.0.0.1:{port}"
            check(serving_pid(spec) == p.pid, "TCP reply from another pid")
            check(serving_pid(f"unix:{sock}") == p.pid, "Unix reply from another pid")
            os.kill(p.pid, signal.SIGSTOP)
            clients = queue_clients([spec, f"unix:{sock}"], K, timeout=30)
            os.kill(p.pid, signal.SIGTERM)
            os.kill(p.pid, signal.SIGCONT)
            results = [outcome(c, HTTPD_OK) for c in clients]
            check(p.wait_exit() == 0, f"exit status:\n{p.log()}")
            check(results.count("ok") == 2 * K,
                  f"{results.count('ok')} of {2 * K} queued clients served: {results}\n{p.log()}")
            check(not os.path.exists(sock), "the socket file was left behind")
            p.wait_log("SIGTERM: stopped accepting")
        finally:
            p.cleanup()


def test_standalone_without_listeners_exits_1():
    p = Proc([HTTPD])
    try:
        check(p.wait_exit() == 1, "exit status")
        # The process is gone, but its last line may still be on its way to our reader.
        p.wait_log("no listeners")
    finally:
        p.cleanup()


def test_socket_activation_by_systemd_serves_on_the_passed_socket():
    port = free_port()
    p = Proc([SOCKET_ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname=web", HTTPD])
    try:
        # systemd-socket-activate execs example-httpd (same pid) at the first connection.
        def first():
            try:
                return serving_pid(f"tcp://127.0.0.1:{port}")
            except (OSError, TestFailure):
                return None
        check(wait_for(first, "a reply") == p.pid, "reply from another pid")
        p.wait_log("serving on 1 listeners")
        p.proc.send_signal(signal.SIGTERM)
        check(p.wait_exit() == 0, f"exit status:\n{p.log()}")
    finally:
        p.cleanup()


def reloads_under_load(args, command, reloads=RELOADS):
    """reloads reloads of 2 workers under load; returns loadgen's counts."""
    b = Batond(["-l", "127.0.0.1:0", "-n", "2", "--drain-timeout", "20s"] + args, command)
    try:
        addr = b.address()
        b.wait_log(r"generation 1: \d+/\d+ workers ready")
        load = Load(target_of(addr), duration="120s", threads=4)
        try:
            for gen in range(2, 2 + reloads):
                old = set(b.workers())
                check(reload_and_wait(b, gen) == "done", f"reload {gen} failed:\n{b.log()}")
                wait_for(lambda: not any(alive(p) for p in old), f"generation {gen - 1} to exit")
            check(load.proc.poll() is None, "the load ended before the reloads did")
            res = load.finish()
        finally:
            load.kill()
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, "batond did not exit 0 after SIGTERM")
        return res
    finally:
        b.cleanup()


def test_example_httpd_under_batond_pass_env_through_five_reloads_drops_nothing():
    res = reloads_under_load([], [HTTPD])
    check(res["failed"] == 0 and res["ok"] > 0, f"{res}")
    check(res["pids"] > 2, f"replies came from only {res['pids']} pids")


def batond_has_scm():
    out = subprocess.run([bin_path("batond"), "--help"], capture_output=True, text=True)
    return "scm" in out.stdout + out.stderr


def test_example_httpd_under_batond_pass_scm_through_twenty_reloads_drops_nothing():
    # batond has --pass scm now: a batond without it fails here instead of skipping.
    check(batond_has_scm(), "batond has no --pass scm")
    res = reloads_under_load(["--pass", "scm", "-v"], [HTTPD], reloads=20)
    check(res["failed"] == 0 and res["ok"] > 0, f"{res}")
    check(res["pids"] > 2, f"replies came from only {res['pids']} pids")


def test_example_server_py_under_batond_through_five_reloads_drops_nothing():
    res = reloads_under_load([], [sys.executable, EXAMPLE_SERVER])
    check(res["failed"] == 0 and res["ok"] > 0, f"{res}")
    check(res["pids"] > 2, f"replies came from only {res['pids']} pids")


# --- a fake batond on the channel (docs/PROTOCOL.md), with example-httpd as the worker ---

def message(mtype, body=b"", major=1):
    return struct.pack("<4sBBHI", MAGIC, major, 0, mtype, len(body)) + body


def parse(data):
    magic, major, _, mtype, length = struct.unpack_from("<4sBBHI", data)
    check(magic == MAGIC and major == 1 and length == len(data) - 12, f"bad message {data!r}")
    return mtype, data[12:]


def listeners_message(entries):
    """entries: (kind, name, address); one message carries them all here."""
    body = struct.pack("<HHH", 0, len(entries), len(entries))
    for kind, name, address in entries:
        body += bytes([kind, len(name)]) + name.encode() + bytes([len(address)]) + address.encode()
    return message(LISTENERS, body)


class FakeBatond:
    """Spawns example-httpd with BATON_FD and speaks batond's side of the channel."""

    def __init__(self, args=()):
        self.chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.chan.settimeout(DEADLINE)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.worker = Proc([HTTPD, *args], env={"BATON_FD": str(theirs.fileno()),
                                                "BATON_GENERATION": "7"},
                           pass_fds=(theirs.fileno(),))
        theirs.close()

    def recv(self):
        data = self.chan.recv(65536)
        check(data, "the worker closed the channel")
        return parse(data)

    def expect(self, mtype):
        got, body = self.recv()
        check(got == mtype, f"expected message type {mtype}, got {got} {body!r}")
        return body

    def expect_status(self, pred, what):
        """Reads STATUS messages until one satisfies pred(inflight, text)."""
        while True:
            body = self.expect(STATUS)
            inflight, n = struct.unpack_from("<IH", body)
            text = body[6:6 + n].decode()
            if pred(inflight, text):
                return inflight, text

    def handshake(self):
        pid, role, flags = struct.unpack("<IHH", self.expect(HELLO))
        check(pid == self.worker.pid and role == 1 and flags == 0, f"HELLO {pid} {role} {flags}")
        socket.send_fds(self.chan, [listeners_message([(KIND_TCP, "web",
                                                        f"tcp://127.0.0.1:{self.port}")])],
                        [self.listener.fileno()])

    def cleanup(self):
        self.worker.cleanup()
        self.chan.close()
        self.listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def socket_fd_flags(pid):
    """{fd: open flags} of pid's sockets. An fd that closes while we look (the connection of a
    request just answered) is left out."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = next(line for line in f if line.startswith("flags:"))
        except (FileNotFoundError, StopIteration):
            continue
        out[int(fd)] = int(flags.split()[1], 8)
    return out


def test_example_httpd_over_the_channel_reports_status_and_drains_on_drain():
    with FakeBatond() as f:
        f.handshake()
        f.expect(READY)
        f.expect_status(lambda n, t: n == 0 and t.startswith("serving"), "serving, 0")
        spec = f"tcp://127.0.0.1:{f.port}"
        check(http_get(spec).startswith(f"pid={f.worker.pid} gen=7 "), "reply")
        # The channel (inherited without CLOEXEC) is close-on-exec once libbaton has it.
        flags = socket_fd_flags(f.worker.pid)
        check(flags and all(v & O_CLOEXEC for v in flags.values()),
              f"a socket of the worker is not close-on-exec: {flags}")
        # A request in flight shows in STATUS, and is finished by the drain.
        slow = socket.create_connection(("127.0.0.1", f.port), timeout=30)
        slow.sendall(b"GET /slow?ms=1500 HTTP/1.0\r\nHost: x\r\n\r\n")
        f.expect_status(lambda n, t: n == 1, "1 in flight")
        f.chan.send(message(DRAIN, struct.pack("<Q", 5_000_000)))
        f.worker.wait_log("DRAIN (deadline in 5000ms): stopped accepting, draining 1 connections")
        f.expect_status(lambda n, t: t.startswith("draining"), "draining")
        check(outcome(slow, HTTPD_OK) == "ok", "the request in flight was not answered")
        # Anything but STATUS until DRAINED would be wrong.
        while True:
            mtype, _ = f.recv()
            if mtype == DRAINED:
                break
            check(mtype == STATUS, f"unexpected message {mtype} while draining")
        check(f.chan.recv(65536) == b"", "the channel stayed open after DRAINED")
        check(f.worker.wait_exit() == 0, f"exit status:\n{f.worker.log()}")
        f.worker.wait_log("drained, exiting")


def test_example_httpd_over_the_channel_drains_when_batond_goes_away():
    with FakeBatond() as f:
        f.handshake()
        f.expect(READY)
        check(serving_pid(f"tcp://127.0.0.1:{f.port}") == f.worker.pid, "reply")
        f.chan.close()
        check(f.worker.wait_exit() == 0, f"exit status:\n{f.worker.log()}")
        f.worker.wait_log("channel to batond, draining")


def test_example_httpd_refuses_a_batond_of_another_major_version():
    with FakeBatond() as f:
        f.expect(HELLO)
        f.chan.send(message(LISTENERS, struct.pack("<HHH", 0, 0, 0), major=2))
        data = f.chan.recv(65536)
        magic, _, _, mtype, _ = struct.unpack_from("<4sBBHI", data)
        code, = struct.unpack_from("<i", data, 12)
        check(magic == MAGIC and mtype == ERROR and code == 93, f"refusal {data!r}")
        check(f.worker.wait_exit() == 1, "exit status")
        f.worker.wait_log("take listeners from batond: Protocol not supported")


def test_ignore_term_over_the_channel_ignores_sigterm_and_sigquit_drains():
    with FakeBatond(["--ignore-term"]) as f:
        f.handshake()
        f.expect(READY)
        # Signals are taken in order: had SIGTERM counted, the drain line would name it.
        f.worker.proc.send_signal(signal.SIGTERM)
        f.worker.proc.send_signal(signal.SIGQUIT)
        check(f.worker.wait_exit() == 0, f"exit status:\n{f.worker.log()}")
        f.worker.wait_log("SIGQUIT: stopped accepting")
        check("SIGTERM:" not in f.worker.log(), f.worker.log())
        while True:
            mtype, _ = f.recv()
            if mtype == DRAINED:
                break
