# SPDX-License-Identifier: MIT
"""test_formats.py - hand-off formats other servers already read: Server::Starter, einhorn, nginx.

The Server::Starter-style and einhorn-style workers (issue #6), each: 20 reloads under load
with 0 failed requests, every reload replacing every worker pid of the old generation, which
got the drain signal and exited 0, and every new pid serving; and a new generation that
refuses to start (or, for einhorn, never acks) leaves the old one serving, with 0 failed.
"""
import os
import re
import signal
import socket
import sys
import tempfile

from harness import environ_of
from harness import (DEADLINE, Batond, Load, alive, check, http_get, reload_and_wait, target_of,
                     wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
STARTER_WORKER = os.path.join(HERE, "starter_worker.py")
EINHORN_WORKER = os.path.join(HERE, "einhorn_worker.py")

RELOADS = 20
WORKERS = 2  # per generation
LOAD_THREADS = 4
# einhorn-ack readiness: long enough for any start on a busy machine, short enough that a
# worker that never acks fails its reload soon.
EINHORN_READY_TIMEOUT = "10s"
# start_server waits --interval (a delay) before it drains the old worker; batond can do the
# same (--ready delay:1s), but a delay cannot tell a worker that refuses to start from one that
# a busy machine starts slowly, and drains the old generation either way. Server::Starter's
# servers send nothing when ready, so batond watches them wait on a listener instead.
STARTER_READY = "listening"


def write_config(path, word):
    """The workers' configuration file, replaced atomically: a worker starting now reads the
    old or the new word."""
    with open(path + ".new", "w") as f:
        f.write(word + "\n")
    os.replace(path + ".new", path)


def started(b, gen):
    """The pids batond started for generation gen, from its log (-v)."""
    return {int(p) for p in re.findall(rf"generation {gen} worker \d+: started pid (\d+)$",
                                       b.log(), re.M)}


def generation_workers(b, gen):
    """Waits until batond's live workers are exactly the WORKERS pids it started for gen (none
    respawned, none of another generation left); returns them."""
    def settled():
        pids = started(b, gen)
        check(len(pids) <= WORKERS, f"generation {gen}: a worker was respawned: {sorted(pids)}")
        return pids if len(pids) == WORKERS and set(b.workers()) == pids else None
    return wait_for(settled, f"the {WORKERS} workers of generation {gen} alone (started "
                    f"{sorted(started(b, gen))}, live {b.workers()})")


def reply(spec):
    """(pid, gen) from one worker's reply: "pid=N gen=G"."""
    body = http_get(spec, timeout=DEADLINE)
    m = re.fullmatch(r"pid=(\d+) gen=(\S+)\n", body)
    check(m, f"{spec}: unexpected reply {body!r}")
    return int(m.group(1)), m.group(2)


def check_every_worker_serves(specs, pids, gen):
    """Requests on every listener until each of pids has answered one; every reply must come
    from one of pids and name generation gen."""
    seen = set()

    def all_seen():
        gone = sorted(p for p in pids if not alive(p))
        check(not gone, f"worker pids {gone} of generation {gen} exited before they served")
        for spec in specs:
            pid, g = reply(spec)
            check(pid in pids and g == str(gen),
                  f"{spec}: pid={pid} gen={g} replied, expected one of {sorted(pids)}, gen={gen}")
            seen.add(pid)
        return seen == pids
    wait_for(all_seen, f"each of {sorted(pids)} to serve (seen {sorted(seen)})")


def reload_replaces(b, gen, old, drain):
    """Reloads to gen, which must succeed, and waits until every pid in old got SIG<drain>
    and exited 0. Returns the pids of gen, none of them in old."""
    mark = b.mark()
    check(reload_and_wait(b, gen) == "done", f"reload to generation {gen} failed")
    wait_for(lambda: not any(alive(p) for p in old), f"every pid of {sorted(old)} to exit")
    for p in sorted(old):
        b.wait_log(rf"sent SIG{drain} to worker pid {p}$", start=mark)
        # A worker that died while serving is reported "exited unexpectedly with ...".
        m, _ = b.wait_log(rf"worker \d+ \(pid {p}\): exited (unexpectedly )?with ([^;]+)",
                          start=mark)
        check(m.group(0).endswith("exited with status 0"),
              f"old worker pid {p}: {m.group(0)}: not drained by SIG{drain}")
    new = generation_workers(b, gen)
    check(not (new & old), f"reload {gen} kept pids {sorted(new & old)}")
    return new


def print_log(b):
    """On a failure: what batond (and the workers, on the same stderr) said last."""
    print(f"  batond pid {b.pid}; its log, last 60 lines:", flush=True)
    for line in b.log().splitlines()[-60:]:
        print(f"    {line}", flush=True)


def stop_and_check_nothing_left(b):
    last = set(b.workers())
    b.signal(signal.SIGTERM)
    check(b.wait_exit() == 0, "batond did not exit 0 after SIGTERM")
    wait_for(lambda: not any(alive(p) for p in last), "every worker to exit")


def twenty_reloads_under_load(name, b, specs, drain):
    """RELOADS reloads with loadgen on specs[0]; each replaces every pid and each new pid
    serves on every listener; prints loadgen's figures."""
    pids = generation_workers(b, 1)
    check_every_worker_serves(specs, pids, 1)
    load = Load(target_of(specs[0]), duration="600s", threads=LOAD_THREADS)
    try:
        for gen in range(2, RELOADS + 2):
            pids = reload_replaces(b, gen, pids, drain)
            check_every_worker_serves(specs, pids, gen)
        check(load.proc.poll() is None, "the load ended before the reloads did")
        res = load.finish()
    finally:
        load.kill()
    print(f"  {name}, {RELOADS} reloads under load: {res}", flush=True)
    check(res["ok"] > 0, f"no request succeeded: {res}")
    check(res["failed"] == 0, f"{res['failed']} failed requests over {RELOADS} reloads: {res}")
    # Each generation served loadgen (at least one pid each), and only our workers did.
    check(RELOADS + 1 <= res["pids"] <= WORKERS * (RELOADS + 1),
          f"replies from {res['pids']} pids, {WORKERS} workers x {RELOADS + 1} generations")
    sent = b.count(rf"sent SIG{drain} to worker pid")
    check(sent == WORKERS * RELOADS, f"SIG{drain} sent {sent} times for {RELOADS} reloads")
    stop_and_check_nothing_left(b)


def broken_generations_keep_the_old_one(name, b, specs, conf, drain, breakers):
    """breakers: (what, word, reason) triples. With word in the configuration file, a reload
    must fail for reason (a regex on batond's line) while generation 1 serves on, neither
    drained nor respawned; then "serve" again, and the next reload must replace it. Prints
    loadgen's figures."""
    old = generation_workers(b, 1)
    check_every_worker_serves(specs, old, 1)
    load = Load(target_of(specs[0]), duration="600s", threads=LOAD_THREADS)
    try:
        gen = 2
        for what, word, reason in breakers:
            write_config(conf, word)
            check(reload_and_wait(b, gen) == "failed", f"a reload with {what} was kept")
            m, _ = b.wait_log(rf"reload to generation {gen} failed: .*")
            check(re.search(reason, m.group(0)), f"{what}: unexpected reason: {m.group(0)}")
            failed = started(b, gen)
            check(failed and not (failed & old), f"generation {gen} started {sorted(failed)}")
            wait_for(lambda: not any(alive(p) for p in failed),
                     f"the failed generation {gen} ({sorted(failed)}) to be reaped")
            check(generation_workers(b, 1) == old, "generation 1 was respawned")
            check(b.count(rf"sent SIG{drain} to worker pid") == 0,
                  f"a worker was drained after {what}")
            check_every_worker_serves(specs, old, 1)
            gen += 1
        write_config(conf, "serve")
        new = reload_replaces(b, gen, old, drain)
        check_every_worker_serves(specs, new, gen)
        check(load.proc.poll() is None, "the load ended before the reloads did")
        res = load.finish()
    finally:
        load.kill()
    print(f"  {name}, {len(breakers)} failed reload(s), then a good one, under load: {res}",
          flush=True)
    check(res["ok"] > 0, f"no request succeeded: {res}")
    check(res["failed"] == 0, f"{res['failed']} failed requests: {res}")
    # Only generation 1 and the repaired one served: no worker of a failed generation did.
    check(res["pids"] <= 2 * WORKERS, f"replies from {res['pids']} pids: {res}")
    stop_and_check_nothing_left(b)


def start_starter(d, config=None):
    """batond with a Server::Starter-style worker on IPv4, IPv6 and Unix listeners, once
    generation 1 is ready. Returns (b, the listeners' addresses)."""
    sock = f"{d}/s.sock"
    args = ["-c", f"{d}/batond.sock", "--pass", "server-starter", "--ready", STARTER_READY,
            "-n", str(WORKERS), "-v"]
    # The worker checks the exact keys, so learn the ports first: this worker exits 1.
    b = Batond(["-l", "127.0.0.1:0", "-l", "[::1]:0", "-l", f"unix:{sock}", *args],
               [sys.executable, STARTER_WORKER])
    try:
        v4, v6 = b.address("listen0"), b.address("listen1")
    finally:
        b.cleanup()
    keys = [target_of(v4), target_of(v6), sock]
    opts = ["--config", config] if config else []
    b = Batond(["-l", keys[0], "-l", keys[1], "-l", f"unix:{sock}", *args],
               [sys.executable, STARTER_WORKER, *opts, *keys])
    try:
        b.wait_log(rf"generation 1: {WORKERS}/{WORKERS} workers ready")
    except BaseException:
        print_log(b)
        b.cleanup()
        raise
    return b, [v4, v6, f"unix:{sock}"]


def start_einhorn(d, config=None):
    """batond with an einhorn-style worker on two listeners, once generation 1 has acked.
    The control socket (and so EINHORN_SOCK_PATH beside it) is private to the test."""
    opts = ["--config", config] if config else []
    b = Batond(["-l", "127.0.0.1:0", "-l", "127.0.0.1:0", "-c", f"{d}/batond.sock",
                "--pass", "einhorn", "--ready", "einhorn-ack",
                "--ready-timeout", EINHORN_READY_TIMEOUT, "-n", str(WORKERS), "-v"],
               [sys.executable, EINHORN_WORKER, *opts])
    try:
        b.wait_log(rf"generation 1: {WORKERS}/{WORKERS} workers ready")
        check(b.count(r"\): worker:ack$") == WORKERS, "readiness did not come from the acks")
    except BaseException:
        print_log(b)
        b.cleanup()
        raise
    return b, [b.address("listen0"), b.address("listen1")]


def test_server_starter_format_twenty_reloads_under_load():
    with tempfile.TemporaryDirectory() as d:
        b, specs = start_starter(d)
        try:
            twenty_reloads_under_load(f"server-starter (--ready {STARTER_READY})", b, specs,
                                      "TERM")
            # SERVER_STARTER_GENERATION followed: check_every_worker_serves saw gen=N.
        except BaseException:
            print_log(b)
            raise
        finally:
            b.cleanup()


def test_server_starter_worker_refusing_its_configuration_keeps_the_old_generation():
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "worker.conf")
        write_config(conf, "serve")
        b, specs = start_starter(d, config=conf)
        try:
            broken_generations_keep_the_old_one(
                f"server-starter (--ready {STARTER_READY})", b, specs, conf, "TERM",
                [("a configuration the worker refuses", "broken",
                  r"worker \d+ \(pid \d+\) exited with status 1 before it was ready")])
            check(b.count(r"starter_worker: .*: bad configuration 'broken', refusing") >= 1,
                  "the worker did not say why it refused")
        except BaseException:
            print_log(b)
            raise
        finally:
            b.cleanup()


