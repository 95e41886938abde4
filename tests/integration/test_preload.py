# SPDX-License-Identifier: MIT
"""test_preload.py - batond --preload: servers that bind their own sockets serve batond's."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap

from harness import (Batond, Load, TestFailure, alive, broken_while, check, children_of, free_port,
                     http_get, read_all, reload_and_wait, serving_pid, socket_inodes, wait_for)

PYTHON = sys.executable
RELOADS = 20
LOAD_THREADS = 4
PORT_TRIES = 5  # a port found free can be taken before batond binds it: try another

# A server that knows nothing of batond: it binds what its arguments say (tcp:HOST:PORT,
# unix:PATH), removes a stale Unix socket file first and its own at exit, sets SO_REUSEADDR and
# SO_REUSEPORT, and drains on SIGTERM: stops accepting, shuts its listeners down and closes
# them, finishes requests in flight. GET /exit makes it drain and exit 0 on its own.
# --closerange first closes every fd above 2, as daemons do at startup. --fork=N binds, then
# forks N processes that serve; the parent never touches the listeners again and passes
# SIGTERM on. --naive: one blocking socket, accept() in a loop without waiting first, killed
# by SIGTERM.
SERVER = textwrap.dedent(r'''
    import ctypes, fcntl, os, signal, socket, socketserver, sys, threading
    from http.server import BaseHTTPRequestHandler

    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p

    servers = []
    exiting = threading.Event()

    def nonblock(fd):
        return 1 if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK else 0

    def reuseport(sock):
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)

    def body(nonblock, reuseport, port):
        # The environment as it is now: os.environ is a copy taken at startup.
        listen_fds = (libc.getenv(b"LISTEN_FDS") or b"none").decode()
        return (f"pid={os.getpid()} gen={os.environ.get('BATON_GENERATION', '0')} "
                f"port={port} nonblock={nonblock} reuseport={reuseport} "
                f"listen_fds={listen_fds}\n").encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            if self.path.startswith("/child-env?"):
                # A CGI-style child, started with the C environment as it is now (system()
                # passes environ), writes what it inherited to the file named in the query.
                libc.system(b"exec /usr/bin/env > " + self.path.split("?", 1)[1].encode())
            data = body(self.server.nonblock, self.server.reuseport, self.server.port)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if self.path == "/exit":
                exiting.set()

        def log_message(self, *args):
            pass

    class Common(socketserver.ThreadingMixIn):
        daemon_threads = False  # server_close() waits for the requests in flight
        allow_reuse_address = True
        allow_reuse_port = True

        def server_bind(self):
            super().server_bind()
            # After the swap these reach a shared listener: the shim must answer 0, change nothing.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.nonblock = nonblock(self.socket.fileno())
            self.reuseport = reuseport(self.socket) if self.address_family != socket.AF_UNIX else 0

    class TCP(Common, socketserver.TCPServer):
        pass

    class TCP6(Common, socketserver.TCPServer):
        address_family = socket.AF_INET6

    class Unix(Common, socketserver.UnixStreamServer):
        allow_reuse_port = False  # EOPNOTSUPP on AF_UNIX before bind

    def make(spec):
        kind, _, rest = spec.partition(":")
        if kind == "unix":
            try:
                os.unlink(rest)  # what servers do with a stale socket file
            except FileNotFoundError:
                pass
            s = Unix(rest, Handler)
            s.port = rest
            return s
        host, port = rest.rsplit(":", 1)
        host = host.strip("[]")
        s = (TCP6 if ":" in host else TCP)((host, int(port)), Handler)
        s.port = int(port)
        return s

    def naive(spec):
        host, port = spec[len("tcp:"):].rsplit(":", 1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(16)
        while True:
            c, _ = s.accept()
            with c:
                req = b""
                while b"\r\n\r\n" not in req:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    req += chunk
                data = body(nonblock(s.fileno()), reuseport(s), int(port))
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)

    def main():
        forks = 0
        if sys.argv[1] == "--closerange":
            os.closerange(3, 4096)
            del sys.argv[1]
        if sys.argv[1].startswith("--fork="):
            forks = int(sys.argv[1][len("--fork="):])
            del sys.argv[1]
        if sys.argv[1] == "--naive":
            naive(sys.argv[2])
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        servers.extend(make(spec) for spec in sys.argv[1:])
        if not forks:
            serve()
            return
        children = []
        for _ in range(forks):
            pid = os.fork()
            if pid == 0:
                serve()
                os._exit(0)
            children.append(pid)
        signal.sigwait({signal.SIGTERM})
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        for pid in children:
            os.waitpid(pid, 0)

    def serve():
        for s in servers:
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True).start()
        threading.Thread(target=lambda: exiting.wait() and os.kill(os.getpid(), signal.SIGTERM),
                         daemon=True).start()
        signal.sigwait({signal.SIGTERM})
        for s in servers:
            s.shutdown()
        for s in servers:
            s.socket.shutdown(socket.SHUT_RDWR)  # kills a listener for everyone sharing it
            s.server_close()
            if isinstance(s, Unix):
                os.unlink(s.port)  # and at exit: the shim must keep batond's file

    main()
''')



def start(args, command, ready=True, env=None):
    """Batond with args/command built by the given functions of a free port; returns (b, port)."""
    log = ""
    for _ in range(PORT_TRIES):
        port = free_port()
        b = Batond(args(port), command(port), env=env)
        try:
            if ready:
                b.wait_log(r"generation 1: \d+/\d+ workers ready")
            else:
                b.wait_log(r"listening on ")
            return b, port
        except TestFailure:
            b.cleanup()
            log = b.log()
            if "Address already in use" not in log:
                raise
    raise TestFailure(f"address in use {PORT_TRIES} times; last log:\n{log}")


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


def server_script(d):
    path = os.path.join(d, "server.py")
    with open(path, "w") as f:
        f.write(SERVER)
    return path



def reloads_under_load(b, target, n_workers, what, reloads=RELOADS):
    """Reloads while loadgen runs; checks that each replaced every worker and that no request
    failed; prints and returns the load's result."""
    res = _reloads(b, target, n_workers, reloads)
    print(f"  {what}, {reloads} reloads under load: {res}")
    check(res["ok"] > 0, f"no request succeeded: {res}")
    check(res["failed"] == 0, f"{res['failed']} failed requests over {reloads} reloads")
    return res


