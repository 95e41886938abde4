#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""servers.py - make bench, real servers: nginx and lighttpd from Debian packages, each through
batond against the same server started on its own (requests per second), and failed requests
over 200 back-to-back reloads under load through batond. Loopback only.

Usage: tests/bench/servers.py [BUILD]. Prints progress and a markdown section (also written to
BUILD/bench-servers.md) for docs/BENCHMARKS.md, and every trial to BUILD/bench-servers.json.
Exits 0 when every measurement ran, whether or not it met its target (a missed target is
printed as MISSED); 1 when one could not run (for example a server that is not installed:
scripts/install-deps installs them).

Throughput: three setups run side by side, idle but for the one under load: the server through
batond, the server on its own, and a second copy on its own (the A/A control). Same
configuration file but for the port, same worker count (nginx: a master and 2 workers;
lighttpd: one process), same static file, same listen backlog (batond --backlog is set to the
server's own, and ss checks it). A round is one short trial of each setup; the order rotates
through every permutation (with the control off: AB, BA, AB, ...), so that each setup runs in
each place equally often and drift falls on all of them alike. Every BLOCK rounds, every
setup is stopped and started afresh: one set of processes can serve a little faster or slower
than another for as long as it runs (where the scheduler puts it, what it shares a cache
with), and a run of one set would measure that instead of batond. Per round, the ratio batond
/ on its own and the control's (second copy / first), from trials next to each other in time.
Reported: the median of the per-block medians of each kind of ratio, with a distribution-free
95% confidence interval over the blocks (order statistics of the binomial: no assumption about
the noise; the blocks, not the rounds, are independent). A round during which other
processes used more than QUIET_SHARE of the machine is run again (a bounded number of times
and seconds).

This VM's speed varies by some 10% from one second to the next, for every process at once, so
req/s carries that noise. The CPU cost figure divides it out: the CPU time of the server's
processes (and batond's on its side) over a trial, divided by loadgen's over the same trial,
compared per round like req/s. It says whether serving through batond costs more CPU per
reply; it does not see time spent waiting, so the machine's idle share is shown beside it.

Verdicts, each on its interval: req/s (target >= TARGET_RATIO) is "met" when the lower bound
is at least the target and "MISSED" when the upper bound is below it; CPU cost (target <=
1 / TARGET_RATIO) is "met" when the upper bound is at most that and "MISSED" when the lower
bound is above; anything else is "not resolved", and the A/A control shows the noise.

Knobs (environment), for a quicker look while developing; `make bench` uses the defaults:
  SERVERS_RELOADS=200       reloads per server under load
  SERVERS_TRIALS=96         throughput rounds per server (one trial of each setup per round)
  SERVERS_TRIAL_SECONDS=0.5 seconds per throughput trial
  SERVERS_CONTROL=1         0: no A/A control (rounds of two trials, AB, BA, ...)
  SERVERS_BLOCK=6           rounds run by one set of processes before all are started afresh
  SERVERS_REDO_BUDGET=120   seconds per server that disturbed rounds may take to be run again
  SERVERS_ONLY=nginx,lighttpd   servers to measure
  SERVERS_QUIET_WAIT=30     seconds to wait at start for other processes to stop using the CPU
"""
import itertools
import json
import math
import os
import resource
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
TRIALS = int(os.environ.get("SERVERS_TRIALS", "96"))  # rounds: 16 blocks, each every order
TRIAL_SECONDS = float(os.environ.get("SERVERS_TRIAL_SECONDS", "0.5"))
CONTROL = os.environ.get("SERVERS_CONTROL", "1") != "0"
BLOCK = int(os.environ.get("SERVERS_BLOCK", "6"))  # rounds before every setup is restarted
REDO_BUDGET = float(os.environ.get("SERVERS_REDO_BUDGET", "120"))  # seconds per server
ONLY = os.environ.get("SERVERS_ONLY", "nginx,lighttpd").split(",")
QUIET_WAIT = float(os.environ.get("SERVERS_QUIET_WAIT", "30"))  # seconds, at start
PATH = "/index.html"  # a static file, served from disk by both servers
WARMUP_SECONDS = 0.5  # loadgen run on each setup before its first trial
QUIET_SHARE = 0.10  # share of the machine other processes may use during a round
TRIAL_ATTEMPTS = 3  # runs of one round at most when other processes disturb it
REDO_QUIET_WAIT = 10.0  # seconds to wait for quiet before a round is run again
CONFIDENCE = 0.95  # of the intervals around each median ratio
RELOAD_RUN_LIMIT = 300.0  # seconds the reload run of one server may take
TARGET_RATIO = 0.99
TARGET_COST = 1 / TARGET_RATIO  # server CPU per reply, batond / on its own, at most
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


def cpu_ns(pids):
    """CPU time of every thread of pids, in ns: schedstat's run time, exact where utime and stime
    come in 10 ms ticks (a 1 s trial of a server is some 50 ticks)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


def children_cpu_ns():
    """CPU time of this process's reaped children (loadgen, once a trial's run has ended), in
    ns: getrusage() has microseconds where os.times() has clock ticks."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((r.ru_utime + r.ru_stime) * 1e9)


def idle_seconds():
    """Idle and iowait time of the whole machine, in seconds (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[3] + v[4]) / os.sysconf("SC_CLK_TCK")


def listen_backlog(port):
    """The backlog of the TCP listener on 127.0.0.1:port: what ss shows as Send-Q."""
    out = subprocess.run([need("ss", "iproute2"), "-Htln", f"sport = :{port}"],
                         capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[3] == f"127.0.0.1:{port}":
            return int(cols[2])
    raise TestFailure(f"no listener on 127.0.0.1:{port} in ss -tln")


def measure(port, seconds):
    load = Load(f"127.0.0.1:{port}", duration=f"{int(seconds * 1000)}ms", threads=THREADS,
                extra=("--path", PATH))
    try:
        res = load.result()
    finally:
        load.kill()
    return res


def trial(port, pids, seconds):
    """One loadgen run against port. Returns its req/s, replies and failed requests, the CPU ns
    of pids (the setup's processes) and of loadgen, and the machine's idle share meanwhile (to
    1% at 0.5 s: /proc/stat counts in ticks)."""
    cpu0, load0, idle0, t0 = cpu_ns(pids), children_cpu_ns(), idle_seconds(), time.monotonic()
    res = measure(port, seconds)
    return {"rps": res["rps"], "ok": res["ok"], "failed": res["failed"],
            "cpu_ns": cpu_ns(pids) - cpu0, "load_cpu_ns": children_cpu_ns() - load0,
            "idle": (idle_seconds() - idle0) / ((time.monotonic() - t0) * NPROC)}


def median_ci(xs):
    """(median, low, high): the median of xs and a distribution-free CONFIDENCE interval for it,
    the order statistics x(k) and x(n+1-k) with k the largest for which
    P(Binomial(n, 1/2) < k) <= (1 - CONFIDENCE) / 2. low and high are None below 6 values."""
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return float("nan"), None, None
    k, below = 0, 0.0
    while True:
        p = math.comb(n, k) / 2 ** n
        if below + p > (1 - CONFIDENCE) / 2:
            break
        below += p
        k += 1
    if k == 0:
        return statistics.median(xs), None, None
    return statistics.median(xs), xs[k - 1], xs[n - k]


def block_ci(per_round):
    """median_ci() of the medians of each BLOCK of rounds. The rounds that one set of processes
    ran are not independent of each other (the set's own speed runs through them); the sets
    are, so the interval is taken over them."""
    return median_ci([statistics.median(per_round[i:i + BLOCK])
                      for i in range(0, len(per_round), BLOCK)])


def verdict(ci, target, higher_is_better=True):
    """"met" when the whole interval is on the right side of target, "MISSED" when it is on the
    wrong side, otherwise "not resolved": this run cannot tell, and the A/A control's interval
    shows how wide its noise is."""
    _, lo, hi = ci
    if lo is None:
        return "too few rounds"
    if not higher_is_better:
        lo, hi, target = -hi, -lo, -target
    if lo >= target:
        return "met"
    if hi < target:
        return "MISSED"
    return "not resolved"


class Setups:
    """One fresh set of the setups under d, running side by side: the server on its own
    ("alone"), through batond ("batond") and, with CONTROL, a second copy on its own."""

    def __init__(self, name, write_config, command, batond_args, n_procs, backlog, d):
        self.names = ["alone", "batond"] + (["control"] if CONTROL else [])
        self.procs, self.b = {}, None
        dirs = {s: os.path.join(d, s) for s in self.names}
        for s in self.names:
            os.makedirs(dirs[s])
        try:
            for s in self.names:
                if s != "batond":
                    self.procs[s] = Alone(name, write_config, command, dirs[s])
            self.b, baton_port = start(dirs["batond"], write_config, batond_args,
                                       command(dirs["batond"]), n_procs)
            self.ports = {s: p.port for s, p in self.procs.items()}
            self.ports["batond"] = baton_port
            # Each tree is fixed while the setups run: no reload, no restart.
            self.pids = {s: [p.proc.pid, *children_of(p.proc.pid)]
                         for s, p in self.procs.items()}
            self.pids["batond"] = [self.b.pid, *tree(self.b)]
            backlogs = {s: listen_backlog(self.ports[s]) for s in self.names}
            check(set(backlogs.values()) == {backlog},
                  f"{name}: listen backlogs differ: {backlogs} (expected {backlog})")
            for s in self.names:
                measure(self.ports[s], WARMUP_SECONDS)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.b is not None:
            kill_all(self.b)
            self.b = None
        for p in self.procs.values():
            p.stop()


def throughput(name, write_config, command, batond_args, n_procs, backlog, d):
    """TRIALS rounds of one trial per setup, each BLOCK rounds with fresh processes. Returns a
    dict: "trials", per setup the kept trials in order (as trial() returns them); "rounds":
    the order of each kept round and the share of the machine others took in it; "repeated":
    rounds run again; "blocks"; "batond_cpu": batond's own CPU seconds over all the rounds;
    "backlog"."""
    setups = ["alone", "batond"] + (["control"] if CONTROL else [])
    orders = list(itertools.permutations(setups))
    trials = {s: [] for s in setups}
    rounds, repeated, redo_used, batond_cpu, blocks = [], 0, 0.0, 0.0, 0
    for i in range(TRIALS):
        if i % BLOCK == 0:
            run = Setups(name, write_config, command, batond_args, n_procs, backlog,
                         os.path.join(d, f"block{blocks}"))
            blocks += 1
            cpu_start = cpu_seconds(run.b.pid)
        try:
            order = orders[i % len(orders)]
            best = None
            for attempt in range(TRIAL_ATTEMPTS):
                meter = CpuMeter()
                got = {}
                for s in order:
                    got[s] = trial(run.ports[s], run.pids[s], TRIAL_SECONDS)
                    check(got[s]["ok"] > 0, f"{name} {s}: no request succeeded: {got[s]}")
                share = meter.others_share()
                if best is None or share < best[1]:
                    best = (got, share)
                if share <= QUIET_SHARE:
                    break
                if attempt + 1 == TRIAL_ATTEMPTS or redo_used >= REDO_BUDGET:
                    say(f"{name} round {i + 1}: other processes took {share * 100:.0f}% of "
                        f"the machine; keeping the quietest attempt")
                    break
                say(f"{name} round {i + 1}: other processes took {share * 100:.0f}% of the "
                    f"machine; running it again")
                waited = time.monotonic()
                wait_quiet(min(REDO_QUIET_WAIT, REDO_BUDGET - redo_used))
                redo_used += time.monotonic() - waited + len(order) * TRIAL_SECONDS
                repeated += 1
            got, share = best
            for s in setups:
                trials[s].append(got[s])
            rounds.append((order, share))
            say(f"{name} round {i + 1}/{TRIALS} ({''.join(s[0].upper() for s in order)}): "
                + ", ".join(f"{s} {got[s]['rps']} req/s" for s in setups))
            if (i + 1) % BLOCK == 0 or i + 1 == TRIALS:
                batond_cpu += cpu_seconds(run.b.pid) - cpu_start
                check(len(tree(run.b)) == n_procs,
                      f"{name}: batond's workers changed during the rounds")
                run.stop()
        except BaseException:
            run.stop()
            raise
    return {"trials": trials, "rounds": rounds, "repeated": repeated, "blocks": blocks,
            "batond_cpu": batond_cpu, "backlog": backlog}


def ratios(tp, side, base="alone"):
    """Per round: req/s of side / req/s of base; and the server's CPU per reply measured against
    loadgen's in the same trial, side / base. The second cancels how fast the machine ran
    during each trial (this VM's speed varies by 10% from one second to the next, for all
    processes at once), which req/s and plain CPU per reply both carry."""
    rps, cpu = [], []
    for x, y in zip(tp["trials"][base], tp["trials"][side]):
        # Never 0: a trial with no reply fails the run, and every reply costs CPU on both ends.
        rps.append(y["rps"] / x["rps"])
        cpu.append((y["cpu_ns"] / y["load_cpu_ns"]) / (x["cpu_ns"] / x["load_cpu_ns"]))
    return rps, cpu


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
    # name: (config writer, command, batond options, processes per generation, listen backlog
    # the server gives a socket it binds itself: nginx's NGX_LISTEN_BACKLOG on Linux, lighttpd's
    # server.listen-backlog default. Neither changes the backlog of a socket it inherits, so
    # batond is given the same one; batond's own default is 4096.)
    "nginx": (nginx_config, nginx_command, ["--pass", "nginx", "--ready", None],
              1 + NGINX_WORKERS, 511),
    "lighttpd": (lighttpd_config, lighttpd_command,
                 ["--pass", "env", "--ready", None, "--drain-signal", "INT"], 1, 1024),
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
    load_before = os.getloadavg()
    for name in ONLY:
        write_config, command, args, n_procs, backlog = SERVERS[name]
        args = [ready if a is None else a for a in args] + ["--backlog", str(backlog)]
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o755)  # nginx's workers run as nobody and read the static file
            try:
                say(f"{name}: throughput, {TRIALS} rounds of {TRIAL_SECONDS:g}s trials, "
                    f"{THREADS} connections")
                tp = throughput(name, write_config, command, args, n_procs, backlog,
                                os.path.join(d, "tp"))
                say(f"{name}: {RELOADS} reloads under load")
                res, done, took = reloads_under_load(name, write_config, command, args, n_procs,
                                                     os.path.join(d, "reloads"))
            except (TestFailure, OSError) as e:
                say(f"{name}: could not measure: {e}")
                ok = False
                continue
        rps, cpu_ratio = ratios(tp, "batond")
        idle = tuple(statistics.median(x["idle"] for x in tp["trials"][s])
                     for s in ("batond", "alone"))
        row = {"name": name, "args": args, "tp": tp, "res": res, "done": done, "took": took,
               "rps": block_ci(rps), "cpu": block_ci(cpu_ratio), "idle": idle,
               "rps_all": rps, "cpu_all": cpu_ratio, "control": None}
        row["verdict"] = (verdict(row["rps"], TARGET_RATIO),
                          verdict(row["cpu"], TARGET_COST, higher_is_better=False))
        if CONTROL:
            c_rps, c_cpu = ratios(tp, "control")
            row["control"] = (block_ci(c_rps), block_ci(c_cpu), c_rps, c_cpu)
        rows.append(row)
        say(f"{name}: through batond / on its own, {len(rps)} rounds in {tp['blocks']} blocks: "
            f"req/s {fmt_ci(*row['rps'])} ({row['verdict'][0]}), CPU cost {fmt_ci(*row['cpu'])} "
            f"({row['verdict'][1]})"
            + (f"; A/A control: req/s {fmt_ci(*row['control'][0])}, CPU cost "
               f"{fmt_ci(*row['control'][1])}" if CONTROL else "")
            + f"; {res['failed']} failed of {res['requests']} over {done} reloads "
            f"({'met' if res['failed'] <= TARGET_FAILED else 'MISSED'})")
    load_after = os.getloadavg()

    versions = []
    for prog, flag in (("nginx", "-v"), ("lighttpd", "-v")):
        try:
            out = subprocess.run([need(prog, prog), flag], capture_output=True, text=True,
                                 timeout=30)
            versions.append((out.stdout + out.stderr).strip().splitlines()[0])
        except (OSError, TestFailure, IndexError):
            pass
    md = render(rows, cpu, versions, time.monotonic() - t_start, load_before, load_after)
    print(md)
    path = os.path.join(ROOT, os.environ["BUILD"], "bench-servers.md")
    with open(path, "w") as f:
        f.write(md)
    # Every trial, for a second look at the figures.
    with open(path[:-len(".md")] + ".json", "w") as f:
        json.dump([{"server": r["name"], "args": r["args"], **r["tp"], "reloads": r["res"]}
                   for r in rows], f)
    say(f"written to {os.path.relpath(path, ROOT)} and bench-servers.json")
    return 0 if ok and rows else 1


def fmt_ci(m, lo, hi):
    """median [low, high]"""
    return f"{m:.4f} [n/a]" if lo is None else f"{m:.4f} [{lo:.4f}, {hi:.4f}]"


def spread(xs, fmt="{:.0f}"):
    """min / quartiles / max."""
    if len(xs) < 2:
        return "n/a"
    q = statistics.quantiles(xs, n=4)
    return " / ".join(fmt.format(v) for v in (min(xs), q[0], q[1], q[2], max(xs)))


def render(rows, cpu, versions, seconds, load_before, load_after):
    n_setups = 3 if CONTROL else 2
    pct = f"{CONFIDENCE * 100:.0f}%"
    out = ["## Real servers", "",
           f"`tests/bench/servers.py {os.environ['BUILD']}` ({seconds:.0f}s), {NPROC} cores "
           f"({cpu}), kernel {os.uname().release}; {', '.join(versions)} (Debian packages). "
           f"loadgen with {THREADS} connections, one request per connection, `GET {PATH}` (a "
           f"static file). Load average before/after: "
           f"{' '.join(f'{x:.2f}' for x in load_before)} / "
           f"{' '.join(f'{x:.2f}' for x in load_after)}.",
           "",
           f"Throughput: {TRIALS} rounds per server, each one {TRIAL_SECONDS:g} s trial of "
           + ("the server through batond, on its own, and a second copy on its own (the A/A "
              "control)" if CONTROL else "the server through batond and on its own")
           + f", in all {math.factorial(n_setups)} orders in turn, every setup started afresh "
           f"every {BLOCK} rounds ({max(r['tp']['blocks'] for r in rows) if rows else 0} sets "
           f"of processes). Each ratio is taken within "
           f"a round; shown is the median of the per-block medians of the ratios and its "
           f"distribution-free {pct} confidence interval over the blocks (order statistics). "
           f"CPU cost: the CPU time of the "
           f"server's processes (and of batond itself on its side) over a trial, divided by "
           f"loadgen's in the same trial, so that the machine's speed at the time cancels. "
           f"Verdicts: req/s is met when its interval's lower bound is >= {TARGET_RATIO} and "
           f"MISSED when its upper bound is below; CPU cost is met when its interval's upper "
           f"bound is <= {TARGET_COST:.4f} (1 / {TARGET_RATIO}) and MISSED when its lower bound "
           f"is above; anything else is not resolved. Idle: the machine's idle share during the "
           f"trials (median), which CPU cost does not see.",
           "",
           f"| server | batond options | req/s on its own / through batond (medians) | req/s, "
           f"batond / on its own [{pct}] | req/s, A/A control [{pct}] | CPU cost, batond / on "
           f"its own [{pct}] | CPU cost, A/A control [{pct}] | idle, batond / on its own | "
           f"verdict: req/s (target >= {TARGET_RATIO}); CPU cost (target <= {TARGET_COST:.4f}) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tr = r["tp"]["trials"]
        if CONTROL:
            control = fmt_ci(*r["control"][0]), fmt_ci(*r["control"][1])
        else:
            control = "not run", "not run"
        out.append(
            f"| {r['name']} | `{' '.join(r['args'])}` | "
            f"{statistics.median(x['rps'] for x in tr['alone']):.0f} / "
            f"{statistics.median(x['rps'] for x in tr['batond']):.0f} | **{fmt_ci(*r['rps'])}** | "
            f"{control[0]} | **{fmt_ci(*r['cpu'])}** | {control[1]} | "
            f"{r['idle'][0] * 100:.1f}% / {r['idle'][1] * 100:.1f}% | {r['verdict'][0]}; "
            f"{r['verdict'][1]} |")
    out.append("")
    out.append("Per trial (req/s: min / quartiles / max; CPU per reply: median):")
    out.append("")
    names = {"alone": "on its own", "batond": "through batond", "control": "control"}
    for r in rows:
        tp = r["tp"]
        per_reply = {s: (statistics.median(x["cpu_ns"] / x["ok"] / 1000 for x in trials),
                         statistics.median(x["load_cpu_ns"] / x["ok"] / 1000 for x in trials))
                     for s, trials in tp["trials"].items()}
        line = (f"- {r['name']}: req/s "
                + "; ".join(f"{names[s]} {spread([x['rps'] for x in tp['trials'][s]])}"
                            for s in tp["trials"])
                + f". Per-round ratios, batond / on its own: req/s "
                f"{spread(r['rps_all'], '{:.3f}')}, CPU cost {spread(r['cpu_all'], '{:.3f}')}")
        if CONTROL:
            line += (f"; control: req/s {spread(r['control'][2], '{:.3f}')}, CPU cost "
                     f"{spread(r['control'][3], '{:.3f}')}")
        line += (". CPU per reply, server / loadgen: "
                 + ", ".join(f"{names[s]} {a:.1f} / {b:.1f} us" for s, (a, b) in
                             per_reply.items())
                 + f"; batond itself {tp['batond_cpu'] * 1000:.0f} ms over all the rounds. "
                 f"{tp['repeated']} rounds run again; other processes took at most "
                 f"{max(s for _, s in tp['rounds']) * 100:.0f}% of the machine in a kept "
                 f"round; {sum(x['failed'] for t in tp['trials'].values() for x in t)} failed "
                 f"in the trials; listen backlog {tp['backlog']} on every side.")
        out.append(line)
    out += ["",
            "Reloads under load, through batond: back to back, each waiting for \"reload "
            "done\"; the load runs until every old generation has exited.",
            "",
            "| server | reloads | seconds | requests | failed (target 0) |",
            "|---|---|---|---|---|"]
    for r in rows:
        res = r["res"]
        out.append(f"| {r['name']} | {r['done']} | {r['took']:.0f} | {res['requests']} | "
                   f"{res['failed']} {'met' if res['failed'] <= TARGET_FAILED else 'MISSED'} |")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
