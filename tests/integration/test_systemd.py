# SPDX-License-Identifier: MIT
"""test_systemd.py - batond under systemd's protocols: socket activation, sd_notify, the fd store.

systemd is not PID 1 here. systemd-socket-activate (from the systemd package) passes real
sockets; where the manager itself is needed, the test plays its part: it binds NOTIFY_SOCKET,
records what batond says, keeps the FDSTORE=1 fds and starts a new batond with them.
"""
import array
import os
import signal
import socket
import sys
import tempfile
import threading

from harness import environ_of
from harness import (TINY, Batond, Load, TestFailure, alive, bin_path, broken_while, check,
                     free_port, outcome, queue_clients, serving_pid, socket_inodes, target_of,
                     wait_for)

HTTPD = bin_path("example-httpd")
SOCKET_ACTIVATE = "/usr/bin/systemd-socket-activate"
K = 20  # clients queued on the listener while batond is killed and restarted


def activate(port):
    """systemd-socket-activate execs its command at the first connection: make one."""
    def poke():
        wait_for(lambda: _connect(port), "systemd-socket-activate to listen")
    threading.Thread(target=poke, daemon=True).start()


def _connect(port):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
    except OSError:
        return False
    c.close()
    return True


class Manager:
    """The service manager's NOTIFY_SOCKET: records messages and keeps stored fds."""

    def __init__(self, d):
        self.path = os.path.join(d, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []
        self.fds = []  # (name, fd)
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        fdsize = array.array("i").itemsize
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16 * fdsize))
            except OSError:
                return
            fds = []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(payload[:len(payload) - len(payload) % fdsize])
                    fds.extend(a)
            text = data.decode(errors="replace")
            with self.cond:
                self.messages.append(text)
                if "FDSTORE=1" in text:
                    name = dict(l.split("=", 1) for l in text.split("\n") if "=" in l)["FDNAME"]
                    self.fds.extend((name, fd) for fd in fds)
                else:
                    for fd in fds:
                        os.close(fd)
                self.cond.notify_all()

    def wait(self, pred, what):
        def check_messages():
            with self.cond:
                return pred(list(self.messages))
        return wait_for(check_messages, what)

    def close(self):
        self.sock.close()
        for _, fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


def fields(msg):
    return dict(l.split("=", 1) for l in msg.split("\n") if "=" in l)


