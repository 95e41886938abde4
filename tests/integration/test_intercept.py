# SPDX-License-Identifier: MIT
"""test_intercept.py - batond --intercept (seccomp user notification) with a static server:
what a worker holds, an address batond does not hold, an unprivileged batond, and what
--preload says about a static worker. The 20-reload runs of caddy and of the same static
server are in test_servers.py."""
import os
import re
import socket
import subprocess
import tempfile

from harness import (Batond, Load, alive, bin_path, check, free_port, http_get,
                     reload_and_wait, socket_inodes, wait_for)
from servers_lib import (caddy_command, caddy_config, caddy_env, kill_all, static_command,
                         static_config)

NOBODY = 65534
RELOADS_UNIX = 5


def worker_of(b, gen):
    m, _ = b.wait_log(rf"generation {gen} worker 0: started pid (\d+)")
    return int(m.group(1))


def status_field(pid, name):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(rf"^{name}:\s*(\S+)", f.read(), re.M)
    return m.group(1) if m else None


def check_holds_only_the_listener(b, pid):
    """fds 0-2 and one socket, batond's listener, at the number the server bound it on."""
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    check(fds == [0, 1, 2, 3], f"worker pid {pid} holds fds {fds}, expected 0-3")
    held = set(socket_inodes(b.pid).values())
    check(socket_inodes(pid).get(3) in held,
          f"worker pid {pid}'s fd 3 is not batond's listener")


def serve_and_reload(b, spec, reloads):
    first = worker_of(b, 1)
    b.wait_log(r"generation 1: 1/1 workers ready")
    check(f"pid={first}" in http_get(spec), "no answer from generation 1")
    check_holds_only_the_listener(b, first)
    for gen in range(2, reloads + 2):
        old = worker_of(b, gen - 1)
        check(reload_and_wait(b, gen) == "done", f"reload {gen} failed:\n{b.log()}")
        wait_for(lambda: not alive(old), f"generation {gen - 1} (pid {old}) to exit")
        body = http_get(spec)
        check(f"pid={worker_of(b, gen)}" in body, f"generation {gen} did not answer: {body!r}")
    return first


def test_intercept_hands_a_static_server_the_listener_at_its_own_fd_number():
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        static_config(d, port)
        b = Batond(["-l", f"127.0.0.1:{port}", "--intercept", "--ready", "listening",
                    "--no-control", "-v"], static_command(d))
        try:
            pid = serve_and_reload(b, f"127.0.0.1:{port}", 2)
            b.wait_log(rf"generation 1 worker 0 \(pid {pid}\): bind tcp://127\.0\.0\.1:{port} "
                       r"on fd 3: listener listen0 put in place")
            # As root (CAP_SYS_ADMIN) the filter needs no no_new_privs: nothing else changed.
            check(status_field(worker_of(b, 3), "NoNewPrivs") == "0",
                  "a root worker was given no_new_privs")
            check(status_field(worker_of(b, 3), "Seccomp") == "2", "the worker has no filter")
            # Its shutdown() at the drain was answered without touching the shared socket.
            b.wait_log(rf"generation 1 worker 0 \(pid {pid}\): shutdown on listener listen0")
        finally:
            kill_all(b)


def test_intercept_runs_under_an_unprivileged_batond_with_no_new_privs():
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        port = free_port()
        static_config(d, port)
        os.chmod(os.path.join(d, "static.conf"), 0o644)

        def as_nobody():
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

        b = Batond(["-l", f"127.0.0.1:{port}", "--intercept", "--ready", "listening",
                    "--no-control", "-v"], static_command(d), preexec_fn=as_nobody,
                   env={"TMPDIR": "/tmp"})
        try:
            serve_and_reload(b, f"127.0.0.1:{port}", 2)
            pid = worker_of(b, 3)
            check(os.stat(f"/proc/{pid}").st_uid == NOBODY, "the worker is not uid 65534")
            # Without CAP_SYS_ADMIN the kernel wants no_new_privs before a filter.
            check(status_field(pid, "NoNewPrivs") == "1", "no no_new_privs as uid 65534")
        finally:
            kill_all(b)


