# SPDX-License-Identifier: MIT
"""test_servers.py - real servers from Debian packages behind batond (issue #6): lighttpd and
gunicorn by LISTEN_FDS, nginx by its NGINX variable and by the preload shim; caddy (Go) and a
static C server by seccomp interception (issue #14).

Each server: 20 reloads under load with 0 failed requests, every reload replacing the whole
process tree of the old generation; and a new configuration the server refuses to start with
leaves the old generation serving, with 0 failed. A missing package fails the test: CI installs
them with scripts/install-deps.
"""
import contextlib
import os
import re
import signal
import tempfile

from harness import Load, alive, bin_path, check, reload_and_wait, socket_inodes, wait_for
from servers_lib import (GUNICORN_WORKERS, NGINX_WORKERS, caddy_command, caddy_config,
                         caddy_env, gunicorn_command, gunicorn_config, holder_of_connection,
                         kill_all, lighttpd_command, lighttpd_config, nginx_command,
                         nginx_config, ready_without_notify, start, static_command,
                         static_config, tree, wait_tree)

RELOADS = 20
LOAD_THREADS = 4
PRELOAD_LIB = bin_path("libbaton-preload.so")


class Server:
    """How one server runs under batond."""

    def __init__(self, name, config, command, args, n_procs, drain, pid_body, env=None):
        self.name = name
        self.env = env  # (d) -> extra environment for batond and the server, or None
        self.config = config  # (d, port, broken=False) -> path
        self.command = command  # (d) -> argv
        self.args = args  # batond options besides -l and -c
        self.n_procs = n_procs  # processes per generation
        self.drain = drain  # signal name batond must send to drain a generation
        self.pid_body = pid_body  # the reply says pid=<the process that served it>


def lighttpd():
    return Server("lighttpd", lighttpd_config, lighttpd_command,
                  ["--pass", "env", "--ready", ready_without_notify(), "--drain-signal", "INT"],
                  1, "INT", False)


def gunicorn():
    return Server("gunicorn", gunicorn_config, gunicorn_command,
                  ["--pass", "env", "--ready", "notify", "--drain-signal", "TERM"],
                  1 + GUNICORN_WORKERS, "TERM", True)


def nginx_by_variable():
    # QUIT is batond's default drain signal with --pass nginx; the test checks it was sent.
    return Server("nginx (NGINX)", nginx_config, nginx_command,
                  ["--pass", "nginx", "--ready", ready_without_notify()],
                  1 + NGINX_WORKERS, "QUIT", True)


def nginx_by_preload():
    # No NGINX variable: nginx binds its listen address and the shim swaps in batond's
    # listener; the shim reports READY=1 when a worker first waits on it (epoll_ctl).
    return Server("nginx (preload)", nginx_config, nginx_command,
                  ["--preload", "--ready", "notify", "--drain-signal", "QUIT"],
                  1 + NGINX_WORKERS, "QUIT", True)


def caddy():
    # Go: raw system calls, so no shim; caddy sends READY=1 itself (--ready notify).
    return Server("caddy", caddy_config, caddy_command,
                  ["--intercept", "--ready", "notify", "--drain-signal", "TERM"],
                  1, "TERM", False, env=caddy_env)


def static_server():
    # Static: no PT_INTERP, so no preload; it sends nothing, it waits in accept().
    return Server("static-server", static_config, static_command,
                  ["--intercept", "--ready", "listening", "--drain-signal", "TERM"],
                  1, "TERM", True)


def check_preload_built():
    # The shim is one of `make programs`: without it the build is broken, not the test.
    check(os.path.exists(PRELOAD_LIB), f"{PRELOAD_LIB} is missing: make programs builds it")


def listeners_on(port):
    """Inodes of the TCP sockets listening on 127.0.0.1:port."""
    out = set()
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if cols[1] == f"0100007F:{port:04X}" and cols[3] == "0A":
                out.add(int(cols[9]))
    return out


def check_serves_batonds_listener(b, port, pids):
    """One socket listens on the port, batond's, and the generation's processes hold it."""
    held = listeners_on(port)
    check(len(held) == 1, f"{len(held)} sockets listen on port {port}, expected batond's alone")
    check(held <= set(socket_inodes(b.pid).values()), "the listening socket is not batond's")
    check(any(held <= set(socket_inodes(p).values()) for p in pids if alive(p)),
          f"no process of {sorted(pids)} holds batond's listener")


