# SPDX-License-Identifier: MIT
"""recipes.py - the servers of docs/WRAPPING.md's recipes behind batond: their configurations
(good and broken), command lines, batond options, processes per generation, and a load client
for the ones that do not speak HTTP (redis, memcached, UDP echo).

Each recipe here is what WRAPPING.md tells a user to run; tests/integration/test_recipes.py runs
each one through 20 reloads under load and a broken configuration.
"""
import os
import re
import socket
import subprocess
import threading
import time

from harness import TestFailure, check
from servers_lib import need, replace_file

HERE = os.path.dirname(os.path.abspath(__file__))


class Recipe:
    """One server under batond, as WRAPPING.md gives it."""

    def __init__(self, name, config, command, args, n_procs, drain, protocol="http",
                 pid_body=True, extra_listeners=(), known_resets=0, check_log=None):
        self.name = name
        self.config = config  # (d, port, broken=False) -> writes the configuration
        self.command = command  # (d) -> argv
        self.args = args  # batond options besides -l and -c
        self.n_procs = n_procs  # processes per generation
        self.drain = drain  # the signal batond sends to drain a generation
        self.protocol = protocol  # "http", "redis", "memcached" or "udp-echo"
        self.pid_body = pid_body  # an HTTP reply says pid=<the process that served it>
        self.extra_listeners = extra_listeners  # (d) -> more -l specs, e.g. a Unix socket
        # Resets the server itself causes (a race of its own, WRAPPING.md has the evidence):
        # allowed up to this count per run, and no other failure at all.
        self.known_resets = known_resets
        self.check_log = check_log  # (b) -> checks batond's log at the end, or None


# ---------------------------------------------------------------------------------------------
# Node.js: http.Server.listen({fd: N}) on every LISTEN_FDS fd. It sends no READY=1: --ready
# listening sees its epoll set. Its SIGTERM handler closes the servers (no new connection; idle
# keep-alive connections closed, Node.js 19 and later) and exits once they are closed.

NODE_SERVER = r"""'use strict';
const http = require('http');
const n = parseInt(process.env.LISTEN_FDS || '0', 10);
const servers = [];
for (let i = 0; i < n; i++) {
  const s = http.createServer((req, res) => {
    const body = `pid=${process.pid}\n`;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  });
  s.listen({ fd: 3 + i });
  servers.push(s);
}
process.on('SIGTERM', () => {
  let left = servers.length;
  for (const s of servers) s.close(() => { if (--left === 0) process.exit(0); });
});
"""


def node_config(d, port, broken=False):
    del port  # the listeners come from LISTEN_FDS
    replace_file(os.path.join(d, "server.js"), NODE_SERVER + ("})(;\n" if broken else ""))


def node_command(d):
    return [need("node", "nodejs"), os.path.join(d, "server.js")]


def node():
    return Recipe("Node.js", node_config, node_command, ["--ready", "listening"], 1, "TERM",
                  extra_listeners=lambda d: [f"unix:{d}/node.sock"])


# ---------------------------------------------------------------------------------------------
# HAProxy as a worker, no master-worker: "bind fd@3" takes batond's listener. -db keeps it in the
# foreground. SIGUSR1 is its soft stop: it stops listening, finishes the connections in hand
# and exits 0. It answers by itself (http-request return), so no backend is needed.

def haproxy_config(d, port, broken=False):
    del port
    text = f'''\
global
    log stderr format raw local0 err
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend web
    bind fd@3
    http-request return status 200 content-type text/plain lf-string "pid=%pid\\n"
'''
    if broken:
        text += "    no_such_keyword on\n"  # "unknown keyword", exit 1
    replace_file(os.path.join(d, "haproxy.cfg"), text)


def haproxy_command(d):
    return [need("haproxy", "haproxy"), "-db", "-f", os.path.join(d, "haproxy.cfg")]