def test_einhorn_format_twenty_reloads_with_ack_readiness_and_usr2_drain():
    with tempfile.TemporaryDirectory() as d:
        b, specs = start_einhorn(d)
        try:
            twenty_reloads_under_load("einhorn (--ready einhorn-ack)", b, specs, "USR2")
            acks = b.count(r"\): worker:ack$")
            check(acks == WORKERS * (RELOADS + 1), f"{acks} acks for {RELOADS + 1} generations")
        except BaseException:
            print_log(b)
            raise
        finally:
            b.cleanup()


def test_einhorn_worker_refusing_to_start_or_never_acking_keeps_the_old_generation():
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "worker.conf")
        write_config(conf, "serve")
        b, specs = start_einhorn(d, config=conf)
        try:
            broken_generations_keep_the_old_one(
                "einhorn (--ready einhorn-ack)", b, specs, conf, "USR2",
                [("a configuration the worker refuses", "broken",
                  r"worker \d+ \(pid \d+\) exited with status 1 before it was ready"),
                 ("a worker that never acks", "no-ack",
                  r"worker \d+ \(pid \d+\) was not ready in time")])
            check(b.count(r"einhorn_worker: .*: bad configuration 'broken', refusing") >= 1,
                  "the worker did not say why it refused")
            check(b.count(r"einhorn_worker: pid \d+: configured not to ack") >= 1,
                  "no worker of the silent generation got as far as not acking")
        except BaseException:
            print_log(b)
            raise
        finally:
            b.cleanup()


