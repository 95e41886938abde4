# SPDX-License-Identifier: MIT
"""test_recipes.py - every recipe of docs/WRAPPING.md, run as it is written there (issue #14):
Node.js (TCP and a Unix socket), HAProxy as a worker, Apache httpd (event MPM), uWSGI, puma,
redis, memcached and a UDP echo server.

One batond per server, under one load run: 20 reloads, each replacing every process of the old
generation, the drain signal sent and every old generation exiting 0; then a configuration the
server refuses, rolled back with the old generation serving; then the repaired one. 0 failed
requests over all of it. A missing package fails the test: scripts/install-deps installs them.
"""
import os
import re
import signal
import tempfile

import recipes
from harness import (Batond, Load, TestFailure, alive, check, children_of, free_port,
                     reload_and_wait, wait_for)
from servers_lib import PORT_TRIES, holder_of_connection, kill_all, tree, wait_tree

RELOADS = 20
LOAD_THREADS = 2  # 2 cores: more load threads only slow the reloads down


def start(r, d):
    """batond with recipe r in d on a free port (retried if taken meanwhile); returns (b, port)
    once generation 1 serves with its processes."""
    for _ in range(PORT_TRIES):
        port = free_port()
        r.config(d, port)
        scheme = "udp://" if r.protocol == "udp-echo" else ""
        extra = []
        for spec in (r.extra_listeners(d) if r.extra_listeners else []):
            extra += ["-l", spec]
        b = Batond(["-l", f"{scheme}127.0.0.1:{port}", *extra,
                    "-c", os.path.join(d, "batond.sock"), "-v", *r.args], r.command(d))
        try:
            b.wait_log(r"generation 1: \d+/\d+ workers ready")
            wait_tree(b, r.n_procs)
        except TestFailure:
            in_use = re.search(r"listen \S+: Address already in use", b.log())
            kill_all(b)
            if not in_use:
                print_log(b)
                raise
            continue
        return b, port
    raise TestFailure(f"no free port in {PORT_TRIES} tries")


def print_log(b):
    print(f"  batond pid {b.pid} {'alive' if alive(b.pid) else 'gone'}, exit status "
          f"{b.proc.poll()}; its log, last 60 lines:", flush=True)
    for line in b.log().splitlines()[-60:]:
        print(f"    {line}", flush=True)


def loads(r, d, port):
    if r.protocol != "http":
        return [recipes.LineLoad(r.protocol, port, threads=LOAD_THREADS)]
    extra = r.extra_listeners(d) if r.extra_listeners else []
    # The same number of load threads in all: one per listener when there are several.
    threads = LOAD_THREADS if not extra else 1
    out = [Load(f"127.0.0.1:{port}", duration="600s", threads=threads)]
    for spec in extra:
        out.append(Load(spec, duration="600s", threads=threads))
    return out


def check_serves(r, port, pids):
    """An HTTP client's connection is accepted by one of pids, which answers it."""
    if r.protocol != "http":
        return
    holder, body = holder_of_connection(port, pids)
    if r.pid_body:
        m = re.search(r"\bpid=(\d+)", body)
        check(m and int(m.group(1)) == holder,
              f"{r.name}: pid {holder} holds the connection but {body!r} replied")


def run_recipe(r):
    with tempfile.TemporaryDirectory() as d:
        b, port = start(r, d)
        try:
            drive(r, b, d, port)
            last = tree(b)
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, f"batond did not exit 0 after SIGTERM:\n{b.log()}")
            wait_for(lambda: not any(alive(p) for p in last), "every server process to exit")
        except BaseException:
            print_log(b)
            raise
        finally:
            kill_all(b)


