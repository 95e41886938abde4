#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""sysd_restart.py - systemctl restart of the shipped unit under load, in a booted systemd 252.

Usage: tests/bench/sysd_restart.py [BUILD] [RESTARTS]. Boots the container of
tests/integration/container.py with this tree's `make install`, starts batond@8080, runs
loadgen (4 threads, --timeout 30s) in its network while systemctl restarts the service
RESTARTS times (default 10), and prints loadgen's counts and latencies. Used to weigh the
stop's stages under the fd store (docs/SYSTEMD.md): run it on two builds and compare.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
os.environ.setdefault("BUILD", sys.argv[1] if len(sys.argv) > 1 else "build")

from container import Container  # noqa: E402
from harness import Load, wait_for  # noqa: E402


def main():
    restarts = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    ct = Container()
    try:
        ct.systemctl("start", "batond@8080.socket", "batond@8080.service")
        ld = Load("127.0.0.1:8080", duration="600s", threads=4, extra=("--timeout", "30s"),
                  prefix=ct.net_argv([]))
        try:
            for _ in range(restarts):
                # Past StartLimitBurst (5 in 10 s) systemd refuses to start it again.
                ct.systemctl("reset-failed", "batond@8080.service")
                ct.systemctl("restart", "batond@8080.service")
                wait_for(lambda: ct.prop("batond@8080.service", "StatusText").startswith(
                    "generation 1: 4/4"), "the restarted batond to serve")
            res = ld.finish()
        finally:
            ld.kill()
        print(f"sysd_restart: {restarts} restarts: " +
              " ".join(f"{k}={v}" for k, v in res.items()))
    finally:
        ct.cleanup()


if __name__ == "__main__":
    main()
