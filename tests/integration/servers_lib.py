# SPDX-License-Identifier: MIT
"""servers_lib.py - real servers from Debian packages (lighttpd, gunicorn, nginx) behind batond:
their configurations, command lines, process trees, and which process holds a connection.

Shared by tests/integration/test_servers.py and tests/bench/servers.py. Every configuration
lives in a temporary directory and names a port picked free at run time: servers read their
port from the configuration before they start, so it cannot be 0.
"""
import os
import re
import shutil
import signal
import socket
import subprocess

# free_port is used here and by tests/bench/servers.py, which imports it from this module.
from harness import (Batond, TestFailure, alive, bin_path, check, children_of, free_port, ppid,
                     read_all, wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))
PORT_TRIES = 3  # a port found free can be taken by someone else before batond binds it
SBIN = ("/usr/sbin", "/sbin")  # not in every user's PATH

# Per generation: lighttpd is one process; nginx a master and worker_processes workers; gunicorn
# an arbiter and its workers.
NGINX_WORKERS = 2
GUNICORN_WORKERS = 2


def need(program, package):
    """The path of program; a test FAILS (not skips) without it: CI installs it."""
    path = shutil.which(program, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
    if path is None:
        raise TestFailure(f"{program} not found: install the Debian package {package} "
                          f"(scripts/install-deps does)")
    return path


def batond_ready_modes():
    """The --ready modes this batond knows, from its --help."""
    out = subprocess.run([bin_path("batond"), "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    m = re.search(r"--ready MODE(.*?)\n\s*(?:-\w, )?--(?!ready MODE)", out, re.S)
    text = m.group(1) if m else ""
    return {w for w in ("notify", "einhorn-ack", "delay", "none", "listening") if w in text}


def ready_without_notify():
    """Readiness for a server that sends no READY=1: listening where batond has it."""
    return "listening" if "listening" in batond_ready_modes() else "delay:1s"


def replace_file(path, text):
    """Writes path atomically: a server starting right now reads the old or the new file."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def make_docroot(d, text):
    """d/www/index.html, written once; d and www readable by a server that drops root (nginx's workers)."""
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    for p in (d, www):
        os.chmod(p, 0o755)
    index = os.path.join(www, "index.html")
    if not os.path.exists(index):  # never rewritten: a server may be reading it
        replace_file(index, text)
        os.chmod(index, 0o644)
    return www


# ---------------------------------------------------------------------------------------------
# lighttpd: takes LISTEN_FDS with server.systemd-socket-activation; an inherited socket is used
# for the server.bind/server.port that matches its address, otherwise lighttpd binds itself
# (and fails with EADDRINUSE on batond's port). Without LISTEN_FDS it binds the same address,
# which is how the benchmark starts it on its own. SIGINT is its graceful shutdown (SIGTERM
# drops the connections in hand); it sends no READY=1.

LIGHTTPD_BODY = "hello from lighttpd\n"


def lighttpd_config(d, port, broken=False):
    path = os.path.join(d, "lighttpd.conf")
    make_docroot(d, LIGHTTPD_BODY)
    text = f'''\
server.document-root = "{d}/www"
server.bind = "127.0.0.1"
server.port = {port}
server.systemd-socket-activation = "enable"
server.pid-file = "{d}/lighttpd.pid"
server.errorlog = "{d}/lighttpd-error.log"
server.upload-dirs = ( "{d}" )
index-file.names = ( "index.html" )
mimetype.assign = ( ".html" => "text/html" )
'''
    if broken:
        text += "server.max-connections = \n"  # a parse error: lighttpd exits 255 at start
    replace_file(path, text)
    return path


def lighttpd_command(d):
    return [need("lighttpd", "lighttpd"), "-D", "-f", os.path.join(d, "lighttpd.conf")]


# ---------------------------------------------------------------------------------------------
# nginx: inherits listeners from NGINX="3;4;" (--pass nginx) when its listen directive names
# the inherited address exactly, or binds its own, which the preload shim swaps (--preload).
# QUIT is its graceful stop; it sends no READY=1. -e keeps the compiled-in error log
# (/var/log/nginx) out of it before the configuration is read.

def nginx_config(d, port, broken=False):
    path = os.path.join(d, "nginx.conf")
    make_docroot(d, "hello from nginx\n")
    temp = "\n".join(f"    {k}_temp_path {d}/{k}_temp;"
                     for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = f'''\
daemon off;
master_process on;
worker_processes {NGINX_WORKERS};
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location = / {{ default_type text/plain; return 200 "pid=$pid\\n"; }}
    }}
}}
'''
    if broken:
        text += "this_is_not_a_directive;\n"  # nginx: [emerg] unknown directive, exit 1
    replace_file(path, text)
    return path


def nginx_command(d):
    return [need("nginx", "nginx"), "-p", d, "-e", os.path.join(d, "nginx-error.log"),
            "-c", os.path.join(d, "nginx.conf")]


# ---------------------------------------------------------------------------------------------
# gunicorn: its arbiter takes LISTEN_FDS/LISTEN_PID itself (gunicorn/systemd.py) and sends
# READY=1 on NOTIFY_SOCKET once it holds the listeners (arbiter.py, Arbiter.start()), before it
# forks its workers. preload_app imports the application before that, so a broken application,
# like a broken configuration file, fails the start before READY=1. TERM is its graceful stop
# (QUIT and INT are quick ones).

GUNICORN_APP = os.path.join(HERE, "servers_wsgi.py")


def gunicorn_config(d, port, broken=False, broken_app=False, preload_app=True):
    """port is unused: gunicorn takes the inherited listeners and binds nothing."""
    del port
    path = os.path.join(d, "gunicorn.conf.py")
    with open(GUNICORN_APP) as f:
        app = f.read()
    if broken_app:
        app += "\ndef broken(:\n"  # a SyntaxError at import
    replace_file(os.path.join(d, "servers_wsgi.py"), app)
    text = f'''\
workers = {GUNICORN_WORKERS}
wsgi_app = "servers_wsgi:app"
chdir = {d!r}
preload_app = {preload_app}
loglevel = "warning"
worker_tmp_dir = {d!r}
'''
    if broken:
        text += "workers = = 2\n"  # "Failed to read config file", exit 1
    replace_file(path, text)
    return path


def gunicorn_command(d):
    return [need("gunicorn", "gunicorn"), "-c", os.path.join(d, "gunicorn.conf.py")]


# ---------------------------------------------------------------------------------------------
# caddy 2.6 (Go): no socket activation in this version, and raw system calls that no preload
# shim sees; it binds its own listener, which only --intercept can hand over. `bind` makes it
# bind the held address (without it caddy binds [::]:PORT). READY=1 comes on NOTIFY_SOCKET once
# it serves; TERM is its graceful stop. admin off: no second listener on localhost:2019.

def caddy_config(d, port, broken=False):
    path = os.path.join(d, "Caddyfile")
    text = f'''\
{{
\tadmin off
\tauto_https off
}}
http://127.0.0.1:{port} {{
\tbind 127.0.0.1
\trespond "hello from caddy" 200
}}
'''
    if broken:
        text += "this_is_not_a_directive {\n"  # caddy exits 1 adapting the Caddyfile
    replace_file(path, text)
    return path


def caddy_command(d):
    return [need("caddy", "caddy"), "run", "--config", os.path.join(d, "Caddyfile"),
            "--adapter", "caddyfile"]


def caddy_env(d):
    """caddy keeps its data (certificates, autosave.json) under HOME/XDG dirs: the test's own."""
    return {"HOME": d, "XDG_DATA_HOME": d, "XDG_CONFIG_HOME": d}


# ---------------------------------------------------------------------------------------------
# static-server (tests/integration/static_server.c, built -static by make): reads "HOST PORT"
# from its configuration, binds it itself, accepts blocking; TERM is its graceful stop. Replies
# name the process that served them.

def static_config(d, port, broken=False, host="127.0.0.1"):
    path = os.path.join(d, "static.conf")
    replace_file(path, "not-an-address\n" if broken else f"{host} {port}\n")
    return path


def static_command(d):
    return [bin_path("static-server"), os.path.join(d, "static.conf")]


# ---------------------------------------------------------------------------------------------
# batond around them.

def start(d, write_config, batond_args, command, n_procs, extra_env=None):
    """Writes the configuration for a free port and starts batond on it; retries when the port
    was taken in between. Returns (b, port) once generation 1 is ready with n_procs processes.
    """
    for _ in range(PORT_TRIES):
        port = free_port()
        write_config(d, port)
        b = Batond(["-l", f"127.0.0.1:{port}", "-c", os.path.join(d, "batond.sock"), "-v",
                    *batond_args], command, env=extra_env)
        try:
            b.wait_log(r"generation 1: \d+/\d+ workers ready")
        except TestFailure:
            kill_all(b)
            if not re.search(r"listen \S+: Address already in use", b.log()):
                raise
            continue
        try:
            wait_tree(b, n_procs)
        except BaseException:
            kill_all(b)
            raise
        return b, port
    raise TestFailure(f"no free port in {PORT_TRIES} tries")


def kill_all(b):
    """Stops batond and every server process under it, whatever state the test left.

    harness's cleanup kills pid by pid, and a server that respawns its workers (nginx's
    master) can fork a new one between two kills, which then outlives everything. So batond
    is frozen first (it spawns nothing more), then each worker's process group (batond makes
    every worker a group leader, and servers fork their workers into that group) is killed
    with one signal, which no fork in the group can escape; then harness cleans up the rest.
    """
    try:
        os.kill(b.pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    leaders = {p for p in children_of(b.pid) if ppid(p) == b.pid}
    for p in sorted(leaders):
        try:
            if os.getpgid(p) == p and p != os.getpgid(0):
                os.killpg(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    b.cleanup()


def tree(b):
    """Every live process under batond (its workers and theirs), remembered for cleanup."""
    pids = {p for p in children_of(b.pid) if alive(p)}
    b.remember(pids)
    return pids


def wait_tree(b, n):
    """Waits until exactly n processes live under batond; returns them."""
    return wait_for(lambda: (lambda t: t if len(t) == n else None)(tree(b)),
                    f"{n} processes under batond (have {sorted(tree(b))})")


def _tcp_inode(port, peer_port):
    """Inode of the accepted socket 127.0.0.1:port <- 127.0.0.1:peer_port; 0 until accepted."""
    want_local, want_peer = f"0100007F:{port:04X}", f"0100007F:{peer_port:04X}"
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            if cols[1] == want_local and cols[2] == want_peer:
                return int(cols[9])
    return 0


def holder_of_connection(port, pids, path="/"):
    """Opens a connection, finds which of pids accepted it (by the socket's inode in
    /proc/PID/fd), then completes the request. Returns (pid, reply body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n".encode())  # not finished yet
        peer = s.getsockname()[1]
        inode = wait_for(lambda: _tcp_inode(port, peer), "the server to accept a connection")
        target = f"socket:[{inode}]"

        def find():
            for p in pids:
                try:
                    fds = os.listdir(f"/proc/{p}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        if os.readlink(f"/proc/{p}/fd/{fd}") == target:
                            return p
                    except OSError:
                        continue
            return None

        holder = wait_for(find, f"one of {sorted(pids)} to hold connection {inode}")
        s.sendall(b"\r\n")
        data = read_all(s)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0],
          f"bad reply {data[:120]!r}")
    return holder, body.decode(errors="replace")