def drive(r, b, d, port):
    check_serves(r, port, tree(b))
    running = loads(r, d, port)
    try:
        gen = 2
        for gen in range(2, RELOADS + 2):
            old = wait_tree(b, r.n_procs)
            check(reload_and_wait(b, gen) == "done", f"{r.name}: reload {gen} failed")
            wait_for(lambda: not any(alive(p) for p in old),
                     f"every process of generation {gen - 1} to exit")
            new = wait_tree(b, r.n_procs)
            check(not (new & old), f"reload {gen} kept processes: {sorted(new & old)}")
            if gen in (2, RELOADS + 1):  # /proc walks under load are slow: first and last
                check_serves(r, port, new)
        # A configuration the server refuses: the reload fails, the old generation serves on.
        old = wait_tree(b, r.n_procs)
        r.config(d, port, broken=True)
        gen += 1
        check(reload_and_wait(b, gen) == "failed", f"{r.name}: the broken reload was kept")
        m, _ = b.wait_log(rf"reload to generation {gen} failed: (.*)")
        check(re.search(r"exited with status [1-9]\d* before it was ready", m.group(1)),
              f"unclear reason: {m.group(0)}")
        wait_for(lambda: tree(b) == old, f"only generation {gen - 1} to be left")
        check_serves(r, port, old)
        r.config(d, port)
        gen += 1
        check(reload_and_wait(b, gen) == "done", f"{r.name}: the repaired reload failed")
        wait_for(lambda: not any(alive(p) for p in old), "the old generation to exit")
        check(not (wait_tree(b, r.n_procs) & old), "the repaired reload kept processes")
        for load in running:
            check(getattr(load, "proc", None) is None or load.proc.poll() is None,
                  "the load ended before the reloads did")
        results = [load.finish() for load in running]
    finally:
        for load in running:
            load.kill()
    for res in results:
        print(f"  {r.name} ({' '.join(r.args)}): {RELOADS} reloads, a broken configuration "
              f"and its repair under load: {res}", flush=True)
        check(res["ok"] > 0, f"no request succeeded: {res}")
        known = min(res["reset"], r.known_resets)
        check(res["failed"] - known == 0, f"{res['failed']} failed requests: {res}")
    drained = RELOADS + 1  # every good reload drains the generation before it
    wait_for(lambda: b.count(rf"sent SIG{r.drain} to worker pid") >= drained,
             f"SIG{r.drain} sent for every reload")
    wait_for(lambda: b.count(r"generation \d+ worker \d+ \(pid \d+\): exited with status 0")
             >= drained, "every old generation exiting 0")
    check(b.count(rf"sent SIG{r.drain} to worker pid") == drained,
          f"SIG{r.drain} sent {b.count(rf'sent SIG{r.drain} to worker pid')} times")
    check(not re.search(r"worker pid \d+ .*(ignores|default action|catches \S+ itself)",
                        b.log()), "batond warned about the drain signal of a tested recipe")
    if r.check_log:
        r.check_log(b)


def test_node_js_on_tcp_and_a_unix_socket():
    run_recipe(recipes.node())


def test_haproxy_as_a_worker_binding_fd_3():
    run_recipe(recipes.haproxy())


def test_apache_httpd_event_mpm_by_preload_with_winch():
    run_recipe(recipes.apache())


def test_uwsgi_with_its_graceful_term_hook():
    run_recipe(recipes.uwsgi())


def test_puma_cluster_with_notify_readiness_through_the_sd_notify_gem():
    run_recipe(recipes.puma())


def test_puma_drops_a_connection_without_its_request_at_a_drain_unless_queue_requests_is_off():
    # The empty replies under puma, made to happen every time: a client connects, a worker of
    # generation 1 accepts it, the client waits; a reload drains generation 1; then the client
    # sends its request. With puma's reactor (queue_requests, its default) the worker closes
    # the connection without a byte; with queue_requests false it answers.
    for queue_requests, want in ((True, "empty"), (False, "served")):
        r = recipes.puma()
        r.config = lambda d, p, broken=False: recipes.puma_config(d, p, broken, queue_requests)
        with tempfile.TemporaryDirectory() as d:
            b, port = start(r, d)
            try:
                got = connection_across_a_drain(b, port)
                check(got == want, f"queue_requests {queue_requests}: {got}, expected {want}")
            except BaseException:
                print_log(b)
                raise
            finally:
                kill_all(b)


def connection_across_a_drain(b, port):
    """A connection accepted by generation 1, its request sent only once generation 1 drains:
    'served' (200 from its holder), 'empty' or 'other'."""
    import socket
    from servers_lib import _tcp_inode
    old = tree(b)
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        peer = s.getsockname()[1]
        inode = wait_for(lambda: _tcp_inode(port, peer), "a worker to accept the connection")
        holder = wait_for(lambda: next((p for p in old if f"socket:[{inode}]" in
                                         fd_targets(p)), None), "the worker that holds it")
        check(reload_and_wait(b, 2) == "done", "the reload failed")
        # TERM reached generation 1's workers: the one without a client exits at once.
        idle = old - {holder, ppid_of(holder)}
        wait_for(lambda: not any(alive(p) for p in idle), "the idle old worker to exit")
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        return "empty"
    finally:
        s.close()
    if not data:
        return "empty"
    if data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n")[0] and \
            f"pid={holder}".encode() in data:
        return "served"
    return f"other: {data[:80]!r}"


def fd_targets(pid):
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    except OSError:
        pass
    return out


def ppid_of(pid):
    from harness import ppid
    return ppid(pid)


def test_redis_by_preload_with_usr2_drained_by_the_shim():
    run_recipe(recipes.redis())


def test_memcached_by_preload_with_usr2_drained_by_the_shim():
    run_recipe(recipes.memcached())


def test_udp_echo_on_a_udp_listener():
    run_recipe(recipes.udp_echo())
