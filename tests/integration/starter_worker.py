#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""starter_worker.py - a Server::Starter-style worker: reads only SERVER_STARTER_PORT.

Usage: starter_worker.py [--config FILE] KEY...

It parses the variable as Server::Starter::server_ports() does (split on ';', then on the
first '='), and insists on the keys given as arguments, in order, and on a generation >= 1.
With --config, it then reads FILE, one word: "serve", or anything else, which it refuses
(exit status 1) as a server refuses a broken configuration.
"""
import os
import sys

from workerlib import configured_mode, serve


def main():
    args = sys.argv[1:]
    config = None
    if args[:1] == ["--config"]:
        if len(args) < 2:
            sys.exit("starter_worker: --config needs a file")
        config, args = args[1], args[2:]
    env = os.environ.get("SERVER_STARTER_PORT")
    if env is None or "LISTEN_FDS" in os.environ:
        sys.exit("starter_worker: expected SERVER_STARTER_PORT and no LISTEN_FDS")
    pairs = [item.split("=", 1) for item in env.split(";")]
    keys = [k for k, _ in pairs]
    if keys != args:
        sys.exit(f"starter_worker: keys {keys}, expected {args}")
    gen = int(os.environ["SERVER_STARTER_GENERATION"])
    if gen < 1:
        sys.exit("starter_worker: generation counts from 1")
    if config is not None:
        configured_mode(config, "starter_worker")
    serve([int(fd) for _, fd in pairs], gen)


if __name__ == "__main__":
    main()