def _reloads(b, target, n_workers, reloads):
    load = Load(target, duration="300s", threads=LOAD_THREADS)
    try:
        wait_for(lambda: len(b.workers()) == n_workers, f"{n_workers} workers")
        for gen in range(2, reloads + 2):
            old = set(b.workers())
            check(len(old) == n_workers, f"before reload {gen}: workers {old}")
            check(reload_and_wait(b, gen) == "done", f"reload {gen} failed:\n{b.log()}")
            wait_for(lambda: not any(alive(p) for p in old), f"generation {gen - 1} to exit")
            new = set(b.workers())
            check(len(new) == n_workers and not (new & old),
                  f"reload {gen} did not replace the workers: old {old} new {new}")
        check(load.proc.poll() is None, "the load ended before the reloads did")
        load.proc.send_signal(signal.SIGINT)
        return load.result()
    finally:
        load.kill()



def fd_flags(pid, fd):
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        return int(re.search(r"^flags:\s*(\d+)", f.read(), re.M).group(1), 8)


def listening(pid, port=None):
    """Inodes of the TCP listeners in pid's network namespace; the one on port if given."""
    out = {}
    for name in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{name}") as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "0A":
                    out[int(cols[9])] = int(cols[1].rsplit(":", 1)[1], 16)
    if port is None:
        return set(out)
    return next(ino for ino, p in out.items() if p == port)