def worker_env(pid):
    return environ_of(pid)


def test_einhorn_socket_of_a_batond_without_its_control_socket_is_private():
    # A batond told to run without a control socket: its einhorn socket cannot be put beside
    # that path, so it lives in a private directory, removed at exit.
    args = ["--no-control", "-l", "127.0.0.1:0", "--pass", "einhorn", "--ready", "einhorn-ack",
            "--ready-timeout", EINHORN_READY_TIMEOUT]
    b = Batond(args, [sys.executable, EINHORN_WORKER])
    try:
        b.wait_log(r"generation 1: 1/1 workers ready")
        sock = worker_env(b.workers()[0])[b"EINHORN_SOCK_PATH"].decode()
        check(sock.startswith("/tmp/baton-") and sock.endswith("/einhorn"),
              f"EINHORN_SOCK_PATH {sock}")
        check(os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700, "directory mode")
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, "exit status")
        check(not os.path.exists(os.path.dirname(sock)), f"{os.path.dirname(sock)} was left")
    finally:
        b.cleanup()


def test_einhorn_worker_refuses_a_master_that_is_not_its_parent():
    # The worker checks EINHORN_MASTER_PID against its parent: batond must be that parent.
    with tempfile.TemporaryDirectory() as d:
        b = Batond(["-l", "127.0.0.1:0", "-c", f"{d}/batond.sock", "--pass", "einhorn",
                    "--ready", "einhorn-ack"],
                   ["/bin/sh", "-c", f'"{sys.executable}" "{EINHORN_WORKER}"; exit 3'])
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


def test_an_einhorn_ack_counts_for_the_process_that_sent_it_not_the_pid_it_names():
    # A process that is not the worker sends "worker:ack" naming the worker's pid: batond goes
    # by the sender's credentials, so the worker (configured never to ack) is not made ready.
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "conf")
        with open(conf, "w") as f:
            f.write("no-ack\n")
        b = Batond(["-l", "127.0.0.1:0", "--pass", "einhorn", "--ready", "einhorn-ack",
                    "--ready-timeout", "3s"], [sys.executable, EINHORN_WORKER, "--config", conf])
        try:
            w = wait_for(lambda: b.workers(), "the worker")
            sock = wait_for(lambda: worker_env(w[0]).get(b"EINHORN_SOCK_PATH"),
                            "the worker's exec").decode()
            msg = f"---\ncommand: worker:ack\npid: {w[0]}\n"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            s.sendall((msg.replace("%", "%25").replace("\n", "%0A") + "\n").encode())
            s.close()
            check(b.wait_exit() == 1, "a forged ack made the first generation ready")
            b.wait_log(r"generation 1 failed to start")
        finally:
            b.cleanup()