def haproxy():
    return Recipe("HAProxy", haproxy_config, haproxy_command,
                  ["--ready", "listening", "--drain-signal", "USR1"], 1, "USR1")


# ---------------------------------------------------------------------------------------------
# Apache httpd 2.4, event MPM: binds its own Listen, so --preload swaps in batond's listener; the
# first child's wait on it is READY=1. WINCH is its graceful stop (finish requests, exit). Each
# generation needs its own PidFile: a new master refuses to start while the one in the file runs.

APACHE_CHILDREN = 2


def apache_config(d, port, broken=False):
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    for p in (d, www):
        os.chmod(p, 0o755)
    if not os.path.exists(os.path.join(www, "index.html")):
        replace_file(os.path.join(www, "index.html"), "hello from apache\n")
        os.chmod(os.path.join(www, "index.html"), 0o644)
    mods = "/usr/lib/apache2/modules"
    text = f'''\
ServerRoot {d}
ServerName localhost
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule dir_module {mods}/mod_dir.so
Listen 127.0.0.1:{port}
PidFile {d}/httpd.${{BATON_GENERATION}}.pid
Mutex file:{d} default
ErrorLog /dev/stderr
LogLevel warn
DocumentRoot {www}
StartServers {APACHE_CHILDREN}
ServerLimit {APACHE_CHILDREN}
ThreadsPerChild 25
MaxRequestWorkers {25 * APACHE_CHILDREN}
MinSpareThreads 1
MaxSpareThreads {25 * APACHE_CHILDREN}
User nobody
Group nogroup
<Directory {www}>
    Require all granted
</Directory>
'''
    if broken:
        text += "NoSuchDirective on\n"  # "Invalid command", exit 1
    replace_file(os.path.join(d, "apache.conf"), text)


def apache_command(d):
    return [need("apache2", "apache2"), "-D", "FOREGROUND", "-f", os.path.join(d, "apache.conf")]


def apache():
    return Recipe("Apache httpd (event)", apache_config, apache_command,
                  ["--preload", "--drain-signal", "WINCH"], 1 + APACHE_CHILDREN, "WINCH",
                  pid_body=False)


# ---------------------------------------------------------------------------------------------
# uWSGI 2.0 with its Python 3 plugin: takes LISTEN_FDS itself ("SystemD socket activation
# detected"); --protocol http makes the inherited socket speak HTTP. TERM is a brutal reload in
# 2.0: the master-start hook makes it the graceful shutdown. --need-app: an application that
# does not load fails the start (else uWSGI serves 500s). --ready listening: its READY=1 comes
# before that hook is set and before any worker exists (WRAPPING.md has the evidence).

UWSGI_WORKERS = 2


def uwsgi_config(d, port, broken=False):
    del port
    app = open(os.path.join(HERE, "servers_wsgi.py")).read()
    if broken:
        app += "\ndef broken(:\n"  # a SyntaxError at import: no app, exit 22
    replace_file(os.path.join(d, "servers_wsgi.py"), app)


def uwsgi_command(d):
    return [need("uwsgi", "uwsgi-core"), "--plugin", "python3", "--protocol", "http",
            "--master", "--processes", str(UWSGI_WORKERS), "--need-app",
            "--chdir", d, "--module", "servers_wsgi:app", "--disable-logging",
            "--hook-master-start", "unix_signal:15 gracefully_kill_them_all"]


def uwsgi():
    # gracefully_kill() exits a worker that is not in a request, and a worker is in one only
    # from wsgi_req_recv(), after accept() returned: a connection accepted in between is reset.
    # Measured about 1 in 60 worker drains under load; 2 per 21 drains of 2 workers bounds it.
    return Recipe("uWSGI", uwsgi_config, uwsgi_command, ["--ready", "listening"],
                  1 + UWSGI_WORKERS, "TERM", known_resets=2)


