# SPDX-License-Identifier: MIT
"""test_metrics.py - --metrics scraped by a real Prometheus (Debian's prometheus package) every
second on loopback: PromQL through its HTTP API sees every reload; promtool accepts the text."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request

from harness import (Batond, Load, Proc, DEADLINE, bin_path, broken_while, check, free_port,
                     read_all, target_of, wait_for)

HTTPD = bin_path("example-httpd")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def fetch(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers, r.read().decode()


def metrics_url(b):
    m, _ = b.wait_log(r"metrics: serving (http://\S+/metrics)")
    return m.group(1)


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping target every second, its data in d."""

    def __init__(self, d, target):
        check(os.access(PROMETHEUS, os.X_OK),
              f"{PROMETHEUS} missing: scripts/install-deps installs the prometheus package")
        with open(f"{d}/prometheus.yml", "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: baton\n    scrape_interval: 1s\n"
                    "    scrape_timeout: 1s\n"
                    f"    static_configs:\n      - targets: ['{target}']\n")
        # Prometheus cannot listen on port 0 and say which port it got: take a free one, and
        # another should someone take it meanwhile.
        for attempt in range(3):
            self.port = free_port()
            self.proc = Proc([PROMETHEUS, f"--config.file={d}/prometheus.yml",
                              f"--storage.tsdb.path={d}/data",
                              f"--web.listen-address=127.0.0.1:{self.port}"])
            try:
                wait_for(lambda: "Server is ready to receive web requests" in self.proc.log() or
                         self.proc.proc.poll() is not None, "Prometheus to start")
            except Exception:
                self.proc.cleanup()
                raise
            if self.proc.proc.poll() is None:
                return
            log = self.proc.log()
            self.proc.cleanup()
            check("address already in use" in log, f"Prometheus did not start:\n{log}")
        raise AssertionError("Prometheus found no free port in 3 tries")

    def query(self, promql):
        """The result vector of an instant query, as {labels-as-tuple: float}."""
        q = urllib.parse.urlencode({"query": promql})
        status, _, body = fetch(f"http://127.0.0.1:{self.port}/api/v1/query?{q}")
        r = json.loads(body)
        check(status == 200 and r["status"] == "success", f"{promql}: {body}")
        return {tuple(sorted(x["metric"].items())): float(x["value"][1])
                for x in r["data"]["result"]}

    def value(self, promql):
        """The single value of an instant query, or None while it has none."""
        res = self.query(promql)
        return next(iter(res.values())) if len(res) == 1 else None

    def cleanup(self):
        self.proc.cleanup()


