#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""run.py - runs the integration tests (test_*.py beside it) and prints one summary line."""
import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("-k", dest="only", default="", help="run tests whose name contains this")
    args = ap.parse_args()
    os.environ["BUILD"] = args.build
    sys.path.insert(0, HERE)
    # A batond or batonctl that a test starts without -c or a directory of its own lands here,
    # never in /run/baton or the user's $XDG_RUNTIME_DIR/baton: a user's own default-named
    # batond is out of reach, and anything left behind is seen below.
    rundir = tempfile.mkdtemp(prefix="baton-check-run.")
    os.environ["RUNTIME_DIRECTORY"] = os.environ["XDG_RUNTIME_DIR"] = rundir

    tests = []
    for name in sorted(os.listdir(HERE)):
        if name.startswith("test_") and name.endswith(".py"):
            mod = importlib.import_module(name[:-3])
            for attr in sorted(vars(mod)):
                if (attr.startswith("test_") and callable(getattr(mod, attr)) and
                        args.only in f"{name[:-3]}.{attr}"):
                    tests.append((f"{name[:-3]}.{attr}", getattr(mod, attr)))

    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            fn()
        except Exception:  # a test failure or a harness error: both fail this test only
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - t0:.1f}s)", flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name} ({time.monotonic() - t0:.1f}s)", flush=True)
    left = sorted(os.listdir(rundir))
    shutil.rmtree(rundir, ignore_errors=True)
    if left:
        failed += 1
        print(f"FAIL run.left_nothing_in_the_runtime_directory: {left}", flush=True)
    print(f"integration: {passed} passed, {failed} failed", flush=True)
    return 1 if failed or not tests else 0


if __name__ == "__main__":
    sys.exit(main())
