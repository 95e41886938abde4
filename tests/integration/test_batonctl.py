# SPDX-License-Identifier: MIT
"""test_batonctl.py - the control socket and batonctl: status, reload, stop, upgrade, refusals."""
import json
import os
import stat
import subprocess
import tempfile

from harness import Batond, Load, alive, bin_path, broken_while, check, target_of, wait_for

HTTPD = bin_path("example-httpd")


def ctl(sock, *args, user=None):
    pre = None
    if user is not None:
        def pre():
            os.setgid(user)
            os.setuid(user)
    p = subprocess.run([bin_path("batonctl"), "-c", sock, *args], capture_output=True, text=True,
                       timeout=120, preexec_fn=pre)
    return p.returncode, p.stdout, p.stderr


def test_status_json_describes_generations_workers_and_listeners():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/ctl.sock"
        b = Batond(["-c", sock, "-l", "web=127.0.0.1:0", "-l", f"api=unix:{d}/api.sock",
                    "-n", "2"], [HTTPD])
        try:
            b.wait_log(r"generation 1: 2/2 workers ready")
            check(stat.S_IMODE(os.stat(sock).st_mode) == 0o600, "control socket is not 0600")
            rc, out, err = ctl(sock, "status", "--json")
            check(rc == 0, f"status: {rc} {err}")
            s = json.loads(out)
            check(s["pid"] == b.pid and s["serving_generation"] == 1, s)
            check(s["last_reload"] is None and s["reload_pending"] is False, s)
            gens = s["generations"]
            check(len(gens) == 1 and gens[0]["state"] == "serving", gens)
            pids = sorted(w["pid"] for w in gens[0]["workers"])
            check(pids == b.workers(), f"{pids} vs {b.workers()}")
            check(all(w["state"] == "ready" and w["ready_source"] == "notify"
                      for w in gens[0]["workers"]), gens)
            names = [(l["name"], l["kind"]) for l in s["listeners"]]
            check(names == [("web", "tcp"), ("api", "unix")], names)
            check(s["listeners"][0]["queued"] == 0 and s["listeners"][0]["backlog"] == 4096,
                  s["listeners"][0])
            rc, out, _ = ctl(sock, "status")
            check(rc == 0 and "generation 1 (serving)" in out and "accept queue 0/4096" in out,
                  out)
        finally:
            b.cleanup()


def test_reload_waits_for_the_outcome():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/ctl.sock"
        flag = f"{d}/broken"
        cmd = broken_while(flag, "exit 1", [HTTPD])
        b = Batond(["-c", sock, "-l", "127.0.0.1:0", "-n", "2"], cmd)
        try:
            addr = b.address()
            b.wait_log(r"generation 1: 2/2 workers ready")
            load = Load(target_of(addr), duration="120s", threads=2)
            try:
                rc, out, err = ctl(sock, "reload")
                check(rc == 0 and "generation 2" in out and "reload done" in out,
                      f"{rc} {out!r} {err!r}")
                # batonctl returned once generation 2 served: it is serving now.
                s = json.loads(ctl(sock, "status", "--json")[1])
                check(s["serving_generation"] == 2 and s["last_reload"]["ok"], s)
                open(flag, "w").close()
                rc, out, err = ctl(sock, "reload")
                check(rc == 1 and "reload to generation 3 failed" in err and
                      "exited with status 1" in err, f"{rc} {out!r} {err!r}")
                s = json.loads(ctl(sock, "status", "--json")[1])
                check(s["serving_generation"] == 2 and not s["last_reload"]["ok"], s)
                os.unlink(flag)
                rc, out, _ = ctl(sock, "reload", "--no-wait")
                check(rc == 0 and "reload requested" in out, out)
                b.wait_log(r"generation 4: .*reload done")
                res = load.finish()
            finally:
                load.kill()
            check(res["failed"] == 0 and res["ok"] > 0, res)
        finally:
            b.cleanup()


def test_stop_and_upgrade_through_the_control_socket():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/ctl.sock"
        b = Batond(["-c", sock, "-l", "127.0.0.1:0"], [HTTPD])
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            w = b.workers()
            rc, out, _ = ctl(sock, "upgrade")
            check(rc == 0 and "upgrading" in out, out)
            b.wait_log(r"upgrade: took over")
            b.wait_log(r"\(upgraded\)")
            # The control socket came along.
            rc, out, _ = ctl(sock, "version")
            check(rc == 0 and out.startswith("batond "), out)
            check(b.workers() == w, "workers changed")
            rc, out, _ = ctl(sock, "stop")
            check(rc == 0, out)
            check(b.wait_exit() == 0, "exit status")
            check(not os.path.exists(sock), "control socket left behind")
            check(not any(alive(p) for p in w), "worker outlived batond")
        finally:
            b.cleanup()


