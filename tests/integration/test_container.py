# SPDX-License-Identifier: MIT
"""test_container.py - batond as a container's PID 1 under podman (issue #18).

The container's root is a directory of a few entries with the host's /usr bound read-only over
it and this build bound at /opt/baton: no image to pull. podman 4.3 from Debian runs it with
runc: crun, its default, refuses this host's hybrid cgroup hierarchy ("cgroups in hybrid mode
not supported"), and the VM's root lacks CAP_SYS_RESOURCE, so podman's default rlimits (above
the host's hard limits) are replaced by lower ones. The port is published on 127.0.0.1 and the
load comes from outside the container, through podman's own port forwarding.

What is shown, as a user of a container runtime meets it:
- `podman kill -s HUP` is a rolling restart: 5 under load, 0 failed, each replacing the workers;
- `podman stop` (SIGTERM, SIGKILL after its timeout) is batond's complete graceful stop: 0 reset
  and 0 timed out under load, and the container exits 0;
- a worker that double-forks leaves no zombie: batond, as PID 1, reaps what is reparented to it;
- batond's exit status is the container's: 2 for a configuration it refuses.
"""
import json
import os
import shutil
import subprocess
import tempfile

from harness import (BUILD, ROOT, Load, TestFailure, check, free_port, wait_for)

PODMAN = shutil.which("podman") or "/usr/bin/podman"
RUNTIME = ["--runtime", "runc"]
LIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
WORKERS = 2


def podman(*args, timeout=120, check_rc=True):
    if not os.path.exists(PODMAN):
        raise TestFailure("podman is not installed: scripts/install-deps installs podman and runc")
    p = subprocess.run([PODMAN, *RUNTIME, *args], capture_output=True, text=True,
                       timeout=timeout)
    if check_rc:
        check(p.returncode == 0, f"podman {' '.join(args)}: exit {p.returncode}:\n"
              f"{p.stdout}{p.stderr}")
    return p


