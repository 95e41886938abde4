# SPDX-License-Identifier: MIT
"""container.py - a real systemd booted as PID 1 in systemd-nspawn, with baton installed in it.

The root is made of the host's /usr, bind-mounted read-only, a dozen files in /etc, and
`make install DESTDIR=` of this build bound at /usr/local: no image to download. systemd boots
on pure cgroup v2 (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1; on a hybrid host, crash restarts would
otherwise wait the whole stop timeout), with a network namespace of its own (loopback only).
Tests drive it with `nsenter -t LEADER -a systemctl ...`, reach its loopback from threads or
processes that entered its network namespace, and stop it by pid: SIGKILL to the container's
PID 1 ends every process in its PID namespace, whatever state a test left.
"""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import BUILD, DEADLINE, ROOT, TestFailure, alive, check, children_of, start_time

NSPAWN = "/usr/bin/systemd-nspawn"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_DEADLINE = 120.0  # seconds from nspawn's start to "running" on a busy 2-core machine
CLONE_NEWNET = 0x40000000
# The /etc files systemd, NSS and the loader need; everything else in /etc starts empty.
ETC_FILES = ("passwd", "group", "shadow", "gshadow", "nsswitch.conf", "os-release",
             "ld.so.conf", "login.defs")


def cgroup_roots():
    """The hierarchies nspawn uses here: the v2 one, and on a hybrid host name=systemd too."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return [("/sys/fs/cgroup", "0::")]
    return [("/sys/fs/cgroup/unified", "0::"), ("/sys/fs/cgroup/systemd", "name=systemd:")]


def own_cgroup(prefix):
    """This process's cgroup in the hierarchy whose /proc/self/cgroup line starts with prefix
    after the hierarchy number ("0::" for v2, "name=systemd:")."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            num, rest = line.rstrip("\n").split(":", 1)
            if f"{num}:{rest}".startswith(prefix) if prefix == "0::" else rest.startswith(prefix):
                return rest.rsplit(":", 1)[1] if prefix != "0::" else rest[1:]
    return "/"