# ---------------------------------------------------------------------------------------------
# puma 5.6 in cluster mode: takes LISTEN_FDS when a bind names the inherited address, and sends
# READY=1 through the sd_notify gem (ruby-sd-notify) once its workers booted. TERM is its
# graceful stop; raise_exception_on_sigterm false makes it exit 0 rather than by the signal.
# queue_requests false: with its reactor on, a stopping worker closes a connection it accepted
# but has no request bytes from yet without a byte of reply (server.rb, reactor_wakeup(): such
# a client "can_close?", and Client#timeout! writes its 408 only in the data phase): an empty
# reply at every reload that catches one. Without the reactor a pool thread reads the request.

PUMA_WORKERS = 2


def puma_config(d, port, broken=False, queue_requests=False):
    replace_file(os.path.join(d, "config.ru"),
                 'run lambda { |env| [200, { "Content-Type" => "text/plain" }, '
                 '["pid=#{Process.pid}\\n"]] }\n')
    text = f'''\
workers {PUMA_WORKERS}
threads 1, 4
bind "tcp://127.0.0.1:{port}"
rackup "{d}/config.ru"
raise_exception_on_sigterm false
queue_requests {"true" if queue_requests else "false"}
'''
    if broken:
        text += "workers = = 2\n"  # a SyntaxError in the configuration: exit 1
    replace_file(os.path.join(d, "puma.rb"), text)


def puma_command(d):
    puma = need("puma", "puma")
    # Without the gem puma logs "Systemd integration failed" and never says READY=1.
    if subprocess.run([need("ruby", "ruby"), "-e", "require 'sd_notify'"],
                      capture_output=True, timeout=60).returncode != 0:
        raise TestFailure("ruby cannot load sd_notify: install the Debian package "
                          "ruby-sd-notify (scripts/install-deps does)")
    return [puma, "-C", os.path.join(d, "puma.rb")]


def puma_check(b):
    """READY=1 came from the sd_notify gem (puma sends nothing else to NOTIFY_SOCKET), through a
    notify socket that is a path: the gem connects only to paths."""
    check(re.search(r"notify socket /", b.log()), "the notify socket is not a path")
    # With --ready notify nothing but READY=1 makes a worker ready: 22 generations did.
    said = set(re.findall(r"\(pid (\d+)\): ready in ", b.log()))
    check(len(said) >= 22, f"{len(said)} puma masters said READY=1, expected 22")


def puma():
    return Recipe("puma", puma_config, puma_command, ["--ready", "notify"], 1 + PUMA_WORKERS,
                  "TERM", check_log=puma_check)


# ---------------------------------------------------------------------------------------------
# redis 7 and memcached 1.6 bind their own sockets (--preload) and catch TERM with handlers that
# exit at once, failing what they hold. USR2 they leave at its default, so the shim drains it.

def redis_config(d, port, broken=False):
    text = f'''\
bind 127.0.0.1
port {port}
save ""
appendonly no
dir {d}
logfile ""
loglevel warning
'''
    if broken:
        text += "no-such-directive yes\n"  # "Bad directive or wrong number of arguments", exit 1
    replace_file(os.path.join(d, "redis.conf"), text)


def redis_command(d):
    return [need("redis-server", "redis-server"), os.path.join(d, "redis.conf")]


def redis():
    return Recipe("redis", redis_config, redis_command, ["--preload", "--drain-signal", "USR2"],
                  1, "USR2", protocol="redis")


def memcached_config(d, port, broken=False):
    # The format of Debian's /etc/memcached.conf, read by its systemd-memcached-wrapper.
    text = f"-l 127.0.0.1\n-p {port}\n-U 0\n-m 16\n-u nobody\n"
    if broken:
        text += "-Z no-such-option\n"  # memcached: invalid option, exit 64
    replace_file(os.path.join(d, "memcached.conf"), text)


MEMCACHED_WRAPPER = "/usr/share/memcached/scripts/systemd-memcached-wrapper"


