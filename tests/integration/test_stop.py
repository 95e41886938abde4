# SPDX-License-Identifier: MIT
"""test_stop.py - the two-stage close at the final stop: queued clients are served, not reset."""
import os
import signal
import socket
import sys
import tempfile

from harness import Batond, TestFailure, alive, check, wait_for

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_server.py")
K = 20  # clients queued per listener


def sigpending(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("ShdPnd:") or line.startswith("SigPnd:"):
                if int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)):
                    return True
    return False


def queue_clients(specs):
    """K connected clients per listener, each with its request sent; returns the sockets."""
    clients = []
    for spec in specs:
        for _ in range(K):
            if spec.startswith("unix:"):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.settimeout(60)
                c.connect(spec[5:])
            else:
                host, port = spec[len("tcp://"):].rsplit(":", 1)
                host = host.strip("[]")
                c = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                c.settimeout(60)
                c.connect((host, int(port)))
            c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            clients.append(c)
    return clients


def outcome(c):
    """'ok' for a full reply, 'reset' or 'empty' otherwise."""
    data = b""
    try:
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        return "reset"
    finally:
        c.close()
    if data.startswith(b"HTTP/1.0 200") and b"pid=" in data:
        return "ok"
    return "empty" if not data else "bad"


def run_stop(mode, d):
    sock = f"{d}/s.sock"
    b = Batond(["-l", "127.0.0.1:0", "-l", "[::1]:0", "-l", f"unix:{sock}", "-n", "2",
                "--stop-mode", mode, "--drain-timeout", "30s", "--stop-timeout", "60s"],
               [sys.executable, TINY])
    try:
        specs = [b.address("listen0"), b.address("listen1"), b.address("listen2")]
        b.wait_log(r"generation 1: 2/2 workers ready")
        workers = b.workers()
        check(len(workers) == 2, f"workers {workers}")
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        clients = queue_clients(specs)
        mark = b.mark()
        b.signal(signal.SIGTERM)
        if mode == "graceful":
            b.wait_log(r"stop: new connections refused on 3 of 3 listeners", start=mark)
            # Stage 2 holds the drain while anything is queued: nothing was sent to the workers.
            check(not any(sigpending(w) for w in workers), "workers told to drain too early")
        else:
            wait_for(lambda: all(sigpending(w) for w in workers), "the drain signal")
        for w in workers:
            os.kill(w, signal.SIGCONT)
        results = [outcome(c) for c in clients]
        check(b.wait_exit() == 0, "batond exit status")
        check(not any(alive(w) for w in workers), "a worker outlived batond")
        return results, b.log()
    finally:
        b.cleanup()


def test_graceful_stop_serves_every_queued_client_on_ipv4_ipv6_and_unix():
    with tempfile.TemporaryDirectory() as d:
        results, log = run_stop("graceful", d)
    for i, name in enumerate(("IPv4", "IPv6", "Unix")):
        part = results[i * K:(i + 1) * K]
        check(part.count("ok") == K, f"{name}: {part.count('ok')} of {K} queued clients served "
              f"({part.count('reset')} reset, {part.count('empty')} empty)\n{log}")
    check("every queue empty" in log, "stage 2 did not report empty queues")


def test_immediate_stop_resets_the_queued_clients():
    with tempfile.TemporaryDirectory() as d:
        results, log = run_stop("immediate", d)
    # The workers were told to drain before they took the queue: the final close resets it.
    for i, name in enumerate(("IPv4", "IPv6", "Unix")):
        part = results[i * K:(i + 1) * K]
        check(part.count("ok") == 0, f"{name}: {part.count('ok')} served despite the drain")
        check(part.count("reset") + part.count("empty") == K, f"{name}: {part}")


def test_stop_refuses_new_connections_during_stage_two():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/s.sock"
        b = Batond(["-l", "127.0.0.1:0", "-l", f"unix:{sock}", "--stop-timeout", "60s"],
                   [sys.executable, TINY])
        try:
            spec = b.address("listen0")
            b.wait_log(r"generation 1: 1/1 workers ready")
            w = b.workers()[0]
            os.kill(w, signal.SIGSTOP)
            held = queue_clients([spec])  # keeps stage 2 waiting
            b.signal(signal.SIGTERM)
            b.wait_log(r"stop: new connections refused")
            host, port = spec[len("tcp://"):].rsplit(":", 1)
            late = socket.socket()
            late.settimeout(1.5)
            try:
                late.connect((host, int(port)))
                raise TestFailure("a new connection was accepted during stage 2")
            except socket.timeout:
                pass  # the SYN got no answer: no reset, no refusal
            finally:
                late.close()
            check(not os.path.exists(sock), "the Unix socket file is still there in stage 2")
            u = socket.socket(socket.AF_UNIX)
            try:
                u.connect(sock)
                raise TestFailure("a new Unix connection got through")
            except FileNotFoundError:
                pass
            finally:
                u.close()
            os.kill(w, signal.SIGCONT)
            results = [outcome(c) for c in held]
            check(results.count("ok") == K, f"queued clients: {results}")
            check(b.wait_exit() == 0, "exit status")
        finally:
            b.cleanup()
