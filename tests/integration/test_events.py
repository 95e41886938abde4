# SPDX-License-Identifier: MIT
"""test_events.py - batonctl events: a whole reload, a rolled-back one and a stop, in order;
replay with --since; a reader that never reads does not block batond."""
import json
import os
import socket
import subprocess
import tempfile
import threading

from harness import Batond, DEADLINE, bin_path, broken_while, check, http_get, wait_for

HTTPD = bin_path("example-httpd")


class EventStream:
    """batonctl events (with args) running, its JSON lines collected by a thread."""

    def __init__(self, sock, *args, preexec_fn=None):
        self.proc = subprocess.Popen([bin_path("batonctl"), "-c", sock, "events", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec_fn)
        self.lines = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(json.loads(line))

    def events(self):
        with self.lock:
            return list(self.lines)

    def wait(self, pred, what):
        return wait_for(lambda: next((e for e in self.events() if pred(e)), None), what)

    def finish(self):
        """Waits for the stream to end (batond gone); returns batonctl's exit status."""
        try:
            rc = self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.thread.join(timeout=10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ctl(sock, *args):
    p = subprocess.run([bin_path("batonctl"), "-c", sock, *args], capture_output=True, text=True,
                       timeout=120)
    return p.returncode, p.stdout, p.stderr


def outline(events, gens):
    """The generation-level and stop events of gens (None: those of no generation), as
    (name, generation) pairs, in stream order."""
    keep = {"generation_starting", "generation_ready", "generation_draining",
            "generation_drained", "reload_rolled_back", "stop_refusing", "stop_queues_done",
            "stop_draining", "exit"}
    return [(e["event"], e.get("generation")) for e in events
            if e["event"] in keep and e.get("generation") in gens]


def test_events_show_a_reload_a_rolled_back_reload_and_a_stop_in_order():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/ctl.sock"
        flag = f"{d}/broken"
        b = Batond(["-c", sock, "-l", "127.0.0.1:0", "-n", "2"],
                   broken_while(flag, "exit 3", [HTTPD]))
        stream = None
        try:
            b.wait_log(r"generation 1: 2/2 workers ready")
            stream = EventStream(sock)
            hello = stream.wait(lambda e: e["event"] == "connected", "the connected line")
            check(hello["batond"]["pid"] == b.pid and hello["batond"]["control"] == sock and
                  hello["batond"]["listeners"][0]["name"] == "listen0", hello)
            rc, out, err = ctl(sock, "reload")
            check(rc == 0, f"reload: {rc} {out} {err}")
            stream.wait(lambda e: e["event"] == "generation_drained" and e["generation"] == 1,
                        "generation 1 drained")
            open(flag, "w").close()
            rc, out, err = ctl(sock, "reload")
            check(rc == 1 and "rolled back" in err, f"broken reload: {rc} {out} {err}")
            rb = stream.wait(lambda e: e["event"] == "reload_rolled_back", "the rollback")
            check(rb["generation"] == 3 and rb["reason"] == "exited" and
                  rb["exit_status"] == 3 and rb["pid"] > 0, rb)
            stream.wait(lambda e: e["event"] == "generation_drained" and e["generation"] == 3,
                        "generation 3 gone")
            b.signal(15)
            check(b.wait_exit() == 0, "exit status")
            check(stream.finish() == 0, "batonctl events did not end with batond")
            ev = stream.events()
            check(ev[0]["event"] == "connected", ev[0])
            body = ev[1:]
            seqs = [e["seq"] for e in body]
            check(seqs == list(range(hello["next_seq"], hello["next_seq"] + len(seqs))),
                  f"sequence numbers are not consecutive: {seqs}")
            clock = [e["monotonic_usec"] for e in body]
            check(clock == sorted(clock), "monotonic timestamps go back")
            # Worker events of the good reload: every worker spawned and ready, by pid.
            spawned = {e["pid"] for e in body if e["event"] == "worker_spawned" and
                       e["generation"] == 2}
            ready = {e["pid"] for e in body if e["event"] == "worker_ready" and
                     e["generation"] == 2}
            check(len(spawned) == 2 and spawned == ready, f"{spawned} vs {ready}")
            ok = next(e for e in body if e["event"] == "generation_ready")
            check(ok["generation"] == 2 and ok["reload"] is True and ok["workers"] == 2 and
                  ok["duration_usec"] > 0, ok)
            check(outline(body, (2, None)) == [
                ("generation_starting", 2), ("generation_ready", 2),
                ("stop_refusing", None), ("stop_queues_done", None), ("stop_draining", None),
                ("generation_drained", 2), ("exit", None)], outline(body, (2, None)))
            check(outline(body, (1, 3)) == [
                ("generation_draining", 1), ("generation_drained", 1),
                ("generation_starting", 3), ("reload_rolled_back", 3),
                ("generation_drained", 3)], outline(body, (1, 3)))
            exited = [e for e in body if e["event"] == "worker_exited" and e["generation"] == 2]
            check(sorted(e["pid"] for e in exited) == sorted(spawned), exited)
            check(body[-1]["event"] == "exit" and body[-1]["exit_code"] == 0, body[-1])
        finally:
            if stream:
                stream.kill()
            b.cleanup()


def test_since_replays_what_the_ring_holds():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/ctl.sock"
        b = Batond(["-c", sock, "-l", "127.0.0.1:0"], [HTTPD])
        stream = None
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            check(ctl(sock, "reload")[0] == 0, "reload")
            b.wait_log(r"generation 1: all workers exited")
            stream = EventStream(sock, "--since", "0")
            stream.wait(lambda e: e["event"] == "generation_drained", "the replay")
            ev = stream.events()
            check(ev[0]["event"] == "connected" and ev[0]["oldest_seq"] == 1, ev[0])
            names = [e["event"] for e in ev[1:]]
            check(names[:4] == ["generation_starting", "worker_spawned", "worker_ready",
                                "generation_ready"] and ev[1]["seq"] == 1, names)
            check("generation_draining" in names, names)
            rc, _, err = ctl(sock, "events", "--since", "x")
            check(rc == 2 and "--since" in err, err)
        finally:
            if stream:
                stream.kill()
            b.cleanup()


def test_a_reader_that_never_reads_does_not_block_batond_and_is_told_what_it_missed():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/ctl.sock"
        # 32 workers that are ready at once: each reload makes ~100 events.
        b = Batond(["-c", sock, "-l", "127.0.0.1:0", "-n", "32", "--ready", "none"],
                   ["sleep", "600"])
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            b.wait_log(r"generation 1: 32/32 workers ready")
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.connect(sock)
            slow.sendall(b"events\n")
            # More than the ring and both socket buffers hold, while nobody reads.
            for i in range(2, 42):
                rc, out, err = ctl(sock, "reload")
                check(rc == 0, f"reload {i}: {rc} {out} {err}")
            b.wait_log(r"generation 40: all workers exited")
            rc, out, _ = ctl(sock, "status")
            check(rc == 0 and "generation 41 (serving)" in out, out)
            # Now read it all: a "dropped" line counts what was forgotten meanwhile.
            slow.settimeout(DEADLINE)
            data = b""
            while b'"event":"generation_drained","generation":40' not in data:
                chunk = slow.recv(65536)
                check(chunk, "the stream ended")
                data += chunk
            # Whole lines only: the last chunk may end in the middle of a later event.
            data = data[:data.rindex(b"\n") + 1]
            lines = [json.loads(l) for l in data.decode().splitlines()[1:] if l]
            dropped = [e for e in lines if e["event"] == "dropped"]
            check(len(dropped) >= 1 and dropped[0]["count"] > 0, f"no dropped line: {dropped}")
            after = [e["seq"] for e in lines[lines.index(dropped[-1]) + 1:]]
            check(after[0] == dropped[-1]["next_seq"] and
                  after == list(range(after[0], after[0] + len(after))),
                  "events after the gap are not consecutive")
        finally:
            slow.close()
            b.cleanup()


def test_event_numbers_go_on_across_an_upgrade_and_metrics_come_back():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/ctl.sock"
        b = Batond(["-c", sock, "-l", "127.0.0.1:0", "--metrics", f"unix:{d}/m.sock"], [HTTPD])
        stream = None
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            stream = EventStream(sock)
            hello = stream.wait(lambda e: e["event"] == "connected", "the connected line")
            check(ctl(sock, "upgrade")[0] == 0, "upgrade")
            started = stream.wait(lambda e: e["event"] == "upgrade_started", "upgrade_started")
            check(started["seq"] == hello["next_seq"], started)
            check(stream.finish() == 0, "the stream did not end at the exec")
            b.wait_log(r"upgrade: took over")
            after = EventStream(sock, "--since", "0")
            try:
                up = after.wait(lambda e: e["event"] == "upgraded", "upgraded")
                first = after.events()[0]
                # The new image numbers on from where the old one stopped; what the old one
                # held is gone, and a replay from 0 says so.
                check(up["seq"] == started["seq"] + 1 and first["oldest_seq"] == up["seq"],
                      (up, first))
                check(after.events()[1]["event"] == "dropped" and
                      after.events()[1]["count"] == up["seq"] - 1, after.events()[1])
                check(up["generation"] == 1 and up["workers"] == 1, up)
            finally:
                after.kill()
            # The new image serves the metrics again, at the same place.
            body = http_get(f"unix:{d}/m.sock", "/metrics", timeout=DEADLINE)
            check("\nbaton_serving_generation 1\n" in body, body[:200])
        finally:
            if stream:
                stream.kill()
            b.cleanup()


def test_a_batond_run_by_nobody_streams_events_and_serves_metrics_to_nobody():
    def nobody():
        os.setgid(65534)
        os.setgroups([])
        os.setuid(65534)

    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)
        sock = f"{d}/ctl.sock"
        b = Batond(["-c", sock, "-l", "127.0.0.1:0", "--metrics", "127.0.0.1:0"], [HTTPD],
                   preexec_fn=nobody)
        stream = None
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            m, _ = b.wait_log(r"metrics: serving (http://\S+)")
            stream = EventStream(sock, "--since", "1", preexec_fn=nobody)
            stream.wait(lambda e: e["event"] == "generation_ready", "the replay")
            first = stream.events()[0]
            check(first["event"] == "connected" and first["batond"]["pid"] == b.pid, first)
            body = subprocess.run(["curl", "-sf", m.group(1)], capture_output=True, text=True,
                                  timeout=60, preexec_fn=nobody).stdout
            check("\nbaton_serving_generation 1\n" in body, body[:200])
        finally:
            if stream:
                stream.kill()
            b.cleanup()