def check_serves(s, b, port, pids):
    """A new connection is accepted by one of pids; with a pid body, that pid answered."""
    holder, body = holder_of_connection(port, pids)
    if s.pid_body:
        m = re.search(r"\bpid=(\d+)", body)
        check(m and int(m.group(1)) == holder,
              f"{s.name}: pid {holder} holds the connection but {body!r} replied")
    return holder


def print_log(b):
    """On a failure: what batond (and the servers, on the same stderr) said last."""
    print(f"  batond pid {b.pid} {'alive' if alive(b.pid) else 'gone'}, "
          f"exit status {b.proc.poll()}; its log, last 60 lines:", flush=True)
    for line in b.log().splitlines()[-60:]:
        print(f"    {line}", flush=True)


def stop_and_check_nothing_left(b):
    last = tree(b)
    b.signal(signal.SIGTERM)
    check(b.wait_exit() == 0, f"batond did not exit 0 after SIGTERM:\n{b.log()}")
    wait_for(lambda: not any(alive(p) for p in last), "every server process to exit")


@contextlib.contextmanager
def running(s, d):
    """Starts batond with the server s in d and yields (b, port); then stops it and checks that
    nothing is left. On any failure, prints batond's log; every process goes in the end."""
    b, port = start(d, s.config, s.args, s.command(d), s.n_procs,
                    extra_env=s.env(d) if s.env else None)
    try:
        yield b, port
        stop_and_check_nothing_left(b)
    except BaseException:
        print_log(b)
        raise
    finally:
        kill_all(b)


def start_load(port):
    return Load(f"127.0.0.1:{port}", duration="600s", threads=LOAD_THREADS)


def reloads_phase(s, b, port):
    """RELOADS reloads under load: each replaces every process, 0 requests fail, and each old
    generation gets the drain signal and exits 0. Returns the next generation number."""
    check_serves_batonds_listener(b, port, tree(b))
    check_serves(s, b, port, tree(b))
    mark = b.mark()
    load = start_load(port)
    try:
        for gen in range(2, RELOADS + 2):
            old = wait_tree(b, s.n_procs)
            check(reload_and_wait(b, gen) == "done",
                  f"{s.name}: reload {gen} failed:\n{b.log()}")
            wait_for(lambda: not any(alive(p) for p in old),
                     f"every process of generation {gen - 1} to exit")
            new = wait_tree(b, s.n_procs)
            check(not (new & old), f"reload {gen} kept processes: {sorted(new & old)}")
            check_serves(s, b, port, new)
        check(load.running(), "the load ended before the reloads did")
        check_serves_batonds_listener(b, port, tree(b))
        res = load.finish()
    finally:
        load.kill()
    print(f"  {s.name} ({' '.join(s.args)}), {RELOADS} reloads under load: {res}",
          flush=True)
    check(res["ok"] > 0, f"no request succeeded: {res}")
    check(res["failed"] == 0, f"{res['failed']} failed requests over {RELOADS} reloads")
    if s.pid_body:
        check(res["pids"] > s.n_procs, f"replies came from only {res['pids']} pids")
    sent_rx = rf"sent SIG{s.drain} to worker pid"
    clean_rx = r"generation \d+ worker \d+ \(pid \d+\): exited with status 0"
    # The last lines may still be on their way to the reader: wait for the counts.
    wait_for(lambda: b.count_since(mark, sent_rx) >= RELOADS,
             f"SIG{s.drain} sent for every reload")
    wait_for(lambda: b.count_since(mark, clean_rx) >= RELOADS, "every old generation exiting 0")
    sent = b.count_since(mark, sent_rx)
    check(sent == RELOADS, f"SIG{s.drain} sent {sent} times for {RELOADS} reloads")
    clean = b.count_since(mark, clean_rx)
    check(clean == RELOADS, f"{clean} of {RELOADS} old generations drained and exited 0")
    return RELOADS + 2


