# SPDX-License-Identifier: MIT
"""workerlib.py - the serving loop and configuration file of the tests' small worker scripts.

One connection at a time. On the drain signal the worker finishes the connection in hand and
exits without accepting again, leaving anything queued to whoever else holds the listener.
"""
import os
import select
import signal
import socket
import sys


def configured_mode(path, prog, modes=("serve",)):
    """The one word in the configuration file path. Any word not in modes is refused as a server
    refuses a broken configuration: a message on stderr and exit status 1."""
    with open(path) as f:
        word = f.read().strip()
    if word not in modes:
        sys.exit(f"{prog}: {path}: bad configuration {word!r}, refusing to start")
    return word


class _Stop(Exception):
    pass


_idle = False
_stopping = False


def _on_drain(signo, frame):
    global _stopping
    _stopping = True
    if _idle:
        raise _Stop()


def serve(fds, gen, ready=None, drain_signal=signal.SIGTERM):
    """Serves HTTP/1.0 on the listening fds; ready() is called once they are set up."""
    global _idle
    signal.signal(drain_signal, _on_drain)
    listeners = [socket.socket(fileno=fd) for fd in fds]
    for l in listeners:
        l.setblocking(False)
    if ready:
        ready()
    body = f"pid={os.getpid()} gen={gen}\n".encode()
    try:
        while not _stopping:
            _idle = True
            try:
                readable, _, _ = select.select(listeners, [], [])
            finally:
                _idle = False
            for l in readable:
                try:
                    c, _ = l.accept()
                except BlockingIOError:
                    continue
                with c:
                    c.setblocking(True)
                    c.settimeout(30)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                    c.shutdown(socket.SHUT_WR)
                if _stopping:
                    break
    except _Stop:
        pass
