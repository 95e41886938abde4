# SPDX-License-Identifier: MIT
"""test_privileges.py - least privilege (issue #15): workers as another user (--user, --group),
--no-new-privs, and what such a worker can no longer do to batond."""
import errno
import os
import re
import signal
import subprocess
import tempfile
import textwrap

from harness import (Batond, bin_path, check, free_port, http_get, reload_and_wait,
                     wait_for)

HTTPD = bin_path("example-httpd")
# Debian's interpreter: the test's own may live where uid 65534 cannot reach (/root/.pyenv).
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
HERE = os.path.dirname(os.path.abspath(__file__))

# A worker that, once the test says go, tries what a worker of batond's own uid could do:
# signal batond (stop, upgrade), and ask on the control and fd sockets. It writes what each
# attempt got into OUT, one "what result" line each, and serves meanwhile.
PROBE = textwrap.dedent(r'''
    import os, signal, socket, struct, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from workerlib import serve
    control, fdsock, go, out = sys.argv[2:6]

    def notify(msg):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.connect(os.environ["NOTIFY_SOCKET"])
        s.send(msg.encode())
        s.close()

    def attempt(fn):
        try:
            return fn()
        except OSError as e:
            return f"errno={e.errno}"

    def ask_control(line):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(30)
        c.connect(control)
        c.sendall(line)
        data = c.recv(4096)
        return "reply=" + data.decode().split(" ")[0] if data else "closed"

    def fetch():
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c.settimeout(30)
        c.connect(fdsock)
        c.sendall(b"BATN" + struct.pack("<BBHI", 1, 0, 1, 8) +
                  struct.pack("<IHH", os.getpid(), 2, 0))
        data, anc, _, _ = c.recvmsg(65536, socket.CMSG_SPACE(64))
        return f"kind={struct.unpack('<H', data[6:8])[0] if data else 0} fds={len(anc)}"

    def probe():
        while not os.path.exists(go):
            time.sleep(0.05)
        results = [
            ("kill-TERM", attempt(lambda: os.kill(os.getppid(), signal.SIGTERM) or "sent")),
            ("kill-USR2", attempt(lambda: os.kill(os.getppid(), signal.SIGUSR2) or "sent")),
            ("stop", attempt(lambda: ask_control(b"stop\n"))),
            ("upgrade", attempt(lambda: ask_control(b"upgrade\n"))),
            ("fetch", attempt(fetch)),
        ]
        with open(out + ".tmp", "w") as f:
            f.write("".join(f"{k} {v}\n" for k, v in results))
        os.rename(out + ".tmp", out)

    threading.Thread(target=probe, daemon=True).start()
    serve([3], os.environ.get("BATON_GENERATION", "0"), ready=lambda: notify("READY=1"))
''')


def status_ids(pid):
    """Uid, Gid, Groups and NoNewPrivs lines of /proc/PID/status, as lists of numbers."""
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    out = {}
    for key in ("Uid", "Gid", "Groups", "NoNewPrivs", "CapEff", "CapPrm"):
        m = re.search(rf"^{key}:\s*(.*)$", text, re.M)
        out[key] = m.group(1).split()
    return out


def shared_dir():
    """A directory that batond (root) owns and a worker of another user can search."""
    d = tempfile.mkdtemp(prefix="baton-priv.")
    os.chmod(d, 0o755)
    return d


def test_workers_run_as_the_user_given_without_privileges_and_still_reload():
    d = shared_dir()
    b = Batond(["-l", "127.0.0.1:0", "-n", "2", "--user", "nobody", "--no-new-privs"], [HTTPD],
               env={"RUNTIME_DIRECTORY": d})
    try:
        addr = b.address()
        b.wait_log(r"generation 1: 2/2 workers ready")
        for gen in (2, 3):
            check(reload_and_wait(b, gen) == "done", f"reload {gen}:\n{b.log()}")
        wait_for(lambda: len(b.workers()) == 2, "two workers")
        for w in b.workers():
            ids = status_ids(w)
            check(ids["Uid"] == [str(NOBODY)] * 4 and ids["Gid"] == [str(NOBODY)] * 4, ids)
            check(ids["Groups"] == [str(NOBODY)], ids)
            check(ids["NoNewPrivs"] == ["1"], ids)
            check(ids["CapEff"] == ["0000000000000000"] and ids["CapPrm"] == ids["CapEff"], ids)
            with open(f"/proc/{w}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            check(env.get(b"USER") == b"nobody" and env.get(b"HOME") == b"/nonexistent", env)
        check("pid=" in http_get(addr), "no reply")
        # The notify socket is theirs (still 0600); the control socket stays root's alone.
        st = os.stat(f"{d}/batond.sock.notify")
        check(st.st_uid == NOBODY and st.st_mode & 0o777 == 0o600, oct(st.st_mode))
        st = os.stat(f"{d}/batond.sock")
        check(st.st_uid == 0 and st.st_mode & 0o777 == 0o600, oct(st.st_mode))
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, "exit status")
    finally:
        b.cleanup()


