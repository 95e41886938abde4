# SPDX-License-Identifier: MIT
"""harness.py - run batond, workers and load on loopback; track and stop every process by pid."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

BUILD = os.environ.get("BUILD", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 60.0  # seconds any single wait may take on a busy 2-core machine
# A one-connection-at-a-time HTTP/1.0 worker that speaks only LISTEN_FDS and NOTIFY_SOCKET.
TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_server.py")


def bin_path(name):
    return os.path.join(ROOT, BUILD, name)


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def children_of(pid):
    """Every descendant of pid, from /proc (so cleanup can stop them by pid)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
        except (OSError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in parents.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(pred, what, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise TestFailure(f"timed out after {timeout:.0f}s waiting for {what}")


class StderrReader:
    """A child process (self.proc) whose stderr a thread reads line by line into self.lines."""

    def _start_reader(self, proc):
        self.lines = []
        self.cond = threading.Condition()
        self.proc = proc
        self.pid = proc.pid
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def log(self):
        with self.cond:
            return "\n".join(self.lines)


class Batond(StderrReader):
    """One batond process with its stderr captured line by line."""

    def __init__(self, args, command, env=None, prefix=(), preexec_fn=None, pass_fds=(),
                 batond=None):
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        e.pop("LISTEN_FDS", None)
        # A batond without -c gets a control socket of its own: batond refuses to start on
        # one that another batond (another test, another checkout's tests) answers on.
        self.runtime_dir = None
        if not any(a in ("-c", "--control", "--no-control") or a.startswith("--control=")
                   for a in args) and not (env and "RUNTIME_DIRECTORY" in env):
            self.runtime_dir = tempfile.mkdtemp(prefix="baton-run.")
            e["RUNTIME_DIRECTORY"] = self.runtime_dir
        if env:
            e.update(env)
        self.known = {}  # pid: its start time, for cleanup; see remember()
        # prefix: a launcher that execs batond in place (same pid), e.g. systemd-socket-activate.
        self._start_reader(subprocess.Popen(
            list(prefix) + [batond or bin_path("batond")] + args + ["--"] + command,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=e, text=True, errors="replace", preexec_fn=preexec_fn, pass_fds=pass_fds))

    def wait_log(self, pattern, start=0, timeout=DEADLINE):
        """Waits for a line matching pattern at index >= start; returns (match, index)."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    m = rx.search(self.lines[i])
                    if m:
                        return m, i
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    raise TestFailure(f"no log line matching {pattern!r}; log:\n" +
                                      "\n".join(self.lines[-40:]))
                self.cond.wait(min(left, 0.5))

    def count(self, pattern):
        rx = re.compile(pattern)
        with self.cond:
            return sum(1 for l in self.lines if rx.search(l))

    def count_since(self, mark, pattern):
        """Lines matching pattern at index >= mark."""
        rx = re.compile(pattern)
        with self.cond:
            return sum(1 for line in self.lines[mark:] if rx.search(line))

    def mark(self):
        with self.cond:
            return len(self.lines)

    def address(self, name="listen0"):
        m, _ = self.wait_log(r"listening on (\S+) \(" + re.escape(name) + r"\)")
        return m.group(1)

    def workers(self):
        """Direct children that are alive: the worker processes."""
        pids = [p for p in children_of(self.pid) if alive(p) and ppid(p) == self.pid]
        self.remember(pids)
        return sorted(pids)

    def remember(self, pids):
        """Records pids (with their start times) for cleanup: a pid that has since exited and
        been reused by someone else's process is then left alone."""
        for p in pids:
            t = start_time(p)
            if t is not None:
                self.known.setdefault(p, t)

    def signal(self, sig):
        self.remember(children_of(self.pid))
        os.kill(self.pid, sig)

    def wait_exit(self, timeout=DEADLINE):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"batond pid {self.pid} did not exit within {timeout:.0f}s")

    def cleanup(self):
        """Stops batond and everything it started, by pid, whatever state the test left."""
        if self.proc.poll() is None:
            try:
                # Frozen first, so that it respawns nothing while its workers die.
                self.proc.send_signal(signal.SIGSTOP)
            except ProcessLookupError:
                pass
        self.remember(children_of(self.pid))
        mine = os.getpgrp()
        for p, t in self.known.items():
            if start_time(p) != t:
                continue  # gone, and perhaps the number of another process by now
            try:
                # A worker leads its own group: kill the group at once, so that a server's
                # master cannot start a replacement child between two kills.
                if os.getpgid(p) == p and p != mine:
                    os.killpg(p, signal.SIGKILL)
                else:
                    os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pass
        self.reader.join(timeout=5)
        if self.runtime_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def control(self):
        """The control socket path when the harness chose it (no -c given)."""
        return os.path.join(self.runtime_dir, "batond.sock") if self.runtime_dir else None


class Proc(StderrReader):
    """A process other than batond whose stderr is read line by line, stopped by pid at cleanup.
    It inherits none of the variables that tell a server where it runs."""

    def __init__(self, argv, env=None, pass_fds=()):
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "BATON_FD"):
            e.pop(k, None)
        e.update(env or {})
        self._start_reader(subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=e, text=True, errors="replace", pass_fds=pass_fds))

    def wait_log(self, text, timeout=DEADLINE):
        """Waits for a line that contains text (not a pattern)."""
        end = time.monotonic() + timeout
        with self.cond:
            while not any(text in l for l in self.lines):
                left = end - time.monotonic()
                if left <= 0 or not self.reader.is_alive():
                    raise TestFailure(f"no log line with {text!r}; log:\n" + "\n".join(self.lines))
                self.cond.wait(min(left, 0.5))

    def wait_exit(self, timeout=DEADLINE):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"pid {self.pid} did not exit within {timeout:.0f}s:\n{self.log()}")

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=DEADLINE)
        self.reader.join(timeout=5)