def test_socket_activation_serves_on_the_inherited_socket_through_ten_reloads():
    port = free_port()
    b = Batond(["-l", f"web=127.0.0.1:{port}", "-n", "2"], [HTTPD],
               prefix=[SOCKET_ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname", "web"])
    try:
        activate(port)
        b.wait_log(rf"listening on tcp://127.0.0.1:{port} \(web\): inherited from systemd")
        b.wait_log(r"generation 1: 2/2 workers ready")
        w = b.workers()[0]
        env = [k + b"=" + v for k, v in environ_of(w).items()]
        check(b"LISTEN_FDNAMES=web" in env, "the worker does not see systemd's name")
        load = Load(f"127.0.0.1:{port}", duration="120s", threads=4)
        try:
            for gen in range(2, 12):
                mark = b.mark()
                old = set(b.workers())
                b.signal(signal.SIGHUP)
                b.wait_log(rf"generation {gen}: .*reload done", start=mark)
                wait_for(lambda: not any(alive(p) for p in old), f"generation {gen - 1} exit")
            res = load.finish()
        finally:
            load.kill()
        check(res["ok"] > 0 and res["failed"] == 0, f"load over 10 reloads: {res}")
        # batond bound nothing of its own: the only listening socket is systemd's.
        check(b.count(r"listening on .*\(web\)$") == 0, "batond bound the address itself")
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, "exit status")
    finally:
        b.cleanup()


def test_inherited_socket_without_a_matching_listen_option_is_passed_on_under_its_name():
    port = free_port()
    b = Batond(["-l", "127.0.0.1:0"], [HTTPD],
               prefix=[SOCKET_ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname", "extra"])
    try:
        activate(port)
        b.wait_log(r"generation 1: 1/1 workers ready")
        w = b.workers()[0]
        env = [k + b"=" + v for k, v in environ_of(w).items()]
        check(b"LISTEN_FDNAMES=listen0:extra" in env, f"names: {[e for e in env if b'FDN' in e]}")
        check(serving_pid(f"tcp://127.0.0.1:{port}") == w, "not served on the inherited socket")
    finally:
        b.cleanup()


def test_listen_option_of_another_kind_than_the_inherited_socket_is_an_error():
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        b = Batond(["-l", f"web=unix:{d}/web.sock"], [HTTPD],
                   prefix=[SOCKET_ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname", "web"])
        try:
            activate(port)
            check(b.wait_exit() == 2, "exit status")
            b.wait_log(rf"listen web=unix:{d}/web.sock: systemd passed 'web' as "
                       rf"tcp://127.0.0.1:{port}")
        finally:
            b.cleanup()


def test_notify_messages_follow_start_reload_failed_reload_and_stop():
    with tempfile.TemporaryDirectory() as d:
        m = Manager(d)
        flag = os.path.join(d, "broken")
        cmd = broken_while(flag, "exit 1", [HTTPD])
        b = Batond(["-l", "web=127.0.0.1:0", "-n", "2", "--fdstore"], cmd,
                   env={"NOTIFY_SOCKET": m.path})
        try:
            b.wait_log(r"generation 1: 2/2 workers ready")
            m.wait(lambda ms: any("FDSTORE=1" in x for x in ms), "FDSTORE=1")
            b.signal(signal.SIGHUP)
            b.wait_log(r"generation 2: .*reload done")
            open(flag, "w").close()
            b.signal(signal.SIGHUP)
            b.wait_log(r"reload to generation 3 failed")
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, "exit status")
            msgs = m.wait(lambda ms: ms if any("STOPPING=1" in x for x in ms) else None,
                          "STOPPING=1")
            kinds = []
            for x in msgs:
                f = fields(x)
                for k in ("READY", "RELOADING", "STOPPING", "FDSTORE"):
                    if f.get(k) == "1":
                        kinds.append(k)
            check(kinds == ["READY", "FDSTORE", "RELOADING", "READY", "RELOADING", "READY",
                            "STOPPING"], f"sequence {kinds}:\n" + "\n--\n".join(msgs))
            f = [fields(x) for x in msgs]
            check(f[0]["STATUS"] == "generation 1: 2/2 workers ready; serving", f[0])
            check("MONOTONIC_USEC" in f[2] and int(f[2]["MONOTONIC_USEC"]) > 0, f[2])
            check(f[3]["STATUS"] == "generation 2: 2/2 workers ready; last reload ok", f[3])
            check("reload to generation 3 failed" in f[5]["STATUS"], f[5])
            # The stored fd is the listener itself.
            check([n for n, _ in m.fds] == ["web"], f"stored {m.fds}")
            s = socket.socket(fileno=os.dup(m.fds[0][1]))
            check(target_of(b.address("web")).endswith(":%d" % s.getsockname()[1]),
                  "stored fd is another socket")
            s.close()
        finally:
            b.cleanup()
            m.close()


def start_with_fds(fds, args, command, env):
    """As systemd does: the stored fds at 3.., LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID."""
    names = ":".join(n for n, _ in fds)
    srcs = [fd for _, fd in fds]

    def arrange():
        high = [os.dup(fd) for fd in srcs]  # clear of 3.. before the dup2s
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i)
            os.close(fd)
    e = dict(env)
    e.update({"LISTEN_FDS": str(len(fds)), "LISTEN_FDNAMES": names})
    # LISTEN_PID must be batond's own pid: a shell sets it and execs batond in place.
    prefix = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"]
    b = Batond(args, command, env=e, prefix=prefix, preexec_fn=arrange,
               pass_fds=tuple(range(3, 3 + len(fds))))
    return b


def test_killed_batond_restarted_with_its_stored_fds_serves_every_queued_client():
    with tempfile.TemporaryDirectory() as d:
        m = Manager(d)
        env = {"NOTIFY_SOCKET": m.path}
        b = Batond(["-l", "web=127.0.0.1:0", "-n", "2", "--fdstore"], [sys.executable, TINY],
                   env=env)
        b2 = None
        try:
            spec = b.address("web")
            b.wait_log(r"generation 1: 2/2 workers ready")
            m.wait(lambda ms: any("FDSTORE=1" in x for x in ms), "FDSTORE=1")
            workers = b.workers()
            for w in workers:
                os.kill(w, signal.SIGSTOP)
            clients = queue_clients([spec], K)
            # batond dies; the manager kills what is left of the service, keeps the store.
            os.kill(b.pid, signal.SIGKILL)
            b.wait_exit()
            for w in workers:
                os.kill(w, signal.SIGKILL)
            wait_for(lambda: not any(alive(w) for w in workers), "the old workers to die")
            b2 = start_with_fds(m.fds, ["-l", "web=127.0.0.1:0", "-n", "2"],
                                [sys.executable, TINY], env={})
            b2.wait_log(r"\(web\): inherited from systemd")
            b2.wait_log(r"generation 1: 2/2 workers ready")
            results = [outcome(c) for c in clients]
            check(results.count("ok") == len(clients),
                  f"{results.count('ok')} of {len(clients)} queued clients served: {results}")
        finally:
            b.cleanup()
            if b2:
                b2.cleanup()
            m.close()


def test_unit_file_examples_pass_systemd_analyze_verify():
    import subprocess
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "systemd")
    with tempfile.TemporaryDirectory() as d:
        for name in ("batond@.service", "batond@.socket"):
            with open(os.path.join(src, name)) as f:
                text = f.read()
            # verify checks that ExecStart= exists: point it at the build tree.
            text = text.replace("/usr/local/bin/batond", bin_path("batond"))
            text = text.replace("/usr/local/bin/baton-hello", bin_path("hello"))
            text = text.replace("/usr/local/bin/batonctl", bin_path("batonctl"))
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        p = subprocess.run(["systemd-analyze", "verify", "--man=no",
                            os.path.join(d, "batond@8080.service"),
                            os.path.join(d, "batond@8080.socket")],
                           capture_output=True, text=True, timeout=60)
        ours = [l for l in (p.stdout + p.stderr).splitlines() if "batond@" in l]
        check(p.returncode == 0 and not ours, f"verify: rc {p.returncode}: {ours}")


def test_socket_passed_by_the_socket_unit_and_the_fd_store_is_kept_once():
    """systemd passes a listener twice after a restart when both a .socket unit and the fd
    store hold it (LISTEN_FDS=2, LISTEN_FDNAMES=web:web): batond keeps one and closes the
    other, and a worker sees the listener once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    port = s.getsockname()[1]
    dup = os.dup(s.fileno())
    b = None
    try:
        b = start_with_fds([("web", s.fileno()), ("web", dup)],
                           ["-l", f"web=127.0.0.1:{port}", "-n", "2"], [HTTPD], env={})
        b.wait_log(r"generation 1: 2/2 workers ready")
        check(b.count(r"listening on .*\(web\): inherited from systemd") == 1,
              f"the listener was taken more than once:\n{b.log()}")
        b.wait_log(r"inherited fd 4 \(web\): the same socket as fd 3 \(web\); closing it")
        inode = os.fstat(s.fileno()).st_ino
        held = [fd for fd, ino in socket_inodes(b.pid).items() if ino == inode]
        check(len(held) == 1, f"batond holds the listener at fds {held}")
        for w in b.workers():
            env = [k + b"=" + v for k, v in environ_of(w).items()]
            check(b"LISTEN_FDS=1" in env and b"LISTEN_FDNAMES=web" in env,
                  f"worker {w}: {[e for e in env if e.startswith(b'LISTEN_')]}")
            held = [fd for fd, ino in socket_inodes(w).items() if ino == inode]
            check(held == [3], f"worker {w} holds the listener at fds {held}")
        check(serving_pid(f"tcp://127.0.0.1:{port}") in b.workers(), "not served")
    finally:
        if b:
            b.cleanup()
        os.close(dup)
        s.close()