def test_a_worker_running_as_another_user_cannot_stop_upgrade_or_fetch():
    d = shared_dir()
    os.mkdir(f"{d}/out")
    os.chown(f"{d}/out", NOBODY, NOBODY)  # where the worker may write its results
    go, out, script = f"{d}/go", f"{d}/out/probe", f"{d}/probe.py"
    with open(script, "w") as f:
        f.write(PROBE)
    b = Batond(["-l", "127.0.0.1:0", "--user", "nobody", "--fd-socket", f"{d}/fd.sock"],
               [SYSTEM_PYTHON, script, HERE, f"{d}/batond.sock", f"{d}/fd.sock", go, out],
               env={"RUNTIME_DIRECTORY": d})
    try:
        b.wait_log(r"generation 1: 1/1 workers ready")
        worker = b.workers()[0]
        # Both files are 0600 root's: the kernel refuses a connect before batond sees it.
        # Opened up here, so that batond's own credential check is what refuses.
        for path in (f"{d}/batond.sock", f"{d}/fd.sock"):
            check(os.stat(path).st_mode & 0o777 == 0o600, f"{path} is not 0600")
            os.chmod(path, 0o666)
        open(go, "w").close()
        wait_for(lambda: os.path.exists(out), "the probe's results")
        with open(out) as f:
            got = dict(line.split(" ", 1) for line in f.read().splitlines())
        # EPERM for a signal; a closed connection for a request: EOF, or a reset or EPIPE if
        # batond closed it before or while the worker wrote; the fd socket may say ERROR (7).
        eperm = f"errno={errno.EPERM}"
        refused = ("closed", f"errno={errno.ECONNRESET}", f"errno={errno.EPIPE}")
        check(got["kill-TERM"] == eperm and got["kill-USR2"] == eperm, got)
        check(got["stop"] in refused and got["upgrade"] in refused, got)
        check(got["fetch"] in refused + ("kind=7 fds=0",), got)
        b.wait_log(rf"control: refusing pid {worker} uid {NOBODY}")
        b.wait_log(rf"fd-socket {d}/fd.sock: refusing pid {worker} uid {NOBODY}")
        # Nothing happened: the same worker serves, batond answers root.
        check(b.proc.poll() is None and b.workers() == [worker], "batond or its worker changed")
        p = subprocess.run([bin_path("batonctl"), "-c", f"{d}/batond.sock", "stop"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, p.stderr)
        check(b.wait_exit() == 0, "exit status")
    finally:
        b.cleanup()


def test_einhorn_and_preload_workers_as_another_user_reach_their_sockets():
    """The einhorn ack socket and the shim's READY=1 go through files of batond's: with
    --user they are made the workers' (einhorn's socket admits their uid)."""
    d = shared_dir()
    cases = [
        (["--pass", "einhorn", "--ready", "einhorn-ack"],
         [SYSTEM_PYTHON, os.path.join(HERE, "einhorn_worker.py")]),
        (["--preload", "--ready", "notify"],
         [SYSTEM_PYTHON, "-m", "http.server", "--bind", "127.0.0.1", "--directory", d, "{port}"]),
    ]
    for args, command in cases:
        port = free_port()
        b = Batond(["-l", f"127.0.0.1:{port}", "--user", "nobody", *args],
                   [c.replace("{port}", str(port)) for c in command],
                   env={"RUNTIME_DIRECTORY": d})
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            check(status_ids(b.workers()[0])["Uid"][0] == str(NOBODY), "not nobody")
            check(reload_and_wait(b, 2) == "done", f"{args}: reload:\n{b.log()}")
            b.signal(signal.SIGTERM)
            check(b.wait_exit() == 0, f"{args}: exit status")
        finally:
            b.cleanup()


def test_user_and_group_are_refused_clearly_when_they_cannot_be_had():
    cases = [
        ([], ["--user", "no-such-user-baton"], "invalid --user 'no-such-user-baton': no such user"),
        ([], ["--group", "no-such-group-baton"],
         "invalid --group 'no-such-group-baton': no such group"),
        # A batond that is not root cannot make workers of another user.
        (["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"],
         ["--user", "root"], f"batond runs as uid {NOBODY}, not root"),
    ]
    for prefix, args, expect in cases:
        p = subprocess.run(prefix + [bin_path("batond"), "-l", "127.0.0.1:0", *args, "--",
                                     "true"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 2 and expect in p.stderr, f"{args}: {p.returncode} {p.stderr}")
    # Not root, --user itself: nothing to change, accepted.
    p = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        bin_path("batond"), "--no-control", "-l", "127.0.0.1:0", "--user",
                        "nobody", "--", "true"],
                       capture_output=True, text=True, timeout=60)
    check("not root" not in p.stderr and "generation 1" in p.stderr, p.stderr)