class Container:
    """One container of ours, by its name; removed (with whatever runs in it) at cleanup."""

    def __init__(self, batond_args, command, caps=("NET_ADMIN",)):
        self.dir = tempfile.mkdtemp(prefix="baton-podman.")
        self.name = f"baton-test-{os.getpid()}-{os.path.basename(self.dir).split('.')[-1]}"
        root = os.path.join(self.dir, "root")
        for sub in ("usr", "etc", "tmp", "proc", "dev", "sys", "run/ctl", "opt/baton"):
            os.makedirs(os.path.join(root, sub))
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        for link in ("bin", "sbin", "lib", "lib64"):
            os.symlink(f"usr/{link}", os.path.join(root, link))
        for name in ("passwd", "group", "nsswitch.conf"):
            shutil.copy(f"/etc/{name}", os.path.join(root, "etc", name))
        self.ctl = os.path.join(self.dir, "ctl")
        os.mkdir(self.ctl)
        self.port = free_port()
        build = os.path.realpath(os.path.join(ROOT, BUILD))
        cap_args = [a for c in caps for a in ("--cap-add", c)]
        p = podman("run", "-d", "--name", self.name, *LIMITS, *cap_args,
                   "-p", f"127.0.0.1:{self.port}:8080",
                   "--mount", "type=bind,src=/usr,dst=/usr,ro",
                   "--mount", f"type=bind,src={build},dst=/opt/baton,ro",
                   "--mount", f"type=bind,src={self.ctl},dst=/run/ctl",
                   "--stop-timeout", "60",
                   "--rootfs", root,
                   "/opt/baton/batond", "-c", "/run/ctl/batond.sock", "-l", "0.0.0.0:8080",
                   *batond_args, "--", *command)
        self.id = p.stdout.strip()

    def status(self):
        p = subprocess.run([os.path.join(ROOT, BUILD, "batonctl"), "-c",
                            os.path.join(self.ctl, "batond.sock"), "status", "--json"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout[p.stdout.index("{"):])

    def serving(self):
        st = self.status()
        return st["serving_generation"] if st and not st["starting_generation"] else 0

    def inspect(self, fmt):
        return podman("inspect", "--format", fmt, self.name).stdout.strip()

    def logs(self):
        return podman("logs", self.name, check_rc=False).stdout + \
            podman("logs", self.name, check_rc=False).stderr

    def worker_pids(self, gen):
        st = self.status() or {}
        for g in st.get("generations", []):
            if g["id"] == gen:
                return {w["pid"] for w in g["workers"]}
        return set()

    def cleanup(self):
        podman("rm", "-f", "-t", "0", self.name, check_rc=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_podman_kill_hup_is_a_rolling_restart_with_nothing_failed():
    ct = Container(["-n", str(WORKERS), "--drain-timeout", "30s"], ["/opt/baton/example-httpd"])
    try:
        wait_for(lambda: ct.serving() == 1, "generation 1 serving in the container")
        check(ct.inspect("{{.State.Pid}}") != "", "no pid for the container")
        load = Load(f"127.0.0.1:{ct.port}", duration="120s", threads=2)
        try:
            for gen in range(2, 7):
                old = ct.worker_pids(gen - 1)
                podman("kill", "-s", "HUP", ct.name)
                wait_for(lambda: ct.serving() == gen, f"generation {gen} serving")
                new = ct.worker_pids(gen)
                check(len(new) == WORKERS and not (new & old),
                      f"reload {gen}: workers {old} -> {new}")
            res = load.finish()
        finally:
            load.kill()
        check(res["failed"] == 0 and res["ok"] > 0, f"load through podman's port: {res}")
    finally:
        ct.cleanup()


def test_podman_stop_is_batonds_graceful_stop_and_the_container_exits_0():
    ct = Container(["-n", str(WORKERS)], ["/opt/baton/example-httpd"])
    try:
        wait_for(lambda: ct.serving() == 1, "generation 1 serving in the container")
        load = Load(f"127.0.0.1:{ct.port}", duration="120s", threads=2,
                    extra=("--timeout", "30s"))
        try:
            wait_for(lambda: os.path.exists(os.path.join(ct.ctl, "batond.sock")), "batond")
            podman("stop", "-t", "60", ct.name, timeout=180)
            res = load.finish()
        finally:
            load.kill()
        # After the stop nobody listens: new connections are refused, which is not a failure
        # of the stop. What the stop must not do is reset or strand a connection it accepted.
        check(res["reset"] == 0 and res["timeout"] == 0 and res["empty"] == 0 and
              res["ok"] > 0, f"load across podman stop: {res}")
        check(ct.inspect("{{.State.ExitCode}}") == "0",
              f"exit code {ct.inspect('{{.State.ExitCode}}')}:\n{ct.logs()}")
        wait_for(lambda: "every worker is gone: exiting with status 0" in ct.logs(),
                 "batond's last line in podman logs")
    finally:
        ct.cleanup()


def test_orphans_of_a_double_forking_worker_are_reaped_by_batond_as_pid_1():
    # The worker's shell starts a background child in a subshell that exits at once: the
    # child is reparented to PID 1, batond, and exits a moment later.
    script = "(sleep 0.3 &) ; (sleep 0.4 &) ; exec /opt/baton/example-httpd"
    ct = Container(["-n", "1", "--ready", "listening"], ["/bin/sh", "-c", script])
    try:
        wait_for(lambda: ct.serving() == 1, "generation 1 serving in the container")
        pid1 = int(ct.inspect("{{.State.Pid}}"))

        def zombies():
            out = []
            for e in os.listdir("/proc"):
                if not e.isdigit():
                    continue
                try:
                    with open(f"/proc/{e}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == pid1:
                    out.append((int(e), fields[0]))
            return out

        # Both sleeps were batond's children once their subshells exited; then they exit.
        wait_for(lambda: all(state != "Z" for _, state in zombies()) and
                 len(zombies()) == 1, "only the worker left under batond, no zombie")
    finally:
        ct.cleanup()


def test_the_containers_exit_status_is_batonds_for_a_refused_configuration():
    ct = Container(["--stop-mode", "sideways"], ["/opt/baton/example-httpd"])
    try:
        wait_for(lambda: ct.inspect("{{.State.Status}}") == "exited", "the container to exit")
        check(ct.inspect("{{.State.ExitCode}}") == "2",
              f"exit code {ct.inspect('{{.State.ExitCode}}')}:\n{ct.logs()}")
        wait_for(lambda: "invalid --stop-mode 'sideways'" in ct.logs(), "batond's error in podman logs")
    finally:
        ct.cleanup()


def test_without_cap_net_admin_batond_says_at_start_that_a_stop_cannot_refuse_connections():
    """podman's default capabilities have no CAP_NET_ADMIN, which the stop's socket filter needs
    on this kernel: batond says so at start, not only when the stop comes."""
    ct = Container(["-n", "1"], ["/opt/baton/example-httpd"], caps=())
    try:
        wait_for(lambda: ct.serving() == 1, "generation 1 serving in the container")
        # podman logs may lag behind what batond wrote: wait for the line.
        wait_for(lambda: "a graceful stop cannot refuse new connections: attaching a socket "
                 "filter needs CAP_NET_ADMIN" in ct.logs(), "batond's warning in podman logs")
    finally:
        ct.cleanup()