def backlog(port):
    """A TCP listener's backlog (ss shows it as Send-Q); None without ss."""
    if not shutil.which("ss"):
        return None
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=30).stdout.split()
    check(len(out) >= 3, f"ss found no listener on {port}")
    return int(out[2])


def body_of(spec, path="/"):
    return dict(kv.split("=", 1) for kv in http_get(spec, path).split())


def test_preload_http_server_module_reloads_twenty_times_under_load_with_zero_failed():
    """python3 -m http.server, unchanged, with --ready listening: 20 reloads, 0 failed.

    http.server has no drain of its own: it leaves SIGTERM at the default action, which would
    kill it with the requests its threads hold. The shim drains it instead (BATON_DRAIN_SIGNAL).
    """
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("hello from http.server\n")
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-n", "2", "--preload",
                                   "--ready", "listening", "--drain-timeout", "20s"],
                        lambda p: [PYTHON, "-m", "http.server", "--bind", "127.0.0.1",
                                   "--directory", d, str(p)])
        try:
            check(http_get(f"tcp://127.0.0.1:{port}") == "hello from http.server\n", "reply")
            reloads_under_load(b, f"127.0.0.1:{port}", 2, "python3 -m http.server")
            # Drained by the shim, not killed: every old worker exited 0.
            check(len(re.findall(r"worker \d+ \(pid \d+\): exited with status 0", b.log()))
                  >= 2 * RELOADS, f"old workers did not exit 0:\n{b.log()}")
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, "batond did not exit 0 after SIGTERM")
        finally:
            b.cleanup()


def test_preload_children_of_the_server_inherit_neither_the_shim_nor_batonds_variables():
    """A CGI script the server runs is not a worker: at takeover the shim takes its own entry
    out of LD_PRELOAD (the user's other preloads stay, in their order) and every BATON_*."""
    own = "libm.so.6"  # the user's own preload: harmless, and found through the search path
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        script, env_file = server_script(d), os.path.join(d, "child.env")
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "--preload", "--ready", "listening"],
                        lambda p: [PYTHON, script, f"tcp:127.0.0.1:{p}"],
                        # A sanitized batond (make SANITIZE=1) refuses a preload ahead of
                        # its ASan runtime unless told that the order is the user's choice.
                        env={"LD_PRELOAD": own, "ASAN_OPTIONS": "verify_asan_link_order=0"})
        try:
            worker = b.workers()[0]
            with open(f"/proc/{worker}/environ", "rb") as f:
                start_env = f.read().decode().split("\0")
            preload = [e for e in start_env if e.startswith("LD_PRELOAD=")]
            check(len(preload) == 1 and "libbaton-preload.so" in preload[0] and
                  preload[0].endswith(":" + own), f"the worker started with {preload}")
            http_get(f"tcp://127.0.0.1:{port}", f"/child-env?{env_file}")
            with open(env_file) as f:
                child = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
            check(child.get("LD_PRELOAD") == own, f"the child's LD_PRELOAD: {child.get('LD_PRELOAD')}")
            left = sorted(k for k in child if k.startswith(("BATON_", "LISTEN_", "NOTIFY_")))
            check(not left, f"the child inherited {left}")
        finally:
            b.cleanup()