def test_prometheus_scrapes_every_reload_and_promtool_accepts_the_text():
    with tempfile.TemporaryDirectory() as d:
        flag = f"{d}/broken"
        b = Batond(["-c", f"{d}/ctl.sock", "--metrics", "127.0.0.1:0", "-l", "web=127.0.0.1:0",
                    "-n", "2"], broken_while(flag, "exit 1", [HTTPD]))
        prom = load = None
        try:
            addr = b.address("web")
            url = metrics_url(b)
            b.wait_log(r"generation 1: 2/2 workers ready")
            prom = Prometheus(d, url[len("http://"):-len("/metrics")])
            wait_for(lambda: prom.value('up{job="baton"}') == 1.0, "the first scrape")
            load = Load(target_of(addr), duration="120s", threads=2)
            for gen in (2, 3, 4):
                mark = b.mark()
                b.signal(1)
                b.wait_log(rf"generation {gen}: 2/2 workers ready in .*; reload done", mark)
            open(flag, "w").close()
            mark = b.mark()
            b.signal(1)
            b.wait_log(r"reload to generation 5 failed", mark)
            res = load.finish()
            check(res["failed"] == 0 and res["ok"] > 0, res)
            # What Prometheus stored, through PromQL: 3 reloads ok, 1 rolled back.
            wait_for(lambda: prom.value('baton_reloads_total{outcome="ok"}') == 3.0 and
                     prom.value('baton_reloads_total{outcome="rolled_back"}') == 1.0,
                     "Prometheus to see 3 good reloads and 1 rollback")
            check(prom.value("baton_serving_generation") == 4.0, "serving generation")
            check(prom.value('sum(baton_workers{state="ready"})') == 2.0, "ready workers")
            # No scrape failed: every sample of up is 1, and the target is healthy.
            wait_for(lambda: (prom.value('count_over_time(up{job="baton"}[10m])') or 0) >= 3,
                     "three scrapes")
            check(prom.value('min_over_time(up{job="baton"}[10m])') == 1.0, "a failed scrape")
            _, _, body = fetch(f"http://127.0.0.1:{prom.port}/api/v1/targets")
            t = json.loads(body)["data"]["activeTargets"]
            check(len(t) == 1 and t[0]["health"] == "up" and t[0]["lastError"] == "", t)
            # The sample queries of docs/OPERATIONS.md are valid PromQL and say what they mean.
            check(prom.value('increase(baton_reloads_total{outcome="rolled_back"}[1h])') > 0,
                  "the rollback query")
            check(prom.query("baton_listener_accept_queue > 0.5 * baton_listener_accept_backlog")
                  == {}, "an idle listener's queue above half its backlog")
            check(prom.value('histogram_quantile(0.99, sum by (le) '
                             '(rate(baton_reload_duration_seconds_bucket{outcome="ok"}[1h])))')
                  is not None, "the duration query")
            # promtool, Prometheus' own linter, accepts the text as it is served.
            status, headers, text = fetch(url)
            check(status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4"),
                  headers)
            p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=60)
            check(p.returncode == 0, f"promtool: {p.stdout} {p.stderr}")
            check(re.search(r'^baton_build_info\{version="[^"]+"\} 1$', text, re.M), text)
            check(re.search(r'^process_open_fds \d+$', text, re.M), text)
        finally:
            if load:
                load.kill()
            if prom:
                prom.cleanup()
            b.cleanup()


def test_metrics_over_a_unix_socket_and_http_errors():
    with tempfile.TemporaryDirectory() as d:
        sock = f"{d}/metrics.sock"
        b = Batond(["-c", f"{d}/ctl.sock", "--metrics", f"unix:{sock}", "-l", "127.0.0.1:0"],
                   [HTTPD])
        try:
            b.wait_log(r"generation 1: 1/1 workers ready")

            def ask(request):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(DEADLINE)
                try:
                    s.connect(sock)
                    s.sendall(request)
                    return read_all(s).decode()
                finally:
                    s.close()

            r = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            check(r.startswith("HTTP/1.1 200 OK\r\n") and "\nbaton_serving_generation 1\n" in r,
                  r[:300])
            body = r.split("\r\n\r\n", 1)[1]
            m = re.search(r"Content-Length: (\d+)", r)
            check(m and int(m.group(1)) == len(body.encode()), "Content-Length")
            r = ask(b"HEAD /metrics HTTP/1.0\r\n\r\n")
            check(r.startswith("HTTP/1.1 200 OK") and r.endswith("\r\n\r\n"), r)
            check(ask(b"GET / HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 404 "), "404")
            check(ask(b"POST /metrics HTTP/1.1\r\n\r\n").startswith("HTTP/1.1 405 "), "405")
            check(ask(b"hello\r\n\r\n").startswith("HTTP/1.1 400 "), "400")
            b.signal(15)
            check(b.wait_exit() == 0, "exit status")
            check(not os.path.exists(sock), "metrics socket left behind")
        finally:
            b.cleanup()


def test_metrics_refuses_an_address_that_is_not_loopback():
    p = subprocess.run([bin_path("batond"), "--metrics", "0.0.0.0:9100", "-l", "127.0.0.1:0",
                        "--", "true"], capture_output=True, text=True, timeout=30)
    check(p.returncode == 2 and "loopback" in p.stderr, p.stderr)
