# SPDX-License-Identifier: MIT
"""test_deb.py - the Debian packages (issue #19): `make deb` builds batond, libbaton0 and
libbaton-dev from the tracked tree with dpkg-buildpackage, and lintian passes them with no error
and no warning (make deb fails otherwise). The packages hold what the README says, and the
packaged batond, unpacked anywhere, runs the packaged example server with the packaged shim.
"""
import os
import re
import subprocess
import tempfile

from harness import BUILD, ROOT, Batond, check, http_get

DEB_DIR = os.path.join(ROOT, BUILD, "deb")
VERSION = "0.1.0"


def arch():
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                          text=True).stdout.strip()


def multiarch():
    return subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True,
                          text=True).stdout.strip()


def contents(deb):
    p = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True)
    check(p.returncode == 0, f"dpkg-deb -c {deb}: {p.stderr}")
    return {line.split()[-1].lstrip(".") for line in p.stdout.splitlines()
            if not line.startswith("l")} | \
        {line.split()[-3].lstrip(".") for line in p.stdout.splitlines() if line.startswith("l")}


def test_make_deb_builds_three_lintian_clean_packages_that_serve_unpacked():
    p = subprocess.run(["make", "--no-print-directory", "-C", ROOT, f"BUILD={BUILD}", "deb"],
                       capture_output=True, text=True, timeout=1200)
    check(p.returncode == 0, f"make deb exited {p.returncode}:\n{p.stdout[-4000:]}"
          f"{p.stderr[-4000:]}")
    check("lintian" in p.stdout, "make deb did not run lintian")
    debs = {n: os.path.join(DEB_DIR, f"{n}_{VERSION}_{arch()}.deb")
            for n in ("batond", "libbaton0", "libbaton-dev")}
    for n, path in debs.items():
        check(os.path.exists(path), f"no {path}")
    ma = multiarch()
    want = {
        "batond": ["/usr/bin/batond", "/usr/bin/batonctl", "/usr/bin/baton-hello",
                   "/usr/lib/baton/libbaton-preload.so",
                   "/usr/lib/systemd/system/batond@.service",
                   "/usr/lib/systemd/system/batond@.socket",
                   "/usr/share/man/man8/batond.8.gz", "/usr/share/man/man8/batonctl.8.gz",
                   "/usr/share/man/man1/baton-hello.1.gz",
                   "/usr/share/doc/batond/examples/hello.c"],
        "libbaton0": [f"/usr/lib/{ma}/libbaton.so.0", f"/usr/lib/{ma}/libbaton.so.{VERSION}"],
        "libbaton-dev": ["/usr/include/baton.h", f"/usr/lib/{ma}/libbaton.so",
                         f"/usr/lib/{ma}/libbaton.a", f"/usr/lib/{ma}/pkgconfig/libbaton.pc",
                         "/usr/share/man/man3/baton.3.gz"],
    }
    for n, paths in want.items():
        have = contents(debs[n])
        for path in paths:
            check(path in have, f"{n} lacks {path}")

    with tempfile.TemporaryDirectory() as d:
        for path in debs.values():
            subprocess.run(["dpkg-deb", "-x", path, d], check=True)
        with open(os.path.join(d, "usr/lib/systemd/system/batond@.service")) as f:
            unit = f.read()
        check(re.search(r"^ExecReload=/usr/bin/batonctl .*reload", unit, re.M),
              f"the packaged unit does not reload with /usr/bin/batonctl:\n{unit}")
        b = Batond(["-l", "127.0.0.1:0", "--preload"], [os.path.join(d, "usr/bin/baton-hello")],
                   env={"LD_LIBRARY_PATH": os.path.join(d, "usr/lib", ma)},
                   batond=os.path.join(d, "usr/bin/batond"))
        try:
            addr = b.address()
            m, _ = b.wait_log(r", preload (\S+)$")
            check(m.group(1) == os.path.join(d, "usr/lib/baton/libbaton-preload.so"),
                  f"the packaged batond took the shim at {m.group(1)}")
            b.wait_log(r"generation 1: 1/1 workers ready")
            check(re.fullmatch(r"pid=\d+\n", http_get(addr)), "no reply from baton-hello")
        finally:
            b.cleanup()
