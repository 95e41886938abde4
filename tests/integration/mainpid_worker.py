#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""mainpid_worker.py - a worker that names another process as its main one with MAINPID=.

Usage: mainpid_worker.py MODE [FILE]
  stale     fork a child, MAINPID=child and READY=1; at SIGUSR1 kill and reap the child itself
            and write its pid to FILE: batond's idea of the main pid is now a free number
  member    fork a child; the child (a group member, not the main process) sends MAINPID=self
  stranger  MAINPID=1 (not a descendant)
Then it waits for SIGTERM and exits 0.
"""
import os
import signal
import socket
import sys
import time


def notify(text):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(text.encode(), addr)


def main():
    mode = sys.argv[1]
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if mode == "stranger":
        notify("MAINPID=1\nREADY=1")
    else:
        child = os.fork()
        if child == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if mode == "member":
                notify(f"MAINPID={os.getpid()}")
            while True:
                time.sleep(60)
        if mode == "member":
            notify("READY=1")
        else:
            notify(f"MAINPID={child}\nREADY=1")
            # The test sends SIGUSR1 once batond logged the new main pid.
            signal.sigwait([signal.SIGUSR1])
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            with open(sys.argv[2] + ".tmp", "w") as f:
                f.write(str(child))
            os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
