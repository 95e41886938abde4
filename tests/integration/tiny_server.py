#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tiny_server.py - a one-connection-at-a-time HTTP worker using only LISTEN_FDS and NOTIFY_SOCKET.

On SIGTERM it finishes the connection in hand and exits without accepting again: a worker that
is told to drain while connections are still queued leaves them to the listener's holder.
"""
import os
import select
import signal
import socket
import sys


class Stop(Exception):
    pass


idle = False
stopping = False


def on_term(signo, frame):
    global stopping
    stopping = True
    if idle:
        raise Stop()


def notify(msg):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(msg.encode(), addr)
    finally:
        s.close()


def main():
    global idle
    signal.signal(signal.SIGTERM, on_term)
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("tiny_server: LISTEN_PID is not mine")
    n = int(os.environ["LISTEN_FDS"])
    listeners = [socket.socket(fileno=3 + i) for i in range(n)]
    for l in listeners:
        l.setblocking(False)
    notify("READY=1")
    body = f"pid={os.getpid()} gen={os.environ.get('BATON_GENERATION', '0')}\n".encode()
    try:
        while not stopping:
            idle = True
            try:
                ready, _, _ = select.select(listeners, [], [])
            finally:
                idle = False
            for l in ready:
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
                if stopping:
                    break
    except Stop:
        pass


if __name__ == "__main__":
    main()