def test_preload_http_server_module_with_broken_arguments_keeps_the_old_generation():
    """python3 -m http.server, its arguments read from a file the test rewrites between reloads
    (its "configuration"): a bad port makes it exit 2, and another port makes it serve a socket
    batond does not hold, so --ready listening never sees it wait on batond's: both new
    generations are rolled back, the old one serves through both with 0 failed."""
    with tempfile.TemporaryDirectory() as d:
        argsfile = os.path.join(d, "args")
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("hello from http.server\n")

        def configure(*ports):
            # One line per worker (BATON_WORKER): two servers on one port of their own would
            # collide, and the second would exit instead of waiting to be timed out.
            with open(argsfile, "w") as f:
                for p in ports * 2 if len(ports) == 1 else ports:
                    f.write(f"--bind 127.0.0.1 --directory {d} {p}\n")

        def command(port):
            configure(port)
            return ["/bin/sh", "-c",
                    'exec "$0" -m http.server $(sed -n "$((BATON_WORKER + 1))p" "$1")',
                    PYTHON, argsfile]

        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-n", "2", "--preload",
                                   "--ready", "listening", "--ready-timeout", "5s",
                                   "--drain-timeout", "20s"], command)
        try:
            old = set(b.workers())
            check(len(old) == 2, f"workers: {old}")
            load = Load(f"127.0.0.1:{port}", duration="300s", threads=LOAD_THREADS)
            try:
                configure("not-a-port")
                check(reload_and_wait(b, 2) == "failed", f"bad port was kept:\n{b.log()}")
                b.wait_log(r"generation 2: all workers exited")
                check(set(b.workers()) == old, f"old workers changed: {old} -> {b.workers()}")

                others = (free_port(), free_port())
                configure(*others)
                check(reload_and_wait(b, 3) == "failed",
                      f"a server on another port was taken as ready:\n{b.log()}")
                check(re.search(r"reload to generation 3 failed: worker \d \(pid \d+\) was not "
                                r"ready in time", b.log()), f"not a ready timeout:\n{b.log()}")
                b.wait_log(r"generation 3: all workers exited")
                check(set(b.workers()) == old, f"old workers changed: {old} -> {b.workers()}")
                check(http_get(f"tcp://127.0.0.1:{port}") == "hello from http.server\n",
                      "reply from the old generation")
                # Killed, not left serving its own port.
                wait_for(lambda: not any(port_open(p) for p in others), f"{others} to close")

                configure(port)
                check(reload_and_wait(b, 4) == "done", f"the next reload failed:\n{b.log()}")
                wait_for(lambda: not any(alive(p) for p in old), "the old generation to exit")
                check(not (set(b.workers()) & old), f"not replaced: {old} -> {b.workers()}")
                load.proc.send_signal(signal.SIGINT)
                res = load.result()
            finally:
                load.kill()
            print(f"  python3 -m http.server, two refused generations under load: {res}")
            check(res["ok"] > 0 and res["failed"] == 0, f"load: {res}")
            check(http_get(f"tcp://127.0.0.1:{port}") == "hello from http.server\n", "reply")
        finally:
            b.cleanup()


def test_preload_server_with_a_drain_loses_nothing_over_twenty_reloads():
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-n", "2", "--preload",
                                   "--drain-timeout", "20s"],
                        lambda p: [PYTHON, script, f"tcp:127.0.0.1:{p}"])
        try:
            res = reloads_under_load(b, f"127.0.0.1:{port}", 2, "drain-capable server")
            check(res["pids"] > 2, f"replies came from only {res['pids']} pids")
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, "batond did not exit 0 after SIGTERM")
        finally:
            b.cleanup()


def test_preload_wrapped_server_that_fails_to_start_is_rolled_back_with_zero_failed():
    # The worker command is a shell that execs the server: the held fds must survive it.
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        flag = os.path.join(d, "broken")
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-n", "2", "--preload"],
                        lambda p: broken_while(flag, "exit 1",
                                               [PYTHON, script, f"tcp:127.0.0.1:{p}"]))
        try:
            old = set(b.workers())
            load = Load(f"127.0.0.1:{port}", duration="300s", threads=LOAD_THREADS)
            try:
                open(flag, "w").close()
                check(reload_and_wait(b, 2) == "failed", "a broken generation was kept")
                b.wait_log(r"generation 2: all workers exited")
                check(set(b.workers()) == old, f"old workers changed: {old} -> {b.workers()}")
                check(serving_pid(f"tcp://127.0.0.1:{port}") in old, "a reply from a stranger")
                os.unlink(flag)
                check(reload_and_wait(b, 3) == "done", "the next reload failed")
                load.proc.send_signal(signal.SIGINT)
                res = load.result()
            finally:
                load.kill()
            check(res["ok"] > 0 and res["failed"] == 0, f"load: {res}")
        finally:
            b.cleanup()