class Container:
    """One booted container. Construction boots it or raises TestFailure with the reason."""

    def __init__(self, name="baton", debs=None):
        """debs: Debian packages to install in place of `make install` (their /usr laid over
        the host's /usr, read-only), or None."""
        self.debs = debs
        self.dir = tempfile.mkdtemp(prefix="baton-ct.")
        self.name = f"{name}-{os.getpid()}"
        self.nspawn = None
        self.leader = None
        self.cgroups = []
        try:
            self._build_root()
            self._boot()
        except BaseException:
            self.cleanup()
            raise

    # --- the root ---

    def _build_root(self):
        root = self.root = os.path.join(self.dir, "root")
        for d in ("usr", "etc/systemd/system", "var/tmp", "tmp", "run", "proc", "sys", "dev",
                  "root", "var/log/journal", "etc/ld.so.conf.d"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        os.chmod(os.path.join(root, "var/tmp"), 0o1777)
        for link in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink(f"/{link}"):
                os.symlink(f"usr/{link}", os.path.join(root, link))
        for name in ETC_FILES:
            if os.path.exists(f"/etc/{name}"):
                shutil.copy(f"/etc/{name}", os.path.join(root, "etc", name))
        for name in os.listdir("/etc/ld.so.conf.d"):
            shutil.copy(f"/etc/ld.so.conf.d/{name}", os.path.join(root, "etc/ld.so.conf.d"))
        # Empty: systemd makes a machine id at boot and treats it as a first boot.
        open(os.path.join(root, "etc/machine-id"), "w").close()
        os.symlink("/lib/systemd/system/multi-user.target",
                   os.path.join(root, "etc/systemd/system/default.target"))
        if BUILD.rstrip("/").endswith("san"):
            # make SANITIZE=1: LeakSanitizer's check at exit stops the process's threads with
            # ptrace, which the unit's SystemCallFilter=@system-service forbids, so every
            # sanitized batond and batonctl in the unit would exit 1 at its end. The leak check
            # runs everywhere else in make check; here the unit stays as shipped.
            dropin = os.path.join(root, "etc/systemd/system/batond@.service.d")
            os.makedirs(dropin)
            with open(os.path.join(dropin, "sanitizers.conf"), "w") as f:
                f.write("[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n")
        # baton as `make install` lays it out, under /usr/local (bound over the host's, writable
        # so that a test can deploy a broken server as an operator might).
        self.dest = os.path.join(self.dir, "dest")
        if self.debs:
            # The packages' files, as dpkg would unpack them: their /usr goes over the host's.
            os.makedirs(os.path.join(self.dest, "usr/local"))
            for deb in self.debs:
                p = subprocess.run(["dpkg-deb", "-x", deb, self.dest], capture_output=True,
                                   text=True)
                check(p.returncode == 0, f"dpkg-deb -x {deb}: {p.stderr}")
            return
        p = subprocess.run(["make", "--no-print-directory", "-C", ROOT, f"BUILD={BUILD}",
                            f"DESTDIR={self.dest}", "install"] +
                           (["SANITIZE=1"] if BUILD.rstrip("/").endswith("san") else []),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=600)
        check(p.returncode == 0, f"make install DESTDIR={self.dest}:\n{p.stdout}")

    # --- boot and teardown ---

    def _enter_cgroups(self):
        """Runs in the child before exec: nspawn then makes its payload and supervisor cgroups
        under a cgroup of this container's own, not beside another test run's."""
        for path in self.cgroups:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write("0")

    def _boot(self):
        for base, prefix in cgroup_roots():
            if os.path.isdir(base):
                path = os.path.join(base + own_cgroup(prefix), f"baton-ct.{self.name}")
                os.makedirs(path, exist_ok=True)
                self.cgroups.append(path)
        env = {"PATH": PATH, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "LANG": "C.UTF-8"}
        self.log_path = os.path.join(self.dir, "nspawn.log")
        with open(self.log_path, "w") as log:
            self.nspawn = subprocess.Popen(
                [NSPAWN, "--quiet", "--boot", "--directory", self.root,
                 "--machine", self.name, "--register=no", "--keep-unit",
                 "--private-network", "--console=pipe",
                 *([f"--overlay-ro=/usr:{self.dest}/usr:/usr"] if self.debs else
                   ["--bind-ro=/usr", f"--bind={self.dest}/usr/local:/usr/local"])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=self._enter_cgroups)
        end = time.monotonic() + BOOT_DEADLINE
        while self.leader is None:
            kids = [p for p in children_of(self.nspawn.pid) if ppid_of(p) == self.nspawn.pid]
            inits = [p for p in kids if comm(p) == "systemd"]
            if inits:
                self.leader = inits[0]
                self.leader_start = start_time(self.leader)
                break
            if self.nspawn.poll() is not None or time.monotonic() > end:
                raise TestFailure("the container did not boot: systemd-nspawn "
                                  f"{'exited ' + str(self.nspawn.returncode) if self.nspawn.poll() is not None else 'started no init'}"
                                  f":\n{self.nspawn_log()}")
            time.sleep(0.05)
        # systemctl reaches PID 1 once it has made its private socket: until then, ask again.
        while True:
            left = max(1.0, end - time.monotonic())
            p = self.run(["systemctl", "is-system-running", "--wait"], timeout=left)
            early = "Failed to connect to bus" in p.stderr or p.stdout.strip() in ("", "offline")
            if not early or time.monotonic() > end:
                break
            if self.nspawn.poll() is not None:
                raise TestFailure(f"the container stopped while booting:\n{self.nspawn_log()}")
            time.sleep(0.05)
        state = p.stdout.strip()
        if state not in ("running", "degraded"):
            raise TestFailure(f"the container did not boot: system state {state!r} "
                              f"({p.stderr.strip()}):\n{self.nspawn_log()}")
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout
            raise TestFailure(f"the container booted degraded; failed units:\n{failed}")
        # The loader finds libbaton in /usr/local/lib once ldconfig has run, as after any
        # make install of a library.
        self.run(["ldconfig"], check_rc=True)

    def nspawn_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def cleanup(self):
        """Ends the container by pid (its PID 1, then nspawn), removes what it left."""
        if self.leader and start_time(self.leader) == self.leader_start:
            try:
                os.kill(self.leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.nspawn:
            try:
                self.nspawn.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait()
        for path in self.cgroups:
            # Children first; each is empty once the PID namespace is gone.
            for d, _, _ in sorted(os.walk(path), key=lambda t: -t[0].count("/")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- driving it ---

    def argv(self, cmd):
        return ["nsenter", "-t", str(self.leader), "-a", "env", "-i", f"PATH={PATH}",
                "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER="] + list(cmd)

    def run(self, cmd, timeout=DEADLINE, check_rc=False):
        """Runs cmd inside (every namespace); returns the CompletedProcess."""
        try:
            p = subprocess.run(self.argv(cmd), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise TestFailure(f"{' '.join(cmd)}: no answer within {timeout:.0f}s")
        if check_rc:
            check(p.returncode == 0,
                  f"{' '.join(cmd)}: exit {p.returncode}: {p.stdout}{p.stderr}")
        return p

    def systemctl(self, *args, check_rc=True, timeout=DEADLINE * 2):
        return self.run(["systemctl", "--no-pager", *args], timeout=timeout, check_rc=check_rc)

    def prop(self, unit, name):
        return self.systemctl("show", "-P", name, unit).stdout.strip()

    def journal(self, unit=None, since_cursor=None, extra=()):
        cmd = ["journalctl", "--no-pager", "-o", "cat"]
        if unit:
            cmd += ["-u", unit]
        cmd += list(extra)
        return self.run(cmd).stdout

    def net_argv(self, cmd):
        """cmd in the container's network namespace only: host files, the container's loopback.
        nsenter execs cmd in place, so the pid a Popen sees is cmd's own."""
        return ["nsenter", "-t", str(self.leader), "-n"] + list(cmd)

    def in_netns(self, fn):
        """Calls fn() in a thread that entered the container's network namespace; sockets it
        makes stay there. Returns fn's result or raises its exception."""
        out = {}

        def body():
            try:
                fd = os.open(f"/proc/{self.leader}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns into the container's network")
                finally:
                    os.close(fd)
                out["value"] = fn()
            except BaseException as e:  # handed to the caller's thread
                out["error"] = e
        t = threading.Thread(target=body)
        t.start()
        t.join()
        if "error" in out:
            raise out["error"]
        return out["value"]

    def host_pid(self, unit, prop="MainPID"):
        """A unit's MainPID as the host sees it (the container has its own PID namespace)."""
        inner = int(self.prop(unit, prop) or 0)
        if inner <= 0:
            return 0
        return self.to_host_pid(inner)

    def to_host_pid(self, inner):
        """The host pid of the container's pid inner (NSpid in /proc/PID/status)."""
        for p in [self.leader] + children_of(self.leader):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            if len(ids) >= 2 and int(ids[-1]) == inner:
                                return p
            except OSError:
                continue
        return 0

    def unit_pids(self, unit):
        """Host pids of every process in the unit's cgroup."""
        inner = self.run(["systemctl", "show", "-P", "ControlGroup", unit]).stdout.strip()
        if not inner:
            return []
        path = f"{self.cgroups[0]}/payload{inner}"
        if not os.path.exists(path):
            return []
        with open(os.path.join(path, "cgroup.procs")) as f:
            return sorted(int(x) for x in f.read().split() if alive(int(x)))


def ppid_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError):
        return -1


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
