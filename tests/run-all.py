#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""run-all.py - make check: unit tests (Check), then integration tests; one closing count."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    args = ap.parse_args()
    passed = failed = 0
    # No test's batond may reach /run/baton or a user's runtime directory (run.py checks what
    # the integration tests leave; the unit tests get a directory of their own too).
    unit_rundir = tempfile.mkdtemp(prefix="baton-check-unit.")
    os.environ["RUNTIME_DIRECTORY"] = os.environ["XDG_RUNTIME_DIR"] = unit_rundir

    unit = subprocess.run([os.path.join(ROOT, args.build, "unit-tests")], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(unit.stdout)
    shutil.rmtree(unit_rundir, ignore_errors=True)
    m = re.search(r"Checks: (\d+), Failures: (\d+), Errors: (\d+)", unit.stdout)
    if m:
        n, f, e = map(int, m.groups())
        passed += n - f - e
        failed += f + e
    if unit.returncode != 0 and (not m or m.group(2) == m.group(3) == "0"):
        failed += 1  # crashed before reporting

    integ = subprocess.run([sys.executable, os.path.join(ROOT, "tests/integration/run.py"),
                            "--build", args.build], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(integ.stdout)
    m = re.search(r"integration: (\d+) passed, (\d+) failed", integ.stdout)
    if m:
        passed += int(m.group(1))
        failed += int(m.group(2))
    if integ.returncode != 0 and (not m or m.group(2) == "0"):
        failed += 1

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
