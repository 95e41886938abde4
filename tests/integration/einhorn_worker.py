#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""einhorn_worker.py - an einhorn-style worker, as strict as einhorn's own worker library.

Usage: einhorn_worker.py [--config FILE]

It refuses to run unless EINHORN_MASTER_PID is its parent (lib/einhorn/worker.rb), reads
EINHORN_FD_COUNT and EINHORN_FD_<n> (checking the deprecated EINHORN_FDS agrees), acks its
startup with a "worker:ack" line on EINHORN_SOCK_PATH, and drains on USR2, as einhorn asks.
With --config, it then reads FILE, one word: "serve"; "no-ack", a worker stuck in its
startup that holds its listeners but never acks nor accepts; or anything else, which it
refuses (exit status 1) as a server refuses a broken configuration.
"""
import os
import signal
import socket
import sys

from workerlib import configured_mode, serve


def ack():
    msg = f"---\ncommand: worker:ack\npid: {os.getpid()}\n"
    line = msg.replace("%", "%25").replace("\n", "%0A") + "\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["EINHORN_SOCK_PATH"])
    s.sendall(line.encode())
    s.close()


def never_ack():
    """Waits for USR2 (a drain) or, more likely, to be killed at the ready deadline."""
    print(f"einhorn_worker: pid {os.getpid()}: configured not to ack", file=sys.stderr,
          flush=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    signal.sigwait({signal.SIGUSR2})


def main():
    args = sys.argv[1:]
    if args and (len(args) != 2 or args[0] != "--config"):
        sys.exit(f"einhorn_worker: usage: einhorn_worker.py [--config FILE], not {args}")
    master = os.environ.get("EINHORN_MASTER_PID")
    if master is None or int(master) != os.getppid():
        sys.exit(f"einhorn_worker: EINHORN_MASTER_PID {master} is not my parent {os.getppid()}")
    n = int(os.environ["EINHORN_FD_COUNT"])
    fds = [int(os.environ[f"EINHORN_FD_{i}"]) for i in range(n)]
    if os.environ.get("EINHORN_FDS", "").split() != [str(fd) for fd in fds]:
        sys.exit("einhorn_worker: EINHORN_FDS disagrees with EINHORN_FD_<n>")
    int(os.environ["EINHORN_CHILD_INDEX"])
    mode = configured_mode(args[1], "einhorn_worker", ("serve", "no-ack")) if args else "serve"
    if mode == "no-ack":
        never_ack()
        return
    serve(fds, os.environ.get("BATON_GENERATION", "?"), ready=ack, drain_signal=signal.SIGUSR2)


if __name__ == "__main__":
    main()
