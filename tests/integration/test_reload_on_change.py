# SPDX-License-Identifier: MIT
"""test_reload_on_change.py - --reload-on-change PATH (issue #18): a file rewritten in place, a
release symlink flipped, a Kubernetes ConfigMap volume's "..data" swap, a burst of changes, a
broken configuration that rolls back and is not retried until the next change, a path that is
not there.

The worker reads its configuration at start and exits 1 when it says "broken", as a server
refusing a bad configuration would; otherwise it says READY=1 and waits for SIGTERM.
"""
import os
import signal
import subprocess
import sys
import tempfile

from harness import Batond, bin_path, check, wait_for

WORKER = r"""
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with open(sys.argv[1]) as f:
    if "broken" in f.read():
        print("worker: broken configuration", file=sys.stderr, flush=True)
        sys.exit(1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"READY=1")
while True:
    time.sleep(3600)
"""


def write(path, text):
    """Replaces path's content in place, as an editor that truncates would."""
    with open(path, "w") as f:
        f.write(text)


def start(d, watched, config):
    # In a directory of its own: reading it must not look like a change to a watched one.
    os.makedirs(os.path.join(d, "bin"), exist_ok=True)
    script = os.path.join(d, "bin", "worker.py")
    with open(script, "w") as f:
        f.write(WORKER)
    b = Batond(["-l", "127.0.0.1:0", "--reload-on-change", watched],
               [sys.executable, script, config])
    b.wait_log(r"generation 1: 1/1 workers ready")
    return b


def reloads(b):
    return b.count(r"reload-on-change: \S+ (changed|is gone)")


def test_a_file_rewritten_in_place_rolls_a_new_generation():
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "app.conf")
        write(conf, "v1\n")
        b = start(d, conf, conf)
        try:
            first = b.workers()
            write(conf, "v2\n")
            b.wait_log(rf"reload-on-change: {conf} changed")
            b.wait_log(r"generation 2: 1/1 workers ready")
            wait_for(lambda: b.workers() and not set(b.workers()) & set(first),
                     "generation 1 to be replaced")
        finally:
            b.cleanup()


def test_a_release_symlink_flip_rolls_a_new_generation_and_names_the_new_target():
    with tempfile.TemporaryDirectory() as d:
        for rel in ("r1", "r2"):
            os.mkdir(os.path.join(d, rel))
            write(os.path.join(d, rel, "app.conf"), f"{rel}\n")
        current = os.path.join(d, "current")
        os.symlink("r1", current)
        b = start(d, current, os.path.join(current, "app.conf"))
        try:
            # What deploy tools do: a new link beside, renamed over the old one (atomic).
            os.symlink("r2", current + ".new")
            os.rename(current + ".new", current)
            b.wait_log(rf"reload-on-change: {current} changed \(now {d}/r2\)")
            b.wait_log(r"generation 2: 1/1 workers ready")
        finally:
            b.cleanup()


def test_a_configmap_volume_data_swap_rolls_a_new_generation():
    """A Kubernetes ConfigMap volume: config.yaml -> ..data/config.yaml, ..data -> ..TS_1;
    an update writes ..TS_2 and renames a new ..data link over the old one."""
    with tempfile.TemporaryDirectory() as d:
        vol = os.path.join(d, "config")
        os.mkdir(vol)
        os.mkdir(os.path.join(vol, "..2026_12_05_1"))
        write(os.path.join(vol, "..2026_12_05_1", "config.yaml"), "v: 1\n")
        os.symlink("..2026_12_05_1", os.path.join(vol, "..data"))
        os.symlink("..data/config.yaml", os.path.join(vol, "config.yaml"))
        conf = os.path.join(vol, "config.yaml")
        b = start(d, conf, conf)
        try:
            os.mkdir(os.path.join(vol, "..2026_12_05_2"))
            write(os.path.join(vol, "..2026_12_05_2", "config.yaml"), "v: 2\n")
            os.symlink("..2026_12_05_2", os.path.join(vol, "..data_tmp"))
            os.rename(os.path.join(vol, "..data_tmp"), os.path.join(vol, "..data"))
            b.wait_log(rf"reload-on-change: {conf} changed \(now {vol}/..2026_12_05_2/config.yaml\)")
            b.wait_log(r"generation 2: 1/1 workers ready")
        finally:
            b.cleanup()


def test_a_burst_of_changes_is_coalesced_and_a_directory_is_watched_for_its_entries():
    with tempfile.TemporaryDirectory() as d:
        confdir = os.path.join(d, "conf.d")
        os.mkdir(confdir)
        conf = os.path.join(confdir, "app.conf")
        write(conf, "v0\n")
        b = start(d, confdir, conf)
        try:
            for i in range(20):
                write(os.path.join(confdir, f"part{i}.conf"), f"{i}\n")
            b.wait_log(r"generation 2: 1/1 workers ready")
            b.signal(signal.SIGTERM)
            wait_for(lambda: b.proc.poll() is not None, "batond to stop")
            n = reloads(b)
            # 20 changes, settled before a look and at most one reload a second: far fewer
            # looks. Counted, never timed: a busy machine may split the burst in two or three.
            check(1 <= n <= 5, f"{n} looks found a change for 20 changes:\n{b.log()}")
        finally:
            b.cleanup()


def test_a_broken_configuration_rolls_back_and_is_tried_again_only_on_the_next_change():
    with tempfile.TemporaryDirectory() as d:
        conf = os.path.join(d, "app.conf")
        write(conf, "good\n")
        b = start(d, conf, conf)
        try:
            first = b.workers()
            write(conf, "broken\n")
            b.wait_log(r"generation 2.*(failed|rolled back)")
            check(b.workers() == first, f"the serving generation changed: {first} -> "
                  f"{b.workers()}")
            write(conf, "good again\n")
            b.wait_log(r"generation 3: 1/1 workers ready")
            starts = b.count(r"generation \d+: starting")
            check(starts == 3, f"{starts} generations started for 2 changes (a retry?):\n"
                  f"{b.log()}")
            check(reloads(b) == 2, f"{reloads(b)} reloads for 2 changes")
        finally:
            b.cleanup()


def test_a_path_that_is_not_there_is_refused_at_start():
    with tempfile.TemporaryDirectory() as d:
        missing = os.path.join(d, "nope.conf")
        p = subprocess.run([bin_path("batond"), "--no-control", "-l", "127.0.0.1:0",
                            "--reload-on-change", missing, "--", "/bin/sleep", "60"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 2, f"batond exited {p.returncode}:\n{p.stderr}")
        check(f"reload-on-change {missing}: No such file or directory" in p.stderr, p.stderr)