def reload_and_wait(b, gen):
    """SIGHUP, then the outcome line of generation gen; returns 'done' or 'failed'."""
    mark = b.mark()
    b.signal(signal.SIGHUP)
    m, _ = b.wait_log(rf"generation {gen}: .*reload done|reload to generation {gen} failed",
                      start=mark)
    return "done" if "reload done" in m.group(0) else "failed"


def broken_while(flag, action, command):
    """command run by a shell that does action instead (exit 1, exec sleep 600) while the
    file flag exists: a generation that a test breaks by creating the file."""
    return ["/bin/sh", "-c", f'test -e {flag} && {action}; exec "$0" "$@"', *command]


def start_time(pid):
    """When pid started (clock ticks since boot, /proc/PID/stat field 22), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError):
        return -1


def environ_of(pid):
    """pid's environment, {name: value} in bytes, once it has one: batond goes on when the
    kernel has swapped a new worker's memory in execve(), a moment before the kernel lays out
    the new environment, and /proc/PID/environ is empty until then."""
    def read():
        with open(f"/proc/{pid}/environ", "rb") as f:
            return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    return wait_for(read, f"pid {pid}'s environment after its execve()")


def steady_fds(pid):
    """pid's open fds as /proc shows them, {fd: what}, without the worker record's temporary
    file, which batond holds only while it rewrites the record (adopt.c)."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            what = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not what.endswith(".record.tmp"):
            out[int(fd)] = what
    return dict(sorted(out.items()))


def socket_inodes(pid):
    """The sockets pid has open, from /proc/PID/fd: {fd: socket inode}."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            out[int(fd)] = int(m.group(1))
    return out


def target_of(spec):
    """tcp://127.0.0.1:8080 -> 127.0.0.1:8080, for loadgen."""
    if spec.startswith("tcp://"):
        return spec[len("tcp://"):]
    return spec


class Load:
    """A bounded loadgen run in the background."""

    def __init__(self, target, duration="10s", threads=4, extra=(), prefix=()):
        # prefix: a launcher that execs loadgen in place, e.g. nsenter into a network namespace.
        # A request may take a few seconds on a busy 2-core machine (a SYN dropped from a full
        # accept queue is resent after 1 s, then 3 s more): what the tests count as failed is
        # what batond could cause, so a request times out only after 30 s unless a test says.
        if "--timeout" not in extra:
            extra = ("--timeout", "30s", *extra)
        self.proc = subprocess.Popen(
            [*prefix, bin_path("loadgen"), "-t", str(threads), "-d", duration, "--quiet", *extra,
             target],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self, timeout=DEADLINE * 2):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TestFailure("loadgen did not finish in time")
        m = re.search(r"^loadgen: (.*)$", out, re.M)
        check(m, f"no loadgen summary; stdout={out!r} stderr={err!r}")
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}

    def finish(self):
        """Ends the run early with SIGINT, after which loadgen still prints its counts."""
        self.proc.send_signal(signal.SIGINT)
        return self.result()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def running(self):
        return self.proc.poll() is None


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, for servers that cannot bind port 0."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_all(s):
    """Every byte s receives until the peer closes it; raises what recv() raises."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def http_get(spec, path="/", timeout=10.0):
    """One request; returns the body. spec is tcp://host:port or unix:/path."""
    if spec.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = spec[5:]
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
    else:
        hostport = target_of(spec)
        host, port = hostport.rsplit(":", 1)
        host = host.strip("[]")
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        addr = (host, int(port))
    s.settimeout(timeout)
    try:
        s.connect(addr)
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = read_all(s)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1."), f"bad reply {data[:80]!r}")
    return body.decode()


def serving_pid(spec):
    m = re.search(r"pid=(\d+)", http_get(spec))
    check(m, "reply without pid=")
    return int(m.group(1))


def queue_clients(specs, k, timeout=60):
    """k connected clients per listener (tcp://HOST:PORT or unix:PATH), each with its request
    sent, for a server that is not accepting; returns the sockets."""
    clients = []
    for spec in specs:
        for _ in range(k):
            if spec.startswith("unix:"):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.settimeout(timeout)
                c.connect(spec[5:])
            else:
                host, port = spec[len("tcp://"):].rsplit(":", 1)
                host = host.strip("[]")
                c = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                c.settimeout(timeout)
                c.connect((host, int(port)))
            c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            clients.append(c)
    return clients


def outcome(c, status=b"HTTP/1.0 200"):
    """Reads c's reply and closes it: 'ok' for a full reply (status line and pid=), 'reset',
    'empty' or 'bad' otherwise."""
    try:
        data = read_all(c)
    except ConnectionResetError:
        return "reset"
    finally:
        c.close()
    if data.startswith(status) and b"pid=" in data:
        return "ok"
    return "empty" if not data else "bad"
