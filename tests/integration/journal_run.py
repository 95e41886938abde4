# SPDX-License-Identifier: MIT
"""journal_run.py - run under `unshare -m` by test_journal.py: a private /run with a real
systemd-journald, batond logging to it as a systemd service would (stderr a journal stream,
JOURNAL_STREAM naming it), a good reload, a rolled-back one, a new listener and a stop; then
prints what the journal holds from batond, as journalctl -o json lines, on stdout."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT, BUILD = sys.argv[1], sys.argv[2]
BATOND, BATONCTL = f"{ROOT}/{BUILD}/batond", f"{ROOT}/{BUILD}/batonctl"
HTTPD = f"{ROOT}/{BUILD}/example-httpd"
JOURNALD = next(p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
                if os.path.exists(p))


def wait_for(pred, what, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"journal_run: timed out waiting for {what}")


def ctl(sock, *args):
    return subprocess.run([BATONCTL, "-q", "-c", sock, *args], capture_output=True, text=True,
                          timeout=120)


def main():
    # Only this mount namespace sees these: the host's journal and /run are left alone.
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
    os.makedirs("/run/systemd/journal")
    if os.path.isdir("/var/log/journal"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/var/log/journal"], check=True)
    journald = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    batond = None
    try:
        wait_for(lambda: os.path.exists("/run/systemd/journal/stdout") and
                 os.path.exists("/run/systemd/journal/socket"), "journald")
        d = tempfile.mkdtemp()
        sock, flag = f"{d}/ctl.sock", f"{d}/broken"
        # As systemd does for StandardError=journal: stderr is a stream to journald, and
        # JOURNAL_STREAM names its device and inode.
        script = ('JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) && export JOURNAL_STREAM '
                  '&& exec "$@"')
        worker = ["/bin/sh", "-c", f'test -e {flag} && exit 1; exec "$0" "$@"', HTTPD]
        batond = subprocess.Popen(
            ["systemd-cat", "-t", "batond", "/bin/sh", "-c", script, "sh", BATOND, "-c", sock,
             "-l", "web=127.0.0.1:0", "-n", "2", "--", *worker],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def serving(gen):
            p = ctl(sock, "status", "--json")
            return p.returncode == 0 and json.loads(p.stdout)["serving_generation"] == gen

        wait_for(lambda: serving(1), "generation 1")
        check = ctl(sock, "reload")
        assert check.returncode == 0, check
        open(flag, "w").close()
        check = ctl(sock, "reload")
        assert check.returncode == 1, check
        check = ctl(sock, "listen", "api=127.0.0.1:0")
        assert check.returncode == 0, check
        pid = json.loads(ctl(sock, "identify", "--json").stdout)["pid"]
        os.kill(pid, signal.SIGTERM)
        batond.wait(timeout=60)
        # journald has it all once it read the stream to its end: ask until the last line.
        def have_exit():
            out = subprocess.run(["journalctl", "-D", "/run/log/journal", "-o", "json",
                                  "--no-pager", "SYSLOG_IDENTIFIER=batond"],
                                 capture_output=True, text=True).stdout
            return out if '"BATON_EVENT":"exit"' in out else None
        wait_for(have_exit, "batond's last entry in the journal")
        sys.stdout.write(have_exit())
    finally:
        if batond and batond.poll() is None:
            batond.kill()
            batond.wait()
        journald.send_signal(signal.SIGTERM)
        journald.wait(timeout=30)


if __name__ == "__main__":
    main()