def memcached_command(d):
    need("memcached", "memcached")
    if not os.path.exists(MEMCACHED_WRAPPER):
        raise TestFailure(f"{MEMCACHED_WRAPPER} is missing: the Debian package memcached "
                          "ships it")
    return [MEMCACHED_WRAPPER, os.path.join(d, "memcached.conf")]


def memcached():
    return Recipe("memcached", memcached_config, memcached_command,
                  ["--preload", "--drain-signal", "USR2"], 1, "USR2", protocol="memcached")


# ---------------------------------------------------------------------------------------------
# A UDP echo server on LISTEN_FDS: datagram in, the same datagram out. Its drain: finish the
# datagram in hand, then exit; what is queued stays on batond's socket for the next generation.

UDP_ECHO = r'''
import os, signal, socket, sys
stop = False
def on_term(sig, frame):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
s = socket.socket(fileno=3)
s.settimeout(0.1)  # look at the flag between datagrams
while not stop:
    try:
        data, peer = s.recvfrom(65536)
        s.sendto(data + f" pid={os.getpid()}".encode(), peer)
    except socket.timeout:
        continue
    except OSError as e:  # a client gone (ICMP), a full buffer: that datagram only
        print(f"udp_echo: {e}", file=sys.stderr, flush=True)
'''


def udp_config(d, port, broken=False):
    del port
    replace_file(os.path.join(d, "udp_echo.py"), UDP_ECHO + ("\nbroken(:\n" if broken else ""))


def udp_command(d):
    import sys
    return [sys.executable, os.path.join(d, "udp_echo.py")]


def udp_echo():
    return Recipe("UDP echo", udp_config, udp_command, ["--ready", "listening"], 1, "TERM",
                  protocol="udp-echo")


# ---------------------------------------------------------------------------------------------
# Load for what loadgen does not speak: one request per connection (per socket for UDP), each
# thread in a loop, every outcome counted. Bounded: stop() or max_seconds ends it.

EXCHANGES = {
    "redis": (b"PING\r\n", lambda r: r == b"+PONG\r\n", lambda r: r.endswith(b"\r\n")),
    "memcached": (b"version\r\n", lambda r: r.startswith(b"VERSION ") and r.endswith(b"\r\n"),
                  lambda r: r.endswith(b"\r\n")),
}


class LineLoad:
    def __init__(self, protocol, port, threads=4, timeout=10.0, max_seconds=600):
        self.protocol, self.port, self.timeout = protocol, port, timeout
        self.end = time.monotonic() + max_seconds
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "refused": 0, "reset": 0, "timeout": 0, "empty": 0, "bad": 0,
                       "other": 0}
        self.pids = set()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _one(self):
        if self.protocol == "udp-echo":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(self.timeout)
            try:
                msg = os.urandom(8).hex().encode()
                s.sendto(msg, ("127.0.0.1", self.port))
                data, _ = s.recvfrom(65536)
            except socket.timeout:
                return "timeout"
            finally:
                s.close()
            if data.startswith(msg + b" pid="):
                self.pids.add(int(data.split(b"pid=")[1]))
                return "ok"
            return "bad"
        req, good, done = EXCHANGES[self.protocol]
        s = socket.socket()
        s.settimeout(self.timeout)
        try:
            s.connect(("127.0.0.1", self.port))
            s.sendall(req)
            data = b""
            while not done(data):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionRefusedError:
            return "refused"
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except socket.timeout:
            return "timeout"
        except OSError:
            return "other"
        finally:
            s.close()
        if not data:
            return "empty"
        return "ok" if good(data) else "bad"

    def _run(self):
        while not self.stopping.is_set() and time.monotonic() < self.end:
            outcome = self._one()
            with self.lock:
                self.counts[outcome] += 1

    def finish(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 5)
        res = dict(self.counts)
        res["failed"] = sum(v for k, v in res.items() if k != "ok")
        res["requests"] = res["failed"] + res["ok"]
        res["pids"] = len(self.pids)
        return res

    def kill(self):
        self.stopping.set()
