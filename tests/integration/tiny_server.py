#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tiny_server.py - a one-connection-at-a-time HTTP worker using only LISTEN_FDS and NOTIFY_SOCKET.

On SIGTERM it finishes the connection in hand and exits without accepting again: a worker that
is told to drain while connections are still queued leaves them to the listener's holder.
"""
import os
import socket
import sys

from workerlib import serve


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
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("tiny_server: LISTEN_PID is not mine")
    n = int(os.environ["LISTEN_FDS"])
    serve(range(3, 3 + n), os.environ.get("BATON_GENERATION", "0"),
          ready=lambda: notify("READY=1"))


if __name__ == "__main__":
    main()
