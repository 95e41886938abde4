# SPDX-License-Identifier: MIT
"""test_deb_systemd.py - the packaged unit under a booted systemd 252 (issue #19).

The .debs that `make deb` builds are unpacked over the host's /usr in the container of
container.py (an overlay, read-only), in place of `make install`: the unit is the package's,
at /usr/lib/systemd/system, running /usr/bin/batond and the packaged example server.
Scenarios: socket activation from the first connection, five `systemctl reload`s under load
with 0 failed, and a clean `systemctl stop` of socket and service. Counts asserted, never
durations.
"""
import glob
import os
import re
import subprocess

from container import Container
from harness import BUILD, ROOT, check, wait_for
from test_systemd_boot import (SERVICE, SOCKET, WORKERS, http_get_in, load, workers)


def packages():
    debs = sorted(d for d in glob.glob(os.path.join(ROOT, BUILD, "deb", "*.deb"))
                  if "dbgsym" not in d and "libbaton-dev" not in d)
    if len(debs) < 2:
        p = subprocess.run(["make", "--no-print-directory", "-C", ROOT, f"BUILD={BUILD}", "deb"],
                           capture_output=True, text=True, timeout=1200)
        check(p.returncode == 0, f"make deb:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
        return packages()
    return debs


def test_the_packaged_unit_activates_reloads_and_stops_under_systemd_with_nothing_failed():
    ct = Container("pkg", debs=packages())
    try:
        ct.systemctl("start", SOCKET)
        check(ct.prop(SERVICE, "ActiveState") == "inactive", "service started before a client")
        body = http_get_in(ct)
        check(re.fullmatch(r"pid=\d+\n", body), f"reply {body!r}")
        wait_for(lambda: ct.prop(SERVICE, "ActiveState") == "active",
                 "the connection to start batond")
        main = ct.host_pid(SERVICE)
        check(os.readlink(f"/proc/{main}/exe") == "/usr/bin/batond",
              f"MainPID runs {os.readlink(f'/proc/{main}/exe')}, not the packaged batond")
        wait_for(lambda: len(workers(ct)) == WORKERS, f"{WORKERS} workers")
        ld = load(ct)
        try:
            for i in range(5):
                old = set(workers(ct))
                ct.systemctl("reload", SERVICE)
                wait_for(lambda: not (set(workers(ct)) & old),
                         f"reload {i + 1}'s old workers to exit")
                new = set(workers(ct))
                check(len(new) == WORKERS, f"reload {i + 1}: workers {old} -> {new}")
            res = ld.finish()
        finally:
            ld.kill()
        check(res["ok"] > 0 and res["failed"] == 0, f"load over 5 reloads: {res}")
        check(ct.host_pid(SERVICE) == main, "MainPID changed across reloads")

        # The stop of socket and service together is test_systemd_boot.py's scenario, with
        # the same unit text: here only that the packaged one stops cleanly.
        ct.systemctl("stop", SOCKET, SERVICE)
        check(ct.prop(SERVICE, "ActiveState") == "inactive", "service still active")
        check(ct.prop(SERVICE, "Result") == "success", f"result {ct.prop(SERVICE, 'Result')}")
    finally:
        ct.cleanup()
