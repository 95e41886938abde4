#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""servers.py - make bench, real servers: nginx and lighttpd from Debian packages, each through
batond against the same server started on its own (requests per second), and failed requests
over 200 back-to-back reloads under load through batond. Loopback only.

Usage: tests/bench/servers.py [BUILD]. Prints progress and a markdown section (also written to
BUILD/bench-servers.md) for docs/BENCHMARKS.md. Exits 0 when every measurement ran, whether or
not it met its target (a missed target is printed as MISSED); 1 when one could not run (for
example a server that is not installed: scripts/install-deps installs them).

Throughput: the two setups run side by side, same configuration file but for the port, same
worker count (nginx: a master and 2 workers; lighttpd: one process), same static file; loadgen
alternates between them (AB, BA, AB, ...) in short trials, so that drift on a shared machine
falls on both sides; the figure is the ratio of the medians. A trial during which other
processes used more than QUIET_SHARE of the machine is run again (a bounded number of times).

Knobs (environment), for a quicker look while developing; `make bench` uses the defaults:
  SERVERS_RELOADS=200       reloads per server under load
  SERVERS_TRIALS=12         throughput trials per side
  SERVERS_TRIAL_SECONDS=2   seconds per throughput trial
  SERVERS_ONLY=nginx,lighttpd   servers to measure
  SERVERS_QUIET_WAIT=30     seconds to wait at start for other processes to stop using the CPU
"""
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("BUILD", sys.argv[1] if len(sys.argv) > 1 else "build")

from harness import Load, TestFailure, alive, check, children_of, http_get, wait_for  # noqa: E402
from servers_lib import (NGINX_WORKERS, free_port, kill_all, lighttpd_command,  # noqa: E402
                         lighttpd_config, need, nginx_command, nginx_config,
                         ready_without_notify, start, tree, wait_tree)

NPROC = os.cpu_count() or 1
THREADS = 2 * NPROC  # loadgen threads, as in tests/bench/run
RELOADS = int(os.environ.get("SERVERS_RELOADS", "200"))
TRIALS = int(os.environ.get("SERVERS_TRIALS", "12"))
TRIAL_SECONDS = float(os.environ.get("SERVERS_TRIAL_SECONDS", "2"))
ONLY = os.environ.get("SERVERS_ONLY", "nginx,lighttpd").split(",")
QUIET_WAIT = float(os.environ.get("SERVERS_QUIET_WAIT", "30"))  # seconds, at start
PATH = "/index.html"  # a static file, served from disk by both servers
WARMUP_SECONDS = 1  # loadgen run on each side before the trials
QUIET_SHARE = 0.10  # share of the machine other processes may use during a trial
TRIAL_ATTEMPTS = 3  # runs of one trial at most when other processes disturb it
RELOAD_RUN_LIMIT = 300.0  # seconds the reload run of one server may take
TARGET_RATIO = 0.99
TARGET_FAILED = 0


def say(msg):
    print(f"servers: {msg}", flush=True)


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class CpuMeter:
    """How much of the machine processes outside this tree used, as tests/bench/run counts it:
    the machine's busy time (with irq and softirq) less this process tree's CPU time, less the
    ksoftirqd threads, which mostly carry our own loopback traffic."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK")
        self.ksoftirqd = [p for p in os.listdir("/proc")
                          if p.isdigit() and _comm(p).startswith("ksoftirqd/")]
        self.t0 = self._read()

    def _ticks(self, pid):
        with open(f"/proc/{pid}/stat") as f:
            return sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15])

    def _read(self):
        t = os.times()
        ours = t.user + t.system + t.children_user + t.children_system
        for pid in children_of(os.getpid()):
            try:
                ours += self._ticks(pid) / self.hz
            except OSError:
                continue  # exited since: its time is in its parent's
        ksoft = 0
        for pid in self.ksoftirqd:
            try:
                ksoft += self._ticks(pid)
            except OSError:
                pass
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq
        return time.monotonic(), (v[0] + v[1] + v[2] + v[5] + v[6] - ksoft) / self.hz, ours

    def others_share(self):
        """Share of the machine used by processes outside this tree since construction."""
        w1, busy1, ours1 = self._read()
        w0, busy0, ours0 = self.t0
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(1e-9, (w1 - w0) * NPROC)


def wait_quiet(limit):
    """Waits up to limit seconds for other work on the machine to stop; returns its share."""
    end = time.monotonic() + limit
    while True:
        meter = CpuMeter()
        time.sleep(1.0)
        share = meter.others_share()
        if share <= QUIET_SHARE or time.monotonic() >= end:
            return share
        say(f"other processes use {share * 100:.0f}% of the machine; waiting for them "
            f"(up to {max(0, end - time.monotonic()):.0f}s more)")
        time.sleep(3.0)


# ---------------------------------------------------------------------------------------------
# The two setups.