def test_preload_unix_path_server_serves_batonds_socket_and_keeps_its_file():
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        sock = os.path.join(d, "api.sock")
        b, port = start(lambda p: ["-l", f"unix:{sock}", "-l", f"127.0.0.1:{p}", "--preload"],
                        lambda p: [PYTHON, script, f"unix:{sock}", f"tcp:127.0.0.1:{p}"])
        try:
            held = os.stat(sock).st_ino
            w = b.workers()
            check(len(w) == 1, f"workers {w}")
            got = body_of(f"unix:{sock}")
            check(int(got["pid"]) == w[0] and got["port"] == sock, f"reply {got}")
            check(os.stat(sock).st_ino == held, "the server replaced batond's socket file")
            # The server unlinks its socket file at exit too: a reload must keep it.
            check(reload_and_wait(b, 2) == "done", f"reload failed:\n{b.log()}")
            wait_for(lambda: not alive(w[0]), "generation 1 to exit")
            check(os.stat(sock).st_ino == held, "the socket file did not survive a reload")
            got = body_of(f"unix:{sock}")
            check(int(got["pid"]) in b.workers() and got["gen"] == "2", f"reply {got}")
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, "batond did not exit 0 after SIGTERM")
            check(not os.path.exists(sock), "the socket file outlived batond")
        finally:
            b.cleanup()


def test_preload_leaves_sockets_batond_does_not_hold_alone():
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        other = free_port()
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "--preload"],
                        lambda p: [PYTHON, script, f"tcp:127.0.0.1:{p}", f"tcp:127.0.0.1:{other}"])
        try:
            w = b.workers()[0]
            for p in (port, other):
                got = body_of(f"tcp://127.0.0.1:{p}")
                check(int(got["pid"]) == w and int(got["port"]) == p, f"port {p}: {got}")
            mine = set(socket_inodes(b.pid).values())
            theirs = {fd: ino for fd, ino in socket_inodes(w).items() if ino in listening(w)}
            held = sorted(fd for fd, ino in theirs.items() if ino in mine)
            own = [ino for ino in theirs.values() if ino not in mine]
            # The held listener appears twice: the server's fd and the shim's reference.
            check(len(held) == 2 and held[0] < 1000 <= held[1], f"held fds {held} of {theirs}")
            check(own == [listening(w, other)], f"port {other} is not the server's own socket")
            # SO_REUSEPORT reached the server's own socket only.
            check(body_of(f"tcp://127.0.0.1:{port}")["reuseport"] == "0", "SO_REUSEPORT shared")
            check(body_of(f"tcp://127.0.0.1:{other}")["reuseport"] == "1", "SO_REUSEPORT lost")
            # listen(5) reached the server's own socket only; batond's keeps its backlog.
            with open("/proc/sys/net/core/somaxconn") as f:
                somaxconn = int(f.read())
            check(backlog(port) in (None, min(4096, somaxconn)), f"backlog {backlog(port)}")
            check(backlog(other) in (None, 5), f"backlog of the server's own {backlog(other)}")
            # Once it bound, socket activation is hidden from the server and its children.
            got = body_of(f"tcp://127.0.0.1:{port}")
            check(got["listen_fds"] == "none", f"LISTEN_FDS still set: {got}")
        finally:
            b.cleanup()


