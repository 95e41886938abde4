# SPDX-License-Identifier: MIT
"""test_install.py - `make install` at a prefix the build was not made for (issue #19).

The tree is built for PREFIX=/usr/local (BATON_LIBDIR compiled in); here it is installed with
DESTDIR and PREFIX=/opt/baton-test, as a user who installs what `make demo` built would. The
installed batond must find the installed shim by itself (BINDIR/../lib/baton), the library and
its .pc file must land in LIBDIR, and a program built against them with pkg-config (the
installed baton-hello, which `make install` builds that way) must serve under the installed
batond. With the shim removed, batond must name every path it tried.
"""
import os
import re
import subprocess
import tempfile

from harness import BUILD, ROOT, Batond, check, http_get

PREFIX = "/opt/baton-test"


def make_install(dest):
    p = subprocess.run(["make", "--no-print-directory", "-C", ROOT, f"BUILD={BUILD}",
                        f"DESTDIR={dest}", f"PREFIX={PREFIX}", "install"],
                       capture_output=True, text=True, timeout=600)
    check(p.returncode == 0, f"make install DESTDIR={dest} PREFIX={PREFIX}:\n"
          f"{p.stdout}{p.stderr}")


def multiarch():
    p = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True,
                       text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


def test_an_install_at_another_prefix_finds_its_shim_and_serves_a_program_built_with_pkg_config():
    with tempfile.TemporaryDirectory() as dest:
        make_install(dest)
        root = dest + PREFIX
        libdir = os.path.join(root, "lib", multiarch()) if multiarch() else os.path.join(root, "lib")
        for path in ("bin/batond", "bin/batonctl", "bin/baton-hello",
                     "lib/baton/libbaton-preload.so", "include/baton.h",
                     "share/man/man8/batond.8", "share/man/man8/batonctl.8",
                     "share/man/man3/baton.3", "lib/systemd/system/batond@.service",
                     "share/doc/baton/examples/hello.c"):
            check(os.path.exists(os.path.join(root, path)), f"{path} is not installed")
        for name in ("libbaton.so", "libbaton.a", "pkgconfig/libbaton.pc"):
            check(os.path.exists(os.path.join(libdir, name)), f"{name} is not in {libdir}")
        with open(os.path.join(libdir, "pkgconfig", "libbaton.pc")) as f:
            pc = f.read()
        check(f"libdir={libdir[len(dest):]}" in pc, f"libbaton.pc names another libdir:\n{pc}")
        with open(os.path.join(root, "lib/systemd/system/batond@.service")) as f:
            check(f"{PREFIX}/bin/batonctl" in f.read(), "the unit does not run this prefix's batonctl")

        batond = os.path.join(root, "bin", "batond")
        env = {"LD_LIBRARY_PATH": libdir,  # the loader's path would have LIBDIR in an install
               # make SANITIZE=1: the installed libbaton is instrumented, and the shim is
               # preloaded ahead of the sanitizer's runtime, which it then must accept.
               "ASAN_OPTIONS": "verify_asan_link_order=0"}
        b = Batond(["-l", "127.0.0.1:0", "--preload", "-v"],
                   [os.path.join(root, "bin", "baton-hello")], env=env, batond=batond)
        try:
            addr = b.address()
            m, _ = b.wait_log(r", preload (\S+)$")
            check(os.path.realpath(m.group(1)) ==
                  os.path.realpath(os.path.join(root, "lib/baton/libbaton-preload.so")),
                  f"batond took the shim at {m.group(1)}, not the installed one")
            b.wait_log(r"generation 1: 1/1 workers ready")
            body = http_get(addr)
            check(re.fullmatch(r"pid=\d+\n", body), f"reply {body!r}")
        finally:
            b.cleanup()

        os.unlink(os.path.join(root, "lib/baton/libbaton-preload.so"))
        p = subprocess.run([batond, "-l", "127.0.0.1:0", "--preload", "--", "/bin/true"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 2, f"batond without its shim exited {p.returncode}:\n{p.stderr}")
        tried = re.findall(r"preload library libbaton-preload\.so not found: tried (\S+)",
                           p.stderr)
        want = [os.path.join(root, "bin", "libbaton-preload.so"),
                os.path.join(root, "bin", "..", "lib", "baton", "libbaton-preload.so"),
                "/usr/local/lib/baton/libbaton-preload.so"]
        check(tried == want, f"batond named {tried}, expected {want}:\n{p.stderr}")
