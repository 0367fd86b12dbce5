"""Tabs: what a follower costs and how fast the tabs hand over (docs/browser.md, "Tabs").

    npm run build:test      # once: the run serves a private copy of .cache/test-site/
    python -m bench.tabs [--followers 9] [--samples 200] [--handovers 10] [--cold 3]

Headless Chromium (Debian's ``/usr/bin/chromium``) with a profile on disk, on a private copy
of the site with the chaos job module (``bench/chaos/browser_jobs.py``, whose steps write a
ledger with the worker's clock), opens one leader tab and then follower tabs, and measures:

- **follower ready**: from a follower tab's navigation start to ``connect()`` resolving (the
  page's own clock), while the leader runs;
- **follower cost**: the memory (PSS, summed over the browser's processes, from
  ``/proc/<pid>/smaps_rollup``) and CPU time (``/proc/<pid>/stat``) of this browser while
  idle for ``--idle`` seconds, with the leader alone, then with the standby follower (Python
  loaded), then with ``--followers`` tabs in all; the differences are the cost of the standby
  and of each further follower;
- **trigger latency**: ``trigger()`` of a zero-step run timed in the page, from the leader's
  tab and from a follower's (forwarded over the BroadcastChannel), in alternating batches;
- **hand-over**: from closing the leader's tab (half with its ``pagehide``, half killed
  without it) to the first step body the new leader starts (the ledger's ``time.time()``),
  with a warm standby; and ``--cold`` times with no warm standby (the leader and the standby
  closed together, so the next follower loads Python first).

Results go to ``bench/results/tabs.json`` and ``tabs.md`` (also printed). The figures are as
noisy as the machine: say how loaded it was (``uptime`` before and after, printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CHROMIUM = os.environ.get("DURABLY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000

# When connect() resolved, on the page's clock (ms since its navigation started).
HOOK_READY = """
(() => {
  let value;
  Object.defineProperty(window, "durably", {
    configurable: true,
    get() { return value; },
    set(v) { value = v; if (v) window.__readyAt = performance.now(); },
  });
})();
"""

TIME_TRIGGERS = """async (n) => {
    const d = window.durably, out = [];
    for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        await d.trigger("chaos-steps", {steps: []});
        out.push(performance.now() - t0);
    }
    return out;
}"""

LEDGER_AFTER = "SELECT worker, MIN(t) FROM chaos_ledger WHERE kind = 'start' AND t > ? GROUP BY worker"


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _chromium_processes() -> list[int]:
    """This run's Chromium: the descendants of this process named chromium (not other
    engineers' browsers on the same machine)."""
    pids = []
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if "chrom" in f.read():
                    pids.append(pid)
        except OSError:
            continue
    return pids


def _pss_and_cpu(pids: list[int]) -> tuple[int, float]:
    pss, ticks = 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return pss, ticks / os.sysconf("SC_CLK_TCK")


def idle_cost(seconds: float) -> dict[str, float]:
    """Memory (PSS, MB) now and CPU (% of one core) over ``seconds`` of idling."""
    pids = _chromium_processes()
    pss0, cpu0 = _pss_and_cpu(pids)
    time.sleep(seconds)
    pss1, cpu1 = _pss_and_cpu(pids)
    return {"pss_mb": round((pss0 + pss1) / 2 / 1e6, 1), "cpu_pct": round((cpu1 - cpu0) / seconds * 100, 2),
            "processes": len(pids)}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Tabs:
    def __init__(self, context: Any, url: str, verbose: bool) -> None:
        self.context = context
        self.url = url
        self.verbose = verbose
        self.pages: list[Any] = []  # leader first, then followers in the order they queue

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def open(self) -> tuple[Any, float]:
        page = self.context.new_page()
        page.goto(self.url)
        page.wait_for_function("window.__readyAt !== undefined && window.durably", timeout=TIMEOUT_MS)
        self.pages.append(page)
        return page, page.evaluate("window.__readyAt")

    def role(self, page: Any) -> str:
        return page.evaluate("window.durably.role")

    def leader(self) -> Any:
        deadline = time.time() + TIMEOUT_MS / 1000
        while time.time() < deadline:
            for page in self.pages:
                if self.role(page) == "leader":
                    return page
            time.sleep(0.01)
        raise RuntimeError("no tab leads")

    def wait_for_standby(self) -> Any:
        deadline = time.time() + TIMEOUT_MS / 1000
        while time.time() < deadline:
            for page in self.pages:
                if page.evaluate("window.durably.standby"):
                    return page
            time.sleep(0.05)
        raise RuntimeError("no follower became the standby")

    def handover(self, graceful: bool, also_close: Any = None) -> float:
        """Close the leader mid-run; seconds from the close to the new leader's first step."""
        leader = self.leader()
        run = leader.evaluate("window.durably.trigger('chaos-steps', {steps: Array(40).fill(50)})")
        while len(leader.evaluate("(id) => window.durably.getSteps(id)", run["id"])) < 2:
            time.sleep(0.02)
        self.pages.remove(leader)
        if also_close is not None:
            self.pages.remove(also_close)
        t_close = time.time()
        leader.close(run_before_unload=graceful)
        if also_close is not None:
            also_close.close(run_before_unload=graceful)
        new = self.leader()
        new.evaluate("(id) => window.durably.waitForRun(id, {timeout: 120})", run["id"])
        rows = new.evaluate("([sql, t]) => window.durably.call('sql', {sql, params: [t]})", [LEDGER_AFTER, t_close])["rows"]
        worker = new.evaluate("window.durably.evalPython('import chaos_jobs\\nchaos_jobs.WORKER')")
        first = [t for w, t in rows if w == worker]
        if not first:
            raise RuntimeError("the new leader ran no step")
        return first[0] - t_close


