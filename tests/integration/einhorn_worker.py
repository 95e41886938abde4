#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""einhorn_worker.py - an einhorn-style worker, as strict as einhorn's own worker library.

It refuses to run unless EINHORN_MASTER_PID is its parent (lib/einhorn/worker.rb), reads
EINHORN_FD_COUNT and EINHORN_FD_<n> (checking the deprecated EINHORN_FDS agrees), acks its
startup with a "worker:ack" line on EINHORN_SOCK_PATH, and drains on USR2, as einhorn asks.
"""
import os
import signal
import socket
import sys

from workerlib import serve


def ack():
    msg = f"---\ncommand: worker:ack\npid: {os.getpid()}\n"
    line = msg.replace("%", "%25").replace("\n", "%0A") + "\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["EINHORN_SOCK_PATH"])
    s.sendall(line.encode())
    s.close()


def main():
    master = os.environ.get("EINHORN_MASTER_PID")
    if master is None or int(master) != os.getppid():
        sys.exit(f"einhorn_worker: EINHORN_MASTER_PID {master} is not my parent {os.getppid()}")
    n = int(os.environ["EINHORN_FD_COUNT"])
    fds = [int(os.environ[f"EINHORN_FD_{i}"]) for i in range(n)]
    if os.environ.get("EINHORN_FDS", "").split() != [str(fd) for fd in fds]:
        sys.exit("einhorn_worker: EINHORN_FDS disagrees with EINHORN_FD_<n>")
    int(os.environ["EINHORN_CHILD_INDEX"])
    serve(fds, os.environ.get("BATON_GENERATION", "?"), ready=ack, drain_signal=signal.SIGUSR2)


if __name__ == "__main__":
    main()
