# SPDX-License-Identifier: MIT
"""test_formats.py - hand-off formats other servers already read: Server::Starter, einhorn, nginx."""
import os
import signal
import sys
import tempfile

from harness import Batond, Load, alive, check, http_get, target_of, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def reloads_under_load(b, addr, n):
    load = Load(target_of(addr), duration="120s", threads=4)
    try:
        for gen in range(2, 2 + n):
            old = set(b.workers())
            mark = b.mark()
            b.signal(signal.SIGHUP)
            b.wait_log(rf"generation {gen}: .*reload done", start=mark)
            wait_for(lambda: not any(alive(p) for p in old), f"generation {gen - 1} to exit")
            check(not (set(b.workers()) & old), "workers were not replaced")
        load.proc.send_signal(signal.SIGINT)
        return load.result()
    finally:
        load.kill()


def test_server_starter_format_through_reloads():
    with tempfile.TemporaryDirectory() as d:
        b = Batond(["-l", "127.0.0.1:0", "-l", "[::1]:0", "-l", f"unix:{d}/s.sock",
                    "--pass", "server-starter", "--ready", "delay:200ms", "-n", "2"],
                   [sys.executable, os.path.join(HERE, "starter_worker.py")])
        try:
            v4, v6 = b.address("listen0"), b.address("listen1")
            keys = [target_of(v4), target_of(v6), f"{d}/s.sock"]
            b.cleanup()
            # Now that the ports are known, the worker can check the exact keys.
            b = Batond(["-l", keys[0], "-l", keys[1], "-l", f"unix:{d}/s.sock",
                        "--pass", "server-starter", "--ready", "delay:200ms", "-n", "2"],
                       [sys.executable, os.path.join(HERE, "starter_worker.py"), *keys])
            b.wait_log(r"generation 1: 2/2 workers ready")
            check("gen=1" in http_get(v4) and "gen=1" in http_get(v6) and
                  "gen=1" in http_get(f"unix:{d}/s.sock"), "not served on every key")
            res = reloads_under_load(b, v4, 5)
            check(res["failed"] == 0 and res["ok"] > 0, res)
            check("gen=6" in http_get(v4), "SERVER_STARTER_GENERATION did not follow")
        finally:
            b.cleanup()


def test_einhorn_format_with_ack_readiness_and_usr2_drain():
    b = Batond(["-l", "127.0.0.1:0", "-l", "127.0.0.1:0", "--pass", "einhorn",
                "--ready", "einhorn-ack", "--ready-timeout", "30s", "-n", "2", "-v"],
               [sys.executable, os.path.join(HERE, "einhorn_worker.py")])
    try:
        addr = b.address("listen0")
        b.wait_log(r"generation 1: 2/2 workers ready")
        check(b.count(r"\): worker:ack$") == 2, "readiness did not come from the acks")
        res = reloads_under_load(b, addr, 5)
        check(res["failed"] == 0 and res["ok"] > 0, res)
        # Lines about the last old generation may still be on their way to the reader.
        wait_for(lambda: b.count(r"sent SIGUSR2 to worker pid") >= 10, "USR2 drains")
        wait_for(lambda: b.count(r"exited with status 0") >= 10, "clean einhorn drains")
    finally:
        b.cleanup()


def test_einhorn_worker_refuses_a_master_that_is_not_its_parent():
    # The worker checks EINHORN_MASTER_PID against its parent: batond must be that parent.
    b = Batond(["-l", "127.0.0.1:0", "--pass", "einhorn", "--ready", "einhorn-ack"],
               ["/bin/sh", "-c", f'"{sys.executable}" "{HERE}/einhorn_worker.py"; exit 3'])
    try:
        check(b.wait_exit() == 1, "a worker one level down must fail its own check")
        b.wait_log(r"generation 1 failed to start: worker 0 \(pid \d+\) exited with status 3")
    finally:
        b.cleanup()


def test_nginx_variable_lists_every_fd_with_a_semicolon():
    b = Batond(["-l", "127.0.0.1:0", "-l", "127.0.0.1:0", "--pass", "nginx",
                "--ready", "none"], ["sleep", "600"])
    try:
        b.wait_log(r"generation 1: 1/1 workers ready")
        w = b.workers()[0]
        env = wait_for(lambda: (lambda e: e if b"NGINX" in e else None)(
            dict(kv.split(b"=", 1) for kv in open(f"/proc/{w}/environ", "rb").read().split(b"\0")
                 if b"=" in kv)), "the worker's exec")
        check(env[b"NGINX"] == b"3;4;", env[b"NGINX"])
        check(b"LISTEN_FDS" not in env, "systemd's variables were passed too")
        b.signal(signal.SIGTERM)
        b.wait_log(r"stopping")
        check(b.wait_exit() == 0, "exit")
        # nginx drains on QUIT: batond picked it without being told.
        b.wait_log(r"exited with signal QUIT")
    finally:
        b.cleanup()