def broken_phase(s, b, port, d, breakers, gen):
    """breakers: (what, write) pairs; each write(d, port) leaves a configuration the server
    refuses to start with. Each reload to it must fail, the old generation serving on; then the
    repaired configuration reloads. 0 requests fail throughout."""
    old = tree(b)
    load = start_load(port)
    try:
        for what, write in breakers:
            write(d, port)
            check(reload_and_wait(b, gen) == "failed",
                  f"{s.name}: a reload with {what} was kept:\n{b.log()}")
            m, _ = b.wait_log(rf"reload to generation {gen} failed: (.*)")
            check(re.search(r"exited with status [1-9]\d* before it was ready",
                            m.group(1)), f"unclear reason: {m.group(0)}")
            wait_for(lambda: tree(b) == old, f"only the serving generation to be left after "
                     f"{what} (have {sorted(tree(b))}, had {sorted(old)})")
            check_serves(s, b, port, old)
            gen += 1
        s.config(d, port)
        check(reload_and_wait(b, gen) == "done", f"the repaired reload failed:\n{b.log()}")
        wait_for(lambda: not any(alive(p) for p in old), "the old generation to exit")
        new = wait_tree(b, s.n_procs)
        check(not (new & old), f"processes kept: {sorted(new & old)}")
        check_serves(s, b, port, new)
        res = load.finish()
    finally:
        load.kill()
    print(f"  {s.name} ({' '.join(s.args)}), broken then repaired configuration under "
          f"load: {res}", flush=True)
    check(res["ok"] > 0, f"no request succeeded: {res}")
    check(res["failed"] == 0, f"{res['failed']} failed requests: {res}")


def twenty_reloads_under_load(s):
    with tempfile.TemporaryDirectory() as d, running(s, d) as (b, port):
        reloads_phase(s, b, port)


def broken_configuration_keeps_old_generation(s, breakers):
    with tempfile.TemporaryDirectory() as d, running(s, d) as (b, port):
        broken_phase(s, b, port, d, breakers, 2)


def recipe(s, breakers):
    """A server's recipe in docs/WRAPPING.md, on one batond: RELOADS reloads under load, then
    each broken configuration rolled back under load, 0 failed throughout."""
    with tempfile.TemporaryDirectory() as d, running(s, d) as (b, port):
        gen = reloads_phase(s, b, port)
        broken_phase(s, b, port, d, breakers, gen)


def test_lighttpd_socket_activation_twenty_reloads_under_load():
    twenty_reloads_under_load(lighttpd())


def test_lighttpd_with_a_broken_configuration_keeps_the_old_generation():
    broken_configuration_keeps_old_generation(lighttpd(), [
        ("a syntax error", lambda d, p: lighttpd_config(d, p, broken=True))])


def test_gunicorn_twenty_reloads_under_load():
    twenty_reloads_under_load(gunicorn())


def test_gunicorn_with_a_broken_configuration_or_app_keeps_the_old_generation():
    broken_configuration_keeps_old_generation(gunicorn(), [
        ("a syntax error in gunicorn.conf.py", lambda d, p: gunicorn_config(d, p, broken=True)),
        ("a syntax error in the application",
         lambda d, p: gunicorn_config(d, p, broken_app=True))])


def test_gunicorn_without_preload_app_is_checked_by_listening_readiness():
    # Without preload_app the workers import the application after the arbiter's READY=1, so
    # notify readiness would pass a generation whose workers cannot boot (and drain the good
    # one); --ready listening waits for a worker that waits on the listener.
    s = gunicorn()
    s.config = lambda d, p, **kw: gunicorn_config(d, p, preload_app=False, **kw)
    s.args[s.args.index("--ready") + 1] = "listening"
    broken_configuration_keeps_old_generation(s, [
        ("a syntax error in the application",
         lambda d, p: s.config(d, p, broken_app=True))])


def test_nginx_by_nginx_variable_twenty_reloads_under_load():
    twenty_reloads_under_load(nginx_by_variable())


def test_nginx_by_nginx_variable_with_a_broken_configuration_keeps_the_old_generation():
    broken_configuration_keeps_old_generation(nginx_by_variable(), [
        ("a syntax error", lambda d, p: nginx_config(d, p, broken=True))])


def test_nginx_by_preload_shim_twenty_reloads_under_load():
    check_preload_built()
    twenty_reloads_under_load(nginx_by_preload())


def test_nginx_by_preload_shim_with_a_broken_configuration_keeps_the_old_generation():
    check_preload_built()
    broken_configuration_keeps_old_generation(nginx_by_preload(), [
        ("a syntax error", lambda d, p: nginx_config(d, p, broken=True))])


def test_caddy_recipe_by_seccomp_interception():
    recipe(caddy(), [("an unknown directive", lambda d, p: caddy_config(d, p, broken=True))])


def test_static_server_recipe_by_seccomp_interception():
    recipe(static_server(), [("no address", lambda d, p: static_config(d, p, broken=True))])

