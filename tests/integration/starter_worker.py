#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""starter_worker.py - a Server::Starter-style worker: reads only SERVER_STARTER_PORT.

It parses the variable as Server::Starter::server_ports() does (split on ';', then on the
first '='), and insists on the keys given as arguments, in order, and on a generation >= 1.
"""
import os
import sys

from workerlib import serve


def main():
    env = os.environ.get("SERVER_STARTER_PORT")
    if env is None or "LISTEN_FDS" in os.environ:
        sys.exit("starter_worker: expected SERVER_STARTER_PORT and no LISTEN_FDS")
    pairs = [item.split("=", 1) for item in env.split(";")]
    keys = [k for k, _ in pairs]
    if keys != sys.argv[1:]:
        sys.exit(f"starter_worker: keys {keys}, expected {sys.argv[1:]}")
    gen = int(os.environ["SERVER_STARTER_GENERATION"])
    if gen < 1:
        sys.exit("starter_worker: generation counts from 1")
    serve([int(fd) for _, fd in pairs], gen)


if __name__ == "__main__":
    main()