def test_preload_server_closing_its_listener_leaves_batonds_open():
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "--preload"],
                        lambda p: [PYTHON, script, f"tcp:127.0.0.1:{p}"])
        try:
            spec = f"tcp://127.0.0.1:{port}"
            first = b.workers()[0]
            before = socket_inodes(b.pid)
            # /exit: the server closes its listener, finishes, and exits 0; batond respawns it.
            check(int(body_of(spec, "/exit")["pid"]) == first, "reply from a stranger")
            wait_for(lambda: not alive(first), "the worker to exit")
            # Whether or not the new worker runs yet, batond's listener takes the connection.
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            c.close()
            m = re.search(rb"pid=(\d+)", data)
            check(m and int(m.group(1)) != first, f"reply {data!r}")
            check(socket_inodes(b.pid) == before, "batond's listeners changed")
            b.wait_log(r"generation 1 worker 0 \(pid \d+\): respawned and ready")
        finally:
            b.cleanup()


def test_preload_blocking_accept_server_blocks_while_the_shared_listener_stays_nonblocking():
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-n", "2", "--preload"],
                        lambda p: [PYTHON, script, "--naive", f"tcp:127.0.0.1:{p}"])
        try:
            spec = f"tcp://127.0.0.1:{port}"
            workers = set(b.workers())
            seen = set()
            for _ in range(50):
                got = body_of(spec)
                check(got["nonblock"] == "0", f"the server's socket is not blocking: {got}")
                seen.add(int(got["pid"]))
            check(seen <= workers and seen, f"replies from {seen}, workers {workers}")
            listener = next(fd for fd, ino in socket_inodes(b.pid).items() if fd >= 3)
            check(fd_flags(b.pid, listener) & os.O_NONBLOCK, "batond's listener became blocking")
            # Blocked in accept(), the old workers are drained by the shim; the new ones take over.
            check(reload_and_wait(b, 2) == "done", f"reload failed:\n{b.log()}")
            wait_for(lambda: not (set(b.workers()) & workers), "generation 1 to exit")
            check(int(body_of(spec)["pid"]) in b.workers(), "generation 2 does not serve")
        finally:
            b.cleanup()


def test_preload_wildcard_bind_gets_the_held_address_on_its_port():
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-l", f"[::1]:{p}", "--preload"],
                        lambda p: [PYTHON, script, f"tcp:0.0.0.0:{p}", f"tcp:[::]:{p}"])
        try:
            w = b.workers()[0]
            for spec in (f"tcp://127.0.0.1:{port}", f"tcp://[::1]:{port}"):
                check(serving_pid(spec) == w, f"{spec} not served by the worker")
            mine = set(socket_inodes(b.pid).values())
            own = [ino for ino in socket_inodes(w).values() if ino in listening(w) - mine]
            check(not own, f"the server listens on sockets of its own: {own}")
        finally:
            b.cleanup()


def test_without_preload_a_server_that_binds_finds_the_address_in_use():
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}"],
                        lambda p: [PYTHON, script, f"tcp:127.0.0.1:{p}"], ready=False)
        try:
            check(b.wait_exit() == 1, "batond did not fail the first generation")
            check("Address already in use" in b.log(), f"log:\n{b.log()}")
        finally:
            b.cleanup()


def test_preload_event_driven_server_that_loses_an_accept_race_still_drains_at_once():
    # Both workers poll the listener; each connection wakes both and one finds nothing to
    # accept. Blocking it in accept() would keep it from its loop until the drain deadline.
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-n", "2", "--preload",
                                   "--drain-timeout", "30s"],
                        lambda p: [PYTHON, script, f"tcp:127.0.0.1:{p}"])
        try:
            for _ in range(20):
                body_of(f"tcp://127.0.0.1:{port}")
            mark = b.mark()
            b.signal(signal.SIGTERM)
            check(b.wait_exit(timeout=10) == 0, "batond exit status")
            wait_for(lambda: b.count(r"exited with status 0") >= 2, "two clean exits in the log")
            check(not any("KILL" in line for line in b.lines[mark:]), f"log:\n{b.log()}")
        finally:
            b.cleanup()