class Alone:
    """The server started on its own, binding its configured port (no batond, no LISTEN_FDS)."""

    def __init__(self, name, write_config, command, d):
        self.proc = None
        for _ in range(3):
            self.port = free_port()
            write_config(d, self.port)
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("LISTEN_", "NOTIFY_SOCKET", "NGINX"))}
            self.log = open(os.path.join(d, "alone.log"), "w")
            # Its own process group, so that the whole tree is stopped by one signal.
            self.proc = subprocess.Popen(command(d), stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                         process_group=0)
            try:
                wait_for(lambda: self.proc.poll() is not None or self._serves(),
                         f"{name} on its own to serve")
            except TestFailure:
                self.stop()
                raise
            if self.proc.poll() is None:
                return
            self.stop()
        raise TestFailure(f"{name} on its own did not start; see {d}/alone.log")

    def _serves(self):
        try:
            http_get(f"tcp://127.0.0.1:{self.port}", PATH, timeout=2)
            return True
        except (OSError, TestFailure):
            return False

    def stop(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()
        self.proc = None


def cpu_seconds(pid):
    """User and system CPU time of pid itself (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(port, seconds):
    load = Load(f"127.0.0.1:{port}", duration=f"{int(seconds * 1000)}ms", threads=THREADS,
                extra=("--path", PATH))
    try:
        res = load.result()
    finally:
        load.kill()
    return res


def throughput(name, write_config, command, batond_args, n_procs, d):
    """Returns (rps alone, rps through batond, failed in all trials, worst share of the
    machine other processes took in a kept trial, batond's own CPU seconds in the trials)."""
    alone_dir, baton_dir = os.path.join(d, "alone"), os.path.join(d, "batond")
    os.makedirs(alone_dir)
    os.makedirs(baton_dir)
    alone = Alone(name, write_config, command, alone_dir)
    b = None
    try:
        b, baton_port = start(baton_dir, write_config, batond_args, command(baton_dir), n_procs)
        ports = {"alone": alone.port, "batond": baton_port}
        for side in ports:
            measure(ports[side], WARMUP_SECONDS)
        rps = {"alone": [], "batond": []}
        failed = 0
        worst = 0.0
        batond_cpu = cpu_seconds(b.pid)
        for i in range(TRIALS):
            order = ("alone", "batond") if i % 2 == 0 else ("batond", "alone")
            for side in order:
                best = None
                for _ in range(TRIAL_ATTEMPTS):
                    meter = CpuMeter()
                    res = measure(ports[side], TRIAL_SECONDS)
                    share = meter.others_share()
                    if best is None or share < best[1]:
                        best = (res, share)
                    if share <= QUIET_SHARE:
                        break
                    say(f"{name} {side} trial {i + 1}: other processes took "
                        f"{share * 100:.0f}% of the machine; repeating")
                res, share = best
                worst = max(worst, share)
                failed += res["failed"]
                check(res["ok"] > 0, f"{name} {side}: no request succeeded: {res}")
                rps[side].append(res["rps"])
                say(f"{name} {side} trial {i + 1}/{TRIALS}: {res['rps']} req/s")
        batond_cpu = cpu_seconds(b.pid) - batond_cpu
        return rps["alone"], rps["batond"], failed, worst, batond_cpu
    finally:
        if b is not None:
            kill_all(b)
        alone.stop()


def reloads_under_load(name, write_config, command, batond_args, n_procs, d):
    """RELOADS back-to-back reloads (each waits for "reload done", not for the old generation
    to finish draining) under load; returns (loadgen result, reloads done, seconds)."""
    os.makedirs(d)
    b, port = start(d, write_config, batond_args, command(d), n_procs)
    try:
        load = Load(f"127.0.0.1:{port}", duration=f"{int(RELOAD_RUN_LIMIT) + 60}s",
                    threads=THREADS, extra=("--path", PATH))
        t0 = time.monotonic()
        try:
            for gen in range(2, RELOADS + 2):
                mark = b.mark()
                b.signal(signal.SIGHUP)
                m, _ = b.wait_log(rf"generation {gen}: .*reload done|"
                                  rf"reload to generation {gen} failed", start=mark)
                check("reload done" in m.group(0), f"{name}: {m.group(0)}")
                check(time.monotonic() - t0 < RELOAD_RUN_LIMIT,
                      f"{name}: {RELOADS} reloads take more than {RELOAD_RUN_LIMIT:.0f}s")
                if (gen - 1) % 50 == 0:
                    say(f"{name}: {gen - 1}/{RELOADS} reloads")
            took = time.monotonic() - t0
            # Every old generation drains to its end under the load, then the load stops.
            wait_for(lambda: len(tree(b)) == n_procs, "the old generations to finish draining")
            load.proc.send_signal(signal.SIGINT)
            res = load.result()
        finally:
            load.kill()
        done = b.count(r"reload done")
        last = wait_tree(b, n_procs)
        b.signal(signal.SIGTERM)
        check(b.wait_exit() == 0, f"{name}: batond did not exit 0")
        wait_for(lambda: not any(alive(p) for p in last), "the last generation to exit")
        return res, done, took
    finally:
        kill_all(b)


SERVERS = {
    # name: (config writer, command, batond options, processes per generation)
    "nginx": (nginx_config, nginx_command, ["--pass", "nginx", "--ready", None],
              1 + NGINX_WORKERS),
    "lighttpd": (lighttpd_config, lighttpd_command,
                 ["--pass", "env", "--ready", None, "--drain-signal", "INT"], 1),
}


def main():
    ready = ready_without_notify()
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rows, ok = [], True
    t_start = time.monotonic()
    share = wait_quiet(QUIET_WAIT)
    say(f"other processes use {share * 100:.0f}% of the machine at the start")
    for name in ONLY:
        write_config, command, args, n_procs = SERVERS[name]
        args = [ready if a is None else a for a in args]
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o755)  # nginx's workers run as nobody and read the static file
            try:
                say(f"{name}: throughput, {TRIALS} trials of {TRIAL_SECONDS:g}s per side, "
                    f"{THREADS} connections")
                alone, baton, tp_failed, worst, batond_cpu = throughput(name, write_config, command, args,
                                                            n_procs, os.path.join(d, "tp"))
                say(f"{name}: {RELOADS} reloads under load")
                res, done, took = reloads_under_load(name, write_config, command, args, n_procs,
                                                     os.path.join(d, "reloads"))
            except (TestFailure, OSError) as e:
                say(f"{name}: could not measure: {e}")
                ok = False
                continue
        ma, mb = statistics.median(alone), statistics.median(baton)
        ratio = mb / ma if ma else float("nan")
        rows.append({
            "name": name, "args": args, "alone": alone, "batond": baton, "ratio": ratio,
            "tp_failed": tp_failed, "worst": worst, "res": res, "done": done, "took": took,
            "batond_cpu": batond_cpu,
            "pairs": [y / x for x, y in zip(alone, baton) if x],
        })
        say(f"{name}: {mb:.0f} req/s through batond, {ma:.0f} on its own: ratio {ratio:.4f} "
            f"({'met' if ratio >= TARGET_RATIO else 'MISSED'}); {res['failed']} failed of "
            f"{res['requests']} over {done} reloads "
            f"({'met' if res['failed'] <= TARGET_FAILED else 'MISSED'})")

    versions = []
    for prog, flag in (("nginx", "-v"), ("lighttpd", "-v")):
        try:
            out = subprocess.run([need(prog, prog), flag], capture_output=True, text=True,
                                 timeout=30)
            versions.append((out.stdout + out.stderr).strip().splitlines()[0])
        except (OSError, TestFailure, IndexError):
            pass
    md = render(rows, cpu, versions, time.monotonic() - t_start)
    print(md)
    path = os.path.join(ROOT, os.environ["BUILD"], "bench-servers.md")
    with open(path, "w") as f:
        f.write(md)
    say(f"written to {os.path.relpath(path, ROOT)}")
    return 0 if ok and rows else 1


def quartiles(xs):
    if len(xs) < 2:
        return "n/a"
    q = statistics.quantiles(xs, n=4)
    return f"{q[0]:.3f} to {q[2]:.3f}"


def render(rows, cpu, versions, seconds):
    out = ["## Real servers", "",
           f"`tests/bench/servers.py` ({seconds:.0f}s), {NPROC} cores ({cpu}), kernel "
           f"{os.uname().release}; {', '.join(versions)} (Debian packages). loadgen with "
           f"{THREADS} connections, one request per connection, `GET {PATH}` (a static file).",
           "",
           "| server | batond options | req/s on its own | req/s through batond | ratio "
           "(target >= 0.99) | reloads under load | failed (target 0) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        res = r["res"]
        out.append(
            f"| {r['name']} | `{' '.join(r['args'])}` | {statistics.median(r['alone']):.0f} | "
            f"{statistics.median(r['batond']):.0f} | {r['ratio']:.4f} "
            f"{'met' if r['ratio'] >= TARGET_RATIO else 'MISSED'} | {r['done']} in "
            f"{r['took']:.0f}s, {res['requests']} requests | {res['failed']} "
            f"{'met' if res['failed'] <= TARGET_FAILED else 'MISSED'} |")
    out.append("")
    for r in rows:
        out.append(f"- {r['name']}: trials (req/s), on its own {r['alone']}, through batond "
                   f"{r['batond']}; the {len(r['pairs'])} paired ratios (trials next to each other) have "
                   f"median {statistics.median(r['pairs']):.4f} and quartiles "
                   f"{quartiles(r['pairs'])}; batond itself used {r['batond_cpu'] * 1000:.0f} ms of "
                   f"CPU in all its trials; other processes took at most "
                   f"{r['worst'] * 100:.0f}% of the machine during a kept trial; "
                   f"{r['tp_failed']} failed in the trials.")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
