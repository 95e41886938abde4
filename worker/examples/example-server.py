#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""example-server.py - a baton worker in Python: LISTEN_FDS and NOTIFY_SOCKET, nothing else.

A server needs no library to take part in zero-downtime restarts under batond (default
`--pass env`) or systemd socket activation. Three conventions, all from systemd:

  LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES  The listeners are fds 3, 4, ... (LISTEN_FDS of them)
                                          if LISTEN_PID is our pid; their names are the
                                          colon-separated LISTEN_FDNAMES. See sd_listen_fds(3).
  NOTIFY_SOCKET                           A Unix datagram socket ("@name" is abstract): send
                                          READY=1 once serving, STATUS=... as free text,
                                          STOPPING=1 when draining. See sd_notify(3).
  SIGTERM                                 The drain signal: stop accepting, finish every
                                          connection already accepted, exit 0.

Why this is enough: batond keeps its own copy of every listener for its whole life, so the
kernel keeps queueing new connections while one generation of workers drains and the next
starts; whatever this process has not accepted, the next one will. The one thing a worker
must not do is drop a connection it has accepted.

This server answers each HTTP request (GET or HEAD) with "pid=N gen=G worker=W", one
connection per request, on a thread of its own. Run it as

    batond -l 127.0.0.1:8080 -n 4 -- python3 worker/examples/example-server.py
    systemd-socket-activate -l 8080 python3 worker/examples/example-server.py

Exit status: 0 after a drain, 1 without listeners or on error.
"""
import os
import selectors
import signal
import socket
import sys
import threading

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START
REQUEST_MAX = 8192  # bytes of request line and headers
CLIENT_TIMEOUT = 30.0  # seconds for a client to send its request, or to read the reply
LINGER_TIMEOUT = 2.0  # seconds for the client to close after our reply, before we close


def log(msg):
    # One write per line, so that lines from several workers sharing stderr do not mix.
    os.write(2, f"example-server: {msg}\n".encode(errors="replace"))


def take_listeners():
    """The sockets passed with LISTEN_FDS, as (socket, name) pairs; [] if none are for us.

    The variables are removed from the environment, so that a program we might start does
    not take our fds for its own, and the fds are made close-on-exec for the same reason.
    """
    pid, fds, names = (os.environ.pop(k, None)
                       for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"))
    if not fds or pid != str(os.getpid()):
        return []
    names = names.split(":") if names else []
    out = []
    for i in range(int(fds)):
        fd = LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        s = socket.socket(fileno=fd)
        # Shared with batond and the other workers: never block in accept() when another
        # process took the connection first. batond's listeners are non-blocking already.
        s.setblocking(False)
        out.append((s, names[i] if i < len(names) else "unknown"))
    return out


def notify(text):
    """Sends one sd_notify datagram, e.g. "READY=1"; does nothing without NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:  # close-on-exec (PEP 446)
        try:
            s.sendto(text.encode(), addr)
        except OSError as e:
            log(f"notify {text.splitlines()[0]}: {e.strerror}, ignoring")


class Server:
    def __init__(self, listeners):
        self.listeners = listeners
        self.body = (f"pid={os.getpid()} gen={os.environ.get('BATON_GENERATION', '0')} "
                     f"worker={os.environ.get('BATON_WORKER', '0')}\n").encode()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.inflight = 0
        self.stop_signal = None
        # The signal handler only records the signal; the wakeup fd makes select() return.
        self.wake_r, self.wake_w = socket.socketpair()
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)

    def on_signal(self, signo, frame):
        if self.stop_signal is None:
            self.stop_signal = signo

    def serve(self):
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for signo in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signo, self.on_signal)
        sel = selectors.DefaultSelector()
        for s, _ in self.listeners:
            sel.register(s, selectors.EVENT_READ)
        sel.register(self.wake_r, selectors.EVENT_READ)

        log(f"pid {os.getpid()} serving on {len(self.listeners)} listeners")
        notify("READY=1\nSTATUS=serving")
        while self.stop_signal is None:
            for key, _ in sel.select():
                if key.fileobj is self.wake_r:
                    try:
                        self.wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                elif self.stop_signal is None:
                    self.accept(key.fileobj)
        self.drain(sel)

    def accept(self, listener):
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up: nothing to do
        conn.settimeout(CLIENT_TIMEOUT)
        with self.lock:
            self.inflight += 1
        threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def drain(self, sel):
        # Stop accepting by not looking at the listeners any more. Do not close them to stop:
        # under systemd-socket-activate this process holds the only reference, and the last
        # close resets every connection still queued. They close when the process exits.
        sel.close()
        name = signal.Signals(self.stop_signal).name
        with self.lock:
            log(f"{name}: stopped accepting, draining {self.inflight} connections")
            notify(f"STOPPING=1\nSTATUS=draining {self.inflight} connections")
            # batond kills us at its drain deadline; nothing here needs a timeout of its own.
            while self.inflight > 0:
                self.idle.wait()
        log("drained, exiting")

    def handle(self, conn):
        try:
            with conn:
                self.answer(conn)
        except OSError:
            pass  # the client reset or timed out: nobody is left to answer
        finally:
            with self.lock:
                self.inflight -= 1
                self.idle.notify_all()

    def answer(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > REQUEST_MAX:
                return self.reply(conn, 431, b"Request Header Fields Too Large\n", False)
            chunk = conn.recv(4096)
            if not chunk:
                return  # closed before a whole request: nobody waits for a reply
            data += chunk
        method = data.split(b" ", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return self.reply(conn, 405, b"Method Not Allowed\n", False)
        self.reply(conn, 200, self.body, method == b"HEAD")

    def reply(self, conn, status, body, head):
        reason = {200: "OK", 405: "Method Not Allowed", 431: "Request Header Fields Too Large"}
        conn.sendall((f"HTTP/1.1 {status} {reason[status]}\r\n"
                      f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n").encode() + (b"" if head else body))
        # Close gently: FIN first, then wait for the client's. Closing with unread bytes (a
        # pipelined request) would send a reset, and a reset can discard our unread reply.
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(LINGER_TIMEOUT)
        while conn.recv(4096):
            pass


def main():
    if len(sys.argv) > 1:
        print(__doc__.strip())
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    listeners = take_listeners()
    if not listeners:
        log("no listeners: run under batond or systemd socket activation (LISTEN_FDS)")
        return 1
    Server(listeners).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