def test_other_users_and_bad_requests_are_refused():
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        sock = f"{d}/ctl.sock"
        b = Batond(["-c", sock, "-l", "127.0.0.1:0"], [HTTPD])
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            # As nobody: the 0600 socket refuses the connect itself.
            rc, out, err = ctl(sock, "status", user=65534)
            check(rc == 1 and "Permission denied" in err, f"{rc} {err}")
            # Even with the mode opened up, SO_PEERCRED refuses and batond says who it was.
            os.chmod(sock, 0o666)
            rc, out, err = ctl(sock, "status", user=65534)
            check(rc == 1 and out == "", f"{rc} {out!r} {err!r}")
            b.wait_log(r"control: refusing pid \d+ uid 65534")
            rc, out, err = ctl(sock, "frobnicate")
            check(rc == 2 and "unknown command" in err, err)
            rc, _, err = subprocess.run([bin_path("batonctl"), "-c", f"{d}/none.sock", "status"],
                                        capture_output=True, text=True, timeout=30).returncode, \
                None, None
            check(rc == 1, "unreachable batond is not a failure")
        finally:
            b.cleanup()


def test_every_command_says_which_batond_answered_and_json_includes_it():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/ctl.sock"
        b = Batond(["-c", sock, "--name", "web", "-l", "api=127.0.0.1:0",
                    "--pid-file", f"{d}/web.pid"], [HTTPD])
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")
            addr = b.address("api")
            rc, out, err = ctl(sock, "version")
            check(rc == 0 and out.startswith("batond "), out)
            check(f"batond pid {b.pid} (web); listeners api={addr}" in err and sock in err, err)
            rc, out, err = ctl(sock, "-q", "version")
            check(rc == 0 and err == "", err)
            rc, out, _ = ctl(sock, "--json", "version")
            j = json.loads(out)
            check(j["result"] == "ok" and j["message"].startswith("batond ") and
                  j["batond"]["pid"] == b.pid and j["batond"]["name"] == "web" and
                  j["batond"]["listeners"] == [{"name": "api", "address": addr}], j)
            rc, out, _ = ctl(sock, "--json", "retire", "nosuch")
            j = json.loads(out)
            check(rc == 1 and j["result"] == "failed" and "nosuch" in j["message"], j)
            rc, out, _ = ctl(sock, "identify", "--json")
            check(json.loads(out)["pid_file"] == f"{d}/web.pid", out)
            s = json.loads(ctl(sock, "status", "--json")[1])
            check(s["name"] == "web" and s["pid_file_pid"] == b.pid, s)
            rc, out, _ = ctl(sock, "status")
            check(f"pid {b.pid} (web)" in out and "warning" not in out, out)
            # Another process took the pid file over: status says so.
            with open(f"{d}/web.pid", "w") as f:
                f.write("1\n")
            rc, out, _ = ctl(sock, "status")
            check(rc == 0 and f"warning: pid file {d}/web.pid names pid 1, not this batond "
                  f"(pid {b.pid})" in out, out)
        finally:
            b.cleanup()


def test_a_second_batond_on_a_control_socket_in_use_refuses_to_start():
    with tempfile.TemporaryDirectory() as d:
        env = {"RUNTIME_DIRECTORY": d}
        first = Batond(["--name", "web", "-l", "127.0.0.1:0"], [HTTPD], env=env)
        second = third = None
        try:
            first.wait_log(r"generation 1: 1/1 workers ready")
            second = Batond(["--name", "web", "-l", "127.0.0.1:0"], [HTTPD], env=env)
            check(second.wait_exit() == 2, "the second batond did not exit 2")
            second.wait_log(rf"control socket {d}/web.sock is in use by pid {first.pid} "
                            r"\(batond\): .*--no-control")
            check(second.count(r"generation 1") == 0, "the second batond started workers")
            # batonctl still reaches the first one.
            rc, out, _ = ctl(f"{d}/web.sock", "status", "--json")
            check(rc == 0 and json.loads(out)["pid"] == first.pid, out)
            # Told to run without one, it runs.
            third = Batond(["--name", "web", "--no-control", "-l", "127.0.0.1:0"], [HTTPD],
                           env=env)
            third.wait_log(r"generation 1: 1/1 workers ready")
            rc, out, _ = ctl(f"{d}/web.sock", "status", "--json")
            check(json.loads(out)["pid"] == first.pid, out)
        finally:
            for b in (third, second, first):
                if b:
                    b.cleanup()
