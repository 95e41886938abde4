# SPDX-License-Identifier: MIT
"""test_readme.py - the README's "Use it" shell blocks, run as they are written (extracted from
README.md, so they cannot drift), in a private network and mount namespace: its own loopback,
its own /run."""
import os
import re
import shlex
import subprocess

from harness import BUILD, ROOT, check

WAIT = 600  # tenths of a second that a wait in the script may take


def use_it_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index("\n## Use it\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_readme_use_it_blocks_run_as_written():
    blocks = use_it_blocks()
    check(len(blocks) == 3, f"expected the daemon, a signal and a batonctl block: {blocks}")
    daemon = blocks[0].replace("\\\n", " ").strip()
    check(daemon.startswith("batond ") and "build/example-httpd" in daemon, daemon)
    # The same commands, with this build's binaries (build/ or build/san).
    build = os.path.join(ROOT, BUILD)
    daemon = daemon.replace("build/example-httpd", f"{build}/example-httpd")
    # The first block is the daemon, in its own terminal; the others run in order after it is
    # up, each command must succeed, and the last stops it: batond must exit 0.
    script = f"""
set -u
ip link set lo up
mount -t tmpfs tmpfs /run
# The README's defaults, not the test run's private directory: /run/baton as root.
unset RUNTIME_DIRECTORY XDG_RUNTIME_DIR
cd {shlex.quote(ROOT)}
export PATH={shlex.quote(build)}:$PATH
{daemon} >/dev/null 2>/tmp/readme-batond.$$ &
daemon=$!
# Whatever fails, batond stops (gracefully: its workers with it) before the script ends.
stop() {{
    if kill -TERM $daemon 2>/dev/null; then
        i=0
        while kill -0 $daemon 2>/dev/null && [ $i -lt {WAIT} ]; do i=$((i + 1)); sleep 0.1; done
        kill -KILL $daemon 2>/dev/null
    fi
    cat /tmp/readme-batond.$$ >&2
    rm -f /tmp/readme-batond.$$
}}
trap stop EXIT
i=0
until batonctl -q --name web version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt {WAIT} ] && exit 10; sleep 0.1
done
set -e
{blocks[1]}
{blocks[2]}
set +e
wait $daemon
rc=$?
exit $rc
"""
    p = subprocess.run(["unshare", "-mn", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=300)
    check(p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    check(re.search(r"^generation \d+: \d/4 workers ready in .*; reload done$", p.stdout, re.M),
          p.stdout)
    check(re.search(r'^baton_reloads_total\{outcome="ok"\} [1-9]', p.stdout, re.M), p.stdout)
    check("graceful stop" in p.stderr and "exiting with status 0" in p.stderr, p.stderr)