def run(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT))
    from serve import make_server
    from playwright.sync_api import sync_playwright

    from bench.chaos.browser import site_copy

    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="durably-tabs-") as tmp:
        site = site_copy(Path(tmp) / "site")
        server = make_server(site, 0, quiet=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        query = urlencode({"jobs": "chaos_jobs", "debug": "1", "options": json.dumps({"maxConcurrentRuns": 1})})
        url = f"http://127.0.0.1:{server.server_address[1]}/test.html?{query}"
        try:
            with sync_playwright() as pw:
                # Service workers blocked: the copy's manifest gained a job module after the
                # build, which the precache list of sw.js does not know.
                context = pw.chromium.launch_persistent_context(
                    Path(tmp) / "profile", executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                    service_workers="block")
                context.add_init_script(HOOK_READY)
                out["chromium"] = context.browser.version if context.browser else None
                try:
                    measure(Tabs(context, url, args.verbose), args, out)
                finally:
                    context.close()
        finally:
            server.shutdown()
            server.server_close()
    out["load_after"] = os.getloadavg()
    return out


def measure(tabs: Tabs, args: argparse.Namespace, out: dict) -> None:
    leader, leader_ready = tabs.open()
    assert tabs.role(leader) == "leader"
    tabs.log(f"leader ready in {leader_ready:.0f} ms")
    out["leader_ready_ms"] = round(leader_ready)
    time.sleep(2)
    alone = idle_cost(args.idle)
    tabs.log(f"leader alone: {alone}")

    standby, ready = tabs.open()
    ready_ms = [ready]
    tabs.wait_for_standby()
    time.sleep(2)
    with_standby = idle_cost(args.idle)
    tabs.log(f"with the standby: {with_standby}")
    for _ in range(args.followers - 1):
        _, ready = tabs.open()
        ready_ms.append(ready)
    time.sleep(2)
    with_all = idle_cost(args.idle)
    tabs.log(f"with {args.followers} followers: {with_all}")
    plain = max(1, args.followers - 1)
    out["follower_ready_ms"] = {"p50": round(statistics.median(ready_ms)), "max": round(max(ready_ms)), "n": len(ready_ms)}
    out["cost"] = {
        "leader_alone": alone, "with_standby": with_standby, f"with_{args.followers}_followers": with_all,
        "standby_mb": round(with_standby["pss_mb"] - alone["pss_mb"], 1),
        "standby_cpu_pct": round(with_standby["cpu_pct"] - alone["cpu_pct"], 2),
        "follower_mb": round((with_all["pss_mb"] - with_standby["pss_mb"]) / plain, 1),
        "follower_cpu_pct": round((with_all["cpu_pct"] - with_standby["cpu_pct"]) / plain, 2),
    }

    # Trigger latency, leader's tab against a (plain) follower's, in alternating batches.
    follower = tabs.pages[-1]
    lat: dict[str, list[float]] = {"leader": [], "follower": []}
    batch = 20
    for _ in range(max(1, args.samples // batch)):
        for name, page in (("leader", leader), ("follower", follower)):
            lat[name] += page.evaluate(TIME_TRIGGERS, batch)
    out["trigger_ms"] = {name: {"p50": round(statistics.median(v), 2), "p95": round(pct(v, 0.95), 2), "n": len(v)}
                         for name, v in lat.items()}
    tabs.log(f"trigger ms: {out['trigger_ms']}")

    # Hand-overs with a warm standby: the closed tab is replaced, as a visitor opens tabs.
    warm: dict[str, list[float]] = {"pagehide": [], "killed": []}
    for i in range(args.handovers):
        tabs.wait_for_standby()
        graceful = i % 2 == 0
        seconds = tabs.handover(graceful)
        warm["pagehide" if graceful else "killed"].append(seconds)
        tabs.log(f"hand-over {i + 1} ({'pagehide' if graceful else 'killed'}): {seconds * 1000:.0f} ms")
        tabs.open()
    cold: list[float] = []
    for i in range(args.cold):
        tabs.wait_for_standby()
        standby = next(p for p in tabs.pages if p.evaluate("window.durably.standby"))
        seconds = tabs.handover(True, also_close=standby)
        cold.append(seconds)
        tabs.log(f"cold hand-over {i + 1}: {seconds * 1000:.0f} ms")
        tabs.open()
        tabs.open()

    def fig(v: list[float]) -> dict:
        return {"p50_ms": round(statistics.median(v) * 1000), "max_ms": round(max(v) * 1000), "n": len(v)} if v else {}

    out["handover"] = {"warm_pagehide": fig(warm["pagehide"]), "warm_killed": fig(warm["killed"]),
                       "warm_all": fig(warm["pagehide"] + warm["killed"]), "cold": fig(cold),
                       "raw_s": {"pagehide": warm["pagehide"], "killed": warm["killed"], "cold": cold}}


def table(r: dict) -> str:
    c, t, h = r["cost"], r["trigger_ms"], r["handover"]
    lines = [
        f"Chromium {r.get('chromium')}; load average {', '.join(f'{x:.2f}' for x in r['load_before'])} before, "
        f"{', '.join(f'{x:.2f}' for x in r['load_after'])} after.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| leader tab: load to ready (cold profile) | {r['leader_ready_ms']:,} ms |",
        f"| follower tab: load to ready, p50 / max (n {r['follower_ready_ms']['n']}) | "
        f"{r['follower_ready_ms']['p50']:,} / {r['follower_ready_ms']['max']:,} ms |",
        f"| trigger from the leader's tab, p50 / p95 | {t['leader']['p50']} / {t['leader']['p95']} ms |",
        f"| trigger from a follower's tab, p50 / p95 | {t['follower']['p50']} / {t['follower']['p95']} ms |",
        f"| hand-over, warm standby, leader closed with pagehide: p50 / max (n {h['warm_pagehide'].get('n', 0)}) | "
        f"{h['warm_pagehide'].get('p50_ms')} / {h['warm_pagehide'].get('max_ms')} ms |",
        f"| hand-over, warm standby, leader killed (no pagehide): p50 / max (n {h['warm_killed'].get('n', 0)}) | "
        f"{h['warm_killed'].get('p50_ms')} / {h['warm_killed'].get('max_ms')} ms |",
        f"| hand-over, no warm standby (leader and standby closed together): p50 / max (n {h['cold'].get('n', 0)}) | "
        f"{h['cold'].get('p50_ms')} / {h['cold'].get('max_ms')} ms |",
        f"| memory: the standby follower (Python loaded) | {c['standby_mb']} MB |",
        f"| memory: each further follower | {c['follower_mb']} MB |",
        f"| idle CPU: the standby / each further follower | {c['standby_cpu_pct']} / {c['follower_cpu_pct']} % of a core |",
        f"| idle browser: leader alone / with the standby / with all followers | "
        f"{c['leader_alone']['pss_mb']} / {c['with_standby']['pss_mb']} / "
        f"{[v for k, v in c.items() if k.startswith('with_') and k.endswith('_followers')][0]['pss_mb']} MB PSS |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tabs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--followers", type=int, default=9, help="follower tabs next to the leader (default 9: ten tabs)")
    p.add_argument("--samples", type=int, default=200, help="triggers timed from each tab")
    p.add_argument("--handovers", type=int, default=10, help="hand-overs with a warm standby")
    p.add_argument("--cold", type=int, default=3, help="hand-overs with no warm standby")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idling per cost measurement")
    p.add_argument("--stem", default="tabs", help="results file stem in bench/results/")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from bench.chaos.browser import site_is_built

    missing = site_is_built()
    if missing:
        print(f"bench.tabs: cannot run: {missing}", file=sys.stderr)
        return 2
    r = run(a)
    r["args"] = vars(a)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.stem}.json").write_text(json.dumps(r, indent=2) + "\n")
    md = table(r)
    shown = [x for x in (argv if argv is not None else sys.argv[1:]) if x not in ("-v", "--verbose")]
    (RESULTS / f"{a.stem}.md").write_text(f"# python -m bench.tabs {' '.join(shown)}\n\n{md}\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