def test_preload_server_that_closes_every_inherited_fd_still_gets_the_listener():
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "--preload"],
                        lambda p: [PYTHON, script, "--closerange", f"tcp:127.0.0.1:{p}"])
        try:
            w = b.workers()[0]
            check(int(body_of(f"tcp://127.0.0.1:{port}")["pid"]) == w, "reply from a stranger")
        finally:
            b.cleanup()


def test_preload_server_that_forks_its_workers_after_binding_is_ready_and_reloads():
    # The parent binds and never waits on the listener: READY=1 comes from a child.
    with tempfile.TemporaryDirectory() as d:
        script = server_script(d)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "--preload", "--ready-timeout", "20s"],
                        lambda p: [PYTHON, script, "--fork=3", f"tcp:127.0.0.1:{p}"])
        try:
            parent = b.workers()[0]
            kids = set(wait_for(lambda: (lambda c: c if len(c) == 3 else None)(
                children_of(parent)), "3 children"))
            seen = {int(body_of(f"tcp://127.0.0.1:{port}")["pid"]) for _ in range(30)}
            check(seen and seen <= kids, f"replies from {seen}, children {kids}")
            reloads_under_load(b, f"127.0.0.1:{port}", 1, "pre-forking server", reloads=5)
            check(not (set(children_of(b.pid)) & kids), "a child of generation 1 outlived it")
        finally:
            b.cleanup()


# An asyncio server (epoll) with no drain of its own, whose every reply waits DELAY first: a
# drain signal always finds requests in flight. Binds host:port from argv.
ASYNC_SERVER = textwrap.dedent(r'''
    import asyncio, os, sys

    DELAY = 0.2

    async def handle(reader, writer):
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        await asyncio.sleep(DELAY)
        body = f"pid={os.getpid()}\n".encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]))
        async with server:
            await server.serve_forever()

    asyncio.run(main())
''')


def test_preload_drains_an_epoll_server_that_has_no_drain_with_requests_in_flight():
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "async_server.py")
        with open(script, "w") as f:
            f.write(ASYNC_SERVER)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-n", "2", "--preload",
                                   "--ready", "listening", "--drain-timeout", "20s"],
                        lambda p: [PYTHON, script, "127.0.0.1", str(p)])
        try:
            res = reloads_under_load(b, f"127.0.0.1:{port}", 2, "asyncio server", reloads=10)
            check(res["pids"] > 2, f"replies came from only {res['pids']} pids")
            check(b.count(r"worker \d+ \(pid \d+\): exited with status 0") >= 2 * 10,
                  f"old workers were not drained:\n{b.log()}")
        finally:
            b.cleanup()


# Serves one request (the shim arms its drain at that first wait), then sets SIGTERM back to
# the default action through libc's signal() and serves on, saying what signal() returned.
OWN_SIGNAL_SERVER = textwrap.dedent(r'''
    import ctypes, os, signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    previous = None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            data = f"pid={os.getpid()} previous={previous}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.handle_request()
    previous = libc.signal(signal.SIGTERM, 0) or 0
    server.serve_forever()
''')


def test_preload_server_that_sets_the_drain_signal_itself_keeps_its_choice():
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "own_signal.py")
        with open(script, "w") as f:
            f.write(OWN_SIGNAL_SERVER)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "--preload"],
                        lambda p: [PYTHON, script, str(p)])
        try:
            spec = f"tcp://127.0.0.1:{port}"
            body_of(spec)  # the first request, before signal()
            got = body_of(spec)
            # What signal() replaced reads as the default action, not the shim's handler.
            check(got["previous"] == "0", f"signal() returned the shim's handler: {got}")
            check(reload_and_wait(b, 2) == "done", f"reload failed:\n{b.log()}")
            b.wait_log(rf"worker 0 \(pid {got['pid']}\): exited with signal TERM")
        finally:
            b.cleanup()


