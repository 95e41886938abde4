# SPDX-License-Identifier: MIT
"""test_journal.py - when stderr is the journal, batond logs through the native protocol with
PRIORITY= and BATON_* fields: a real systemd-journald in a private mount namespace reads them."""
import json
import os
import subprocess
import sys

from harness import BUILD, ROOT, check

HERE = os.path.dirname(os.path.abspath(__file__))


def test_journal_entries_carry_priority_and_baton_fields():
    # journald puts its sockets in $RUNTIME_DIRECTORY when it is set (run.py sets it for the
    # whole run): here it must use /run/systemd/journal, as a real one does.
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY",
                                                            "XDG_RUNTIME_DIR")}
    p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                        os.path.join(HERE, "journal_run.py"), ROOT, BUILD],
                       capture_output=True, text=True, timeout=300, env=env)
    check(p.returncode == 0, f"journal_run: {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr}")
    entries = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    by_event = {}
    for e in entries:
        by_event.setdefault(e.get("BATON_EVENT"), []).append(e)
    # batond's own sent through the native protocol; the stream carries only what the
    # workers (which inherit batond's stderr) write.
    streamed = [e["MESSAGE"] for e in entries if e["_TRANSPORT"] != "journal"]
    check(all(m.startswith("example-httpd: ") for m in streamed), streamed)
    check(all(e["_COMM"] == "batond" for e in entries if e["_TRANSPORT"] == "journal"),
          "a native entry from another process")
    rb = by_event["reload_rolled_back"][0]
    check(rb["PRIORITY"] == "3" and rb["BATON_GENERATION"] == "3" and
          int(rb["BATON_WORKER_PID"]) > 0 and
          # Either of the two broken workers may be the first to exit.
          f"worker {rb['BATON_WORKER']} (pid {rb['BATON_WORKER_PID']})" in rb["MESSAGE"] and
          "rolled back" in rb["MESSAGE"], rb)
    ok = [e for e in by_event["generation_ready"] if e["BATON_GENERATION"] == "2"]
    check(len(ok) == 1 and ok[0]["PRIORITY"] == "5" and "reload done" in ok[0]["MESSAGE"], ok)
    added = by_event["listener_added"][0]
    check(added["BATON_LISTENER"] == "api" and added["PRIORITY"] == "6", added)
    exited = by_event["worker_exited"][0]
    check("BATON_WORKER_PID" in exited and "BATON_GENERATION" in exited, exited)
    # A message that is no event: its priority, no BATON_EVENT.
    plain = [e for e in entries if "listening on" in e["MESSAGE"] and "BATON_EVENT" not in e]
    check(plain and plain[0]["PRIORITY"] == "6", "no plain message")
    check(by_event["exit"][-1]["MESSAGE"].endswith("exiting with status 0"), by_event["exit"])