def test_a_server_binding_an_address_batond_does_not_hold_fails_clearly_and_does_not_hang():
    with tempfile.TemporaryDirectory() as d:
        # In use by someone else: the server's own bind fails, and it exits at once.
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        other = taken.getsockname()[1]
        static_config(d, other)
        b = Batond(["-l", "127.0.0.1:0", "--intercept", "--ready", "listening",
                    "--no-control"], static_command(d))
        try:
            b.wait_log(rf"generation 1 worker 0 \(pid \d+\): binds tcp://127\.0\.0\.1:{other} "
                       r"itself: batond holds no such listener")
            b.wait_log(r"generation 1 failed to start: worker 0 \(pid \d+\) exited with "
                       r"status 1 before it was ready")
            check(b.wait_exit() == 1, f"batond did not exit 1:\n{b.log()}")
            check("Address already in use" in b.log(), f"the server's reason is missing:\n"
                  f"{b.log()}")
        finally:
            taken.close()
            kill_all(b)
        # Free: the server binds it for itself and serves there, never on batond's listener,
        # so it is never ready: the ready timeout ends it.
        static_config(d, free_port())
        b = Batond(["-l", "127.0.0.1:0", "--intercept", "--ready", "listening",
                    "--ready-timeout", "2s", "--no-control"], static_command(d))
        try:
            b.wait_log(r"binds tcp://127\.0\.0\.1:\d+ itself: batond holds no such listener")
            b.wait_log(r"generation 1 failed to start: worker 0 \(pid \d+\) was not ready "
                       r"in time")
            check(b.wait_exit() == 1, f"batond did not exit 1:\n{b.log()}")
        finally:
            kill_all(b)


def test_preload_says_at_spawn_that_a_static_or_go_worker_is_out_of_its_reach():
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        static_config(d, port)
        b = Batond(["-l", f"127.0.0.1:{port}", "--preload", "--ready", "listening",
                    "--no-control"], static_command(d))
        try:
            b.wait_log(r"generation 1: \S+/static-server is statically linked \(no "
                       r"PT_INTERP\): the preload shim cannot load into it.*--intercept")
            # Exactly what it said: the server's own bind finds batond's address taken.
            b.wait_log(r"generation 1 failed to start")
            check("Address already in use" in b.log(), f"unexpected failure:\n{b.log()}")
            check(b.wait_exit() == 1, "batond did not exit 1")
        finally:
            kill_all(b)
        # caddy (Go): dynamically linked, but its system calls never reach the shim.
        caddy_config(d, port)
        b = Batond(["-l", f"127.0.0.1:{port}", "--preload", "--ready-timeout", "1s",
                    "--no-control"], caddy_command(d), env=caddy_env(d))
        try:
            b.wait_log(r"generation 1: \S+/caddy is a Go program: it makes its system calls "
                       r"itself, so the preload shim never sees its bind\(\).*--intercept")
            check(b.wait_exit() == 1, "batond did not exit 1")
        finally:
            kill_all(b)


def test_intercept_refuses_to_be_combined_with_another_hand_off():
    for extra in (["--preload"], ["--pass", "env"]):
        r = subprocess.run([bin_path("batond"), "-l", "127.0.0.1:0", "--intercept", *extra,
                            "--no-control", "--", "/bin/true"], capture_output=True, text=True,
                           timeout=30)
        check(r.returncode == 2, f"--intercept {' '.join(extra)}: exit {r.returncode}")
        check("--intercept" in r.stderr, f"no word about --intercept: {r.stderr!r}")


def test_intercept_keeps_the_socket_file_a_server_removes_before_bind_and_at_exit():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "app.sock")
        with open(os.path.join(d, "static.conf"), "w") as f:
            f.write(f"unix {path}\n")
        b = Batond(["-l", f"unix:{path}", "--intercept", "--ready", "listening",
                    "--no-control", "-v"], static_command(d))
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            ino = os.stat(path).st_ino
            load = Load(f"unix:{path}", duration="600s", threads=2)
            try:
                for gen in range(2, RELOADS_UNIX + 2):
                    old = worker_of(b, gen - 1)
                    check(reload_and_wait(b, gen) == "done", f"reload {gen} failed:\n{b.log()}")
                    wait_for(lambda: not alive(old), f"generation {gen - 1} to exit")
                check(load.running(), "the load ended before the reloads did")
                res = load.finish()
            finally:
                load.kill()
            print(f"  static-server on unix:{path}, {RELOADS_UNIX} reloads under load: {res}",
                  flush=True)
            check(res["ok"] > 0 and res["failed"] == 0, f"failed requests: {res}")
            # Each generation removed the file before its bind and at its exit: it stayed.
            check(os.stat(path).st_ino == ino, "the socket file was replaced")
            check(b.count(r"unlink of listener listen0's socket file answered 0") >=
                  2 * RELOADS_UNIX, "the server's unlinks were not all answered")
            check(f"pid={worker_of(b, RELOADS_UNIX + 1)}" in http_get(f"unix:{path}"),
                  "the last generation does not answer through the file")
        finally:
            kill_all(b)