# Takes its listener from LISTEN_FDS itself (fd 3, never bound) and has no drain; each reply
# waits DELAY, so the drain signal always finds requests in flight.
LISTEN_FDS_SERVER = textwrap.dedent(r'''
    import os, socket, socketserver, time
    from http.server import BaseHTTPRequestHandler

    DELAY = 0.1

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(DELAY)
            data = f"pid={os.getpid()}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    assert os.environ["LISTEN_FDS"] == "1" and int(os.environ["LISTEN_PID"]) == os.getpid()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler,
                                             bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=3)
    server.serve_forever(poll_interval=0.05)
''')


def test_preload_drains_a_server_that_took_listen_fds_itself_with_zero_failed():
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "listen_fds_server.py")
        with open(script, "w") as f:
            f.write(LISTEN_FDS_SERVER)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "-n", "2", "--preload",
                                   "--drain-timeout", "20s"],
                        lambda p: [PYTHON, script])
        try:
            reloads_under_load(b, f"127.0.0.1:{port}", 2, "LISTEN_FDS server without a drain",
                               reloads=5)
            check(b.count(r"worker \d+ \(pid \d+\): exited with status 0") >= 2 * 5,
                  f"old workers were not drained:\n{b.log()}")
        finally:
            b.cleanup()


def holds_connection(pid, port, client_port):
    """Whether pid has the server end of the IPv4 connection from client_port to port."""
    inodes = set(socket_inodes(pid).values())
    with open(f"/proc/{pid}/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if (int(cols[1].rsplit(":", 1)[1], 16) == port and
                    int(cols[2].rsplit(":", 1)[1], 16) == client_port and int(cols[9]) in inodes):
                return True
    return False


def drain_takes_nothing_new_and_finishes_what_it_holds(script_text, args):
    """One worker holds a connection whose request is half sent; a reload drains it. While it
    drains it must accept nothing new, then answer the held request and exit 0."""
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "server.py")
        with open(script, "w") as f:
            f.write(script_text)
        b, port = start(lambda p: ["-l", f"127.0.0.1:{p}", "--preload", "--ready", "listening",
                                   "--drain-timeout", "60s"],
                        lambda p: [PYTHON, script, *args(p)])
        held = None
        try:
            spec = f"tcp://127.0.0.1:{port}"
            old = b.workers()[0]
            check(int(body_of(spec)["pid"]) == old, "reply from a stranger")
            held = socket.create_connection(("127.0.0.1", port), timeout=30)
            held.sendall(b"GET / HTTP/1.0\r\n")
            wait_for(lambda: holds_connection(old, port, held.getsockname()[1]),
                     "the worker to accept")
            check(reload_and_wait(b, 2) == "done", f"reload failed:\n{b.log()}")
            b.wait_log(r"generation 1: draining 1 worker")
            new = set(b.workers()) - {old}
            seen = {int(body_of(spec)["pid"]) for _ in range(20)}
            check(seen == new, f"replies from {seen} while {old} drained; new {new}")
            check(alive(old), "the draining worker left before its held request was answered")
            held.sendall(b"\r\n")
            reply = read_all(held)
            check(reply.startswith(b"HTTP/1.") and f"pid={old}".encode() in reply,
                  f"held request: {reply!r}")
            b.wait_log(rf"worker 0 \(pid {old}\): exited with status 0")
        finally:
            if held:
                held.close()
            b.cleanup()


def test_preload_drain_of_an_epoll_server_takes_nothing_new_and_answers_what_it_holds():
    drain_takes_nothing_new_and_finishes_what_it_holds(ASYNC_SERVER, lambda p: ["127.0.0.1", str(p)])


def test_preload_drain_of_a_listen_fds_server_takes_nothing_new_and_answers_what_it_holds():
    drain_takes_nothing_new_and_finishes_what_it_holds(LISTEN_FDS_SERVER, lambda p: [])
