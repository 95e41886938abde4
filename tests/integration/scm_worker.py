#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""scm_worker.py - a worker that speaks batond's channel (docs/PROTOCOL.md) with nothing but
the standard library: HELLO, LISTENERS with their fds, READY, then DRAIN (or SIGTERM)."""
import array
import os
import select
import signal
import socket
import struct
import sys

from workerlib import serve

MAGIC = b"BATN"
HELLO, LISTENERS, READY, DRAIN, STATUS, DRAINED = 1, 2, 3, 4, 5, 6


def message(kind, body=b""):
    return MAGIC + struct.pack("<BBHI", 1, 0, kind, len(body)) + body


def receive(ch):
    fdsize = array.array("i").itemsize
    data, anc, flags, _ = ch.recvmsg(65536, socket.CMSG_SPACE(253 * fdsize))
    fds = array.array("i")
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fdsize])
    if not data:
        return None, b"", []
    if data[:4] != MAGIC or len(data) < 12:
        sys.exit("scm_worker: bad message")
    _, _, kind, length = struct.unpack("<BBHI", data[4:12])
    return kind, data[12:12 + length], list(fds)


def main():
    ch = socket.socket(fileno=int(os.environ.pop("BATON_FD")))
    if "LISTEN_FDS" in os.environ:
        sys.exit("scm_worker: LISTEN_FDS with --pass scm")
    ch.sendall(message(HELLO, struct.pack("<IHH", os.getpid(), 1, 0)))
    fds, total = [], None
    while total is None or len(fds) < total:
        kind, body, got = receive(ch)
        if kind != LISTENERS:
            sys.exit(f"scm_worker: expected LISTENERS, got {kind}")
        first, count, total = struct.unpack("<HHH", body[:6])
        if count != len(got) or first != len(fds):
            sys.exit("scm_worker: LISTENERS count and fds disagree")
        fds += got

    def ready():
        ch.sendall(message(READY))
        ch.sendall(message(STATUS, struct.pack("<IH", 0, 7) + b"serving"))

    # DRAIN arrives on the channel: turn it into the same drain as SIGTERM.
    def watch():
        pid = os.fork()
        if pid == 0:
            while True:
                select.select([ch], [], [])
                kind, _, _ = receive(ch)
                if kind in (DRAIN, None):
                    os.kill(os.getppid(), signal.SIGTERM)
                    os._exit(0)
    watch()
    serve(fds, os.environ.get("BATON_GENERATION", "?"), ready=ready)
    ch.sendall(message(DRAINED))


if __name__ == "__main__":
    main()
