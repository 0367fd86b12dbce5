"""Browser chaos: reloads, closed tabs and terminated workers during slow multi-step jobs,
alone or with follower tabs open, where each interruption of the leader is a hand-over.

``python -m bench.chaos --host browser --interruptions 30 [--followers 2] [--seed N]`` (a
small version runs in tests/browser/test_chaos_browser.py). Headless Chromium (Debian's
``/usr/bin/chromium``) opens the site's test page (``test.html``, debug mode, the job module
``chaos_jobs``) and, for a fixed number of interruptions at random moments while runs are
executing, interrupts the tab that runs the jobs (the leader):

- **reloads** it (the page's ``pagehide`` closes the worker: the step in flight is
  cancelled and its lease handed back);
- **closes the tab** (no ``pagehide`` handler is awaited: the browser kills the worker);
- **terminates the worker** (``worker.terminate()`` from the page), then loads the page again.

With ``--followers N``, N more tabs of the site stay open as followers (their calls go to the
leader); triggers come from every tab; each interruption of the leader is a hand-over to
the standby follower, and the harness opens tabs again so N followers stay open. Without
followers, the interrupted tab's next page load boots the worker again.

The job is ``chaos-steps`` of ``bench/chaos/browser_jobs.py``, added to a private copy of
the site as the job module ``chaos_jobs`` (the demo site ships no test code). Its step
bodies write a ledger row (``start``, then ``end`` or ``abort``) with the run id, step
name, the worker's id and ``time.time()`` into ``chaos_ledger``, a table of the same
database that the runtime never writes, each row committed (autocommit) before the body
returns. At the end everything is read back through the page's API (getRuns, getSteps, the
debug ``sql`` call, exportDatabase) and checked by ``bench/chaos/checks.py``, the CPython
suite's checks: each leader's worker is a "process" and each interruption a kill of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from . import checks
from .ledger import Execution

ROOT = Path(__file__).resolve().parents[2]
# The test build (npm run build:test): the production site plus the test page it opens.
SITE = ROOT / ".cache" / "test-site"
CHROMIUM = os.environ.get("DURABLY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
BOOT_TIMEOUT_MS = 120_000
KINDS = ("reload", "close-tab", "terminate")
JOB = "chaos-steps"
JOB_MODULE = "chaos_jobs"

# This worker's ledger id (browser_jobs.WORKER), asked of the leader through any tab.
WORKER_OF_LEADER = "import chaos_jobs\nchaos_jobs.WORKER"


@dataclass
class Options:
    interruptions: int = 30
    runs: int = 0  # at least this many runs (more are triggered so work is always pending)
    seed: int = 0
    steps: tuple[int, int] = (3, 6)
    step_ms: tuple[int, int] = (100, 400)
    pause: tuple[float, float] = (0.2, 1.5)  # seconds between a page being ready and its interruption
    pending: int = 2  # runs kept unfinished before each interruption
    followers: int = 0  # follower tabs kept open: each interruption is then a hand-over
    verbose: bool = False


@dataclass
class Result:
    report: checks.Report
    kinds: dict[str, int] = field(default_factory=dict)
    to_next_step: list[float] = field(default_factory=list)  # interruption -> new leader's first step (s)
    ready_to_step: list[float] = field(default_factory=list)  # worker ready -> first step (s)
    handovers: int = 0  # interruptions after which a follower took over
    followers: int = 0
    elapsed: float = 0.0

    def line(self) -> str:
        r = self.report
        kinds = ", ".join(f"{k} {self.kinds.get(k, 0)}" for k in KINDS)
        tabs = f", followers {self.followers}, hand-overs {self.handovers}" if self.followers else ""
        return (
            f"chaos browser: runs {r.runs}, steps {r.steps}, interruptions {r.interruptions} ({kinds}){tabs}, "
            f"re-executed step bodies {r.reexecuted}, lost runs {r.lost}, duplicate completions {r.duplicates}, "
            f"half-written {r.half_written}, overlapping executions {r.overlaps}, "
            f"integrity {r.integrity}: {'PASS' if r.ok else 'FAIL'}"
        )

    def timing_line(self) -> str:
        def fig(values: list[float]) -> str:
            if not values:
                return "n/a"
            return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"

        if self.followers:
            return (f"hand-over (leader interrupted to next step in the new leader): {fig(self.to_next_step)} "
                    f"(n {len(self.to_next_step)})")
        return (f"reload to next step: {fig(self.to_next_step)} (n {len(self.to_next_step)}); "
                f"worker ready to next step: {fig(self.ready_to_step)}")


def test_page_url(site_url: str) -> str:
    options = {"maxConcurrentRuns": 1}
    return f"{site_url}test.html?{urlencode({'jobs': JOB_MODULE, 'debug': '1', 'options': json.dumps(options)})}"


class _Load:
    """One leader's worker (the ledger's "process"): when its page load or the interruption
    that made it leader started, when it was ready, its ledger id."""

    def __init__(self, page: Any, started: float) -> None:
        self.page = page
        self.started = started
        self.ready = 0.0
        self.worker = ""
        self.earlier_runs: set[str] = set()  # runs triggered before this load started


READY = ("['ready', 'error'].includes(document.getElementById('status')?.dataset.state)"
         " && (document.getElementById('status').dataset.state !== 'ready' || window.durably)")


class BrowserChaos:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.triggered: list[str] = []
        self.loads: list[_Load] = []
        self.tl = checks.Timeline()
        self.kinds = {k: 0 for k in KINDS}
        self.handovers = 0
        self.followers: list[Any] = []  # follower pages (followers mode)

    def log(self, msg: str) -> None:
        if self.opts.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- the pages --------------------------------------------------------------------------

    @staticmethod
    def _open(page: Any, url: str, navigate: str = "goto") -> None:
        if navigate == "reload":
            page.reload(wait_until="commit")
        else:
            page.goto(url, wait_until="commit")
        page.wait_for_function(READY, timeout=BOOT_TIMEOUT_MS)
        if page.get_attribute("#status", "data-state") != "ready":
            raise RuntimeError(f"the worker did not boot: {page.inner_text('#status')}")

    def _leads(self, page: Any, started: float) -> _Load:
        """Record ``page``'s worker as the next leader (the next "process")."""
        load = _Load(page, started)
        load.ready = time.time()
        load.worker = page.evaluate("(code) => window.durably.evalPython(code)", WORKER_OF_LEADER)
        self.loads.append(load)
        self.log(f"leader {len(self.loads)}: {load.worker} ready {load.ready - started:.2f} s after its start")
        return load

    def _boot(self, page: Any, url: str, started: float, navigate: str = "goto") -> _Load:
        self._open(page, url, navigate)
        return self._leads(page, started)

    def _follower(self, context: Any, url: str) -> Any:
        page = context.new_page()
        self._open(page, url)
        role = page.evaluate("window.durably.role")
        if role != "follower":
            raise RuntimeError(f"a new tab should follow the leader, it is {role}")
        return page

    def _new_leader(self, started: float) -> _Load:
        """Wait until one of the followers has taken over; it becomes the next load."""
        deadline = time.time() + BOOT_TIMEOUT_MS / 1000
        while time.time() < deadline:
            for page in self.followers:
                if page.evaluate("window.durably?.role") == "leader":
                    self.followers.remove(page)
                    return self._leads(page, started)
            time.sleep(0.02)
        raise RuntimeError("no follower took over within the boot timeout")

    def _wait_for_standby(self) -> None:
        deadline = time.time() + BOOT_TIMEOUT_MS / 1000
        while not any(page.evaluate("window.durably.standby") for page in self.followers):
            if time.time() > deadline:
                raise RuntimeError("no follower became the standby within the boot timeout")
            time.sleep(0.05)

    @staticmethod
    def _call(page: Any, method: str, params: dict | None = None) -> Any:
        return page.evaluate("([m, p]) => window.durably.call(m, p)", [method, params or {}])

    def _any_page(self, leader: Any) -> Any:
        return self.rng.choice([leader, *self.followers])

    def _top_up(self, page: Any) -> None:
        unfinished = len(self._call(page, "getRuns", {"status": "pending"})) + len(
            self._call(page, "getRuns", {"status": "leased"}))
        for _ in range(max(0, self.opts.pending - unfinished)):
            self._trigger(page)

    def _trigger(self, page: Any) -> None:
        o = self.opts
        steps = [self.rng.randint(*o.step_ms) for _ in range(self.rng.randint(*o.steps))]
        run = self._call(page, "trigger", {"job": JOB, "input": {"steps": steps}})
        self.triggered.append(run["id"])
        self.tl.expected[run["id"]] = "completed"

    # -- the run ----------------------------------------------------------------------------

    def run(self, context: Any, site_url: str) -> Result:
        t0 = time.time()
        url = test_page_url(site_url)
        kinds = [KINDS[i % len(KINDS)] for i in range(self.opts.interruptions)]
        self.rng.shuffle(kinds)
        load = self._boot(context.new_page(), url, time.time())
        self.followers = [self._follower(context, url) for _ in range(self.opts.followers)]
        for n, kind in enumerate(kinds, 1):
            if self.followers:
                # The hand-over goes to the standby: give it time to load Python, as a
                # visitor's tabs have (a hand-over before that still works, only slower).
                self._wait_for_standby()
            self._top_up(self._any_page(load.page))
            time.sleep(self.rng.uniform(*self.opts.pause))
            pid = len(self.loads)
            t_int = time.time()
            self.tl.kills.append((pid, t_int))
            self.kinds[kind] += 1
            self.log(f"interruption {n}/{len(kinds)}: {kind} of leader {pid}")
            before = set(self.triggered)
            load = self._interrupt(context, url, load, kind, t_int)
            load.earlier_runs = before
            # The old worker cannot have executed anything once the new one holds the lock;
            # _collect() moves this back to the new leader's first step if that came sooner.
            self.tl.exits[pid] = load.ready
        while len(self.triggered) < self.opts.runs:
            self._trigger(self._any_page(load.page))
        page = load.page
        for run_id in self.triggered:
            page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 300}).catch(() => null)", run_id)
        result = self._collect(page)
        result.elapsed = time.time() - t0
        return result

    def _interrupt(self, context: Any, url: str, load: _Load, kind: str, t_int: float) -> _Load:
        if not self.followers:
            # Alone: the interrupted tab's next page load is the next leader.
            if kind == "reload":
                return self._boot(load.page, url, t_int, navigate="reload")
            if kind == "close-tab":
                fresh = context.new_page()  # keeps the context open while the old tab closes
                load.page.close()
                return self._boot(fresh, url, t_int)
            load.page.evaluate("window.durably.worker.terminate()")
            return self._boot(load.page, url, t_int)
        # With followers: the standby takes over; the interrupted tab comes back as a follower.
        old = load.page
        if kind == "reload":
            old.reload(wait_until="commit")
        elif kind == "close-tab":
            old.close()
        else:
            old.evaluate("window.durably.worker.terminate()")
        new = self._new_leader(t_int)
        self.handovers += 1
        if kind == "close-tab":
            self.followers.append(self._follower(context, url))
        else:
            if kind == "terminate":
                old.goto(url, wait_until="commit")
            old.wait_for_function(READY, timeout=BOOT_TIMEOUT_MS)
            self.followers.append(old)
        return new

    def _collect(self, page: Any) -> Result:
        got = page.evaluate(
            """async (ids) => {
                const d = window.durably;
                const steps = {};
                for (const id of ids) steps[id] = await d.getSteps(id);
                const bytes = await d.exportDatabase();
                let bin = "";
                for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
                return {
                    runs: await d.getRuns(), steps,
                    ledger: (await d.call("sql", {sql: "SELECT kind, run_id, step, worker, t FROM chaos_ledger ORDER BY seq"})).rows,
                    integrity: (await d.call("sql", {sql: "PRAGMA integrity_check"})).rows,
                    exported: btoa(bin),
                };
            }""",
            self.triggered,
        )
        first: dict[str, float] = {}  # worker -> the first step body it started
        for kind, _run, _step, worker, t in got["ledger"]:
            if kind == "start" and worker not in first:
                first[worker] = t
        # The worker that took over from leader `pid` ran its first step holding the lock, so
        # the old one was dead (or closed) by then, which may be before the harness saw it.
        for pid, load in enumerate(self.loads[1:], start=1):
            if load.worker in first:
                self.tl.exits[pid] = min(self.tl.exits.get(pid, first[load.worker]), first[load.worker])
        ledger = ledger_executions(got["ledger"], [load.worker for load in self.loads])
        db = db_state(got["runs"], got["steps"], "; ".join(str(r[0]) for r in got["integrity"]))
        rep = checks.check(ledger, db, self.tl)
        # The same database as a file, read by CPython's sqlite3: it must agree with the API.
        with tempfile.TemporaryDirectory(prefix="durably-chaos-browser-") as tmp:
            path = Path(tmp) / "exported.db"
            path.write_bytes(base64.b64decode(got["exported"]))
            on_disk = checks.read_db(path)
        if on_disk.integrity != "ok":
            rep.failures.append(f"the exported database: PRAGMA integrity_check: {on_disk.integrity}")
            rep.integrity = f"{rep.integrity} (exported: {on_disk.integrity})"
        if {k: v["status"] for k, v in on_disk.runs.items()} != {k: v["status"] for k, v in db.runs.items()} \
                or on_disk.step_rows != db.step_rows:
            rep.failures.append("the exported database and the page's API disagree on runs or steps")
        result = Result(rep, dict(self.kinds), handovers=self.handovers, followers=self.opts.followers)
        # Interruption to next step: from each interruption (alone: the start of the page
        # load after it) to the first step body the next leader's worker started of a run
        # that was waiting then (the ledger's own clock: the same system clock; a run
        # triggered later measures the harness, not the hand-over). With followers it is
        # the hand-over.
        for load in self.loads[1:]:
            resumed = [t for kind, run_id, _step, worker, t in got["ledger"]
                       if kind == "start" and worker == load.worker and run_id in load.earlier_runs]
            if resumed:
                result.to_next_step.append(resumed[0] - load.started)
                result.ready_to_step.append(resumed[0] - load.ready)
        return result


def ledger_executions(rows: list[list], workers: list[str]) -> list[Execution]:
    """Pair ``start`` rows with the next ``end``/``abort`` of the same run, step and worker;
    each page load's worker becomes the "pid" 1, 2, ... of the CPython checks."""
    pids = {w: i for i, w in enumerate(workers, 1)}
    open_: dict[tuple[str, str, int], Execution] = {}
    out: list[Execution] = []
    for kind, run_id, step, worker, t in rows:
        pid = pids.setdefault(worker, len(pids) + 1)
        key = (run_id, step, pid)
        if kind == "start":
            ex = Execution(run_id, step, pid, float(t))
            open_[key] = ex
            out.append(ex)
        elif key in open_:
            ex = open_.pop(key)
            ex.end, ex.outcome = float(t), kind
    return out


def _ts(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def db_state(runs: list[dict], steps: dict[str, list[dict]], integrity: str) -> checks.DbState:
    """The checks' view of the database, from the page API's records."""
    state = checks.DbState({}, {}, 0, integrity)
    for r in runs:
        state.runs[r["id"]] = {"status": r["status"], "concurrency_key": r["concurrency_key"],
                               "output": None if r["output"] is None else json.dumps(r["output"]),
                               "completed_steps": r["completed_steps"], "completed_at": _ts(r["completed_at"])}
    for run_id, rows in steps.items():
        state.step_rows += len(rows)
        for s in rows:
            state.steps[(run_id, s["name"])] = {"status": s["status"], "started_at": _ts(s["started_at"]),
                                                "completed_at": _ts(s["completed_at"])}
    return state


def site_copy(dest: Path, source: Path = SITE) -> Path:
    """Copy a test build of the site (``source``: the test page included) to ``dest`` and
    add the chaos job module (``browser_jobs.py`` as ``jobs/chaos_jobs.py``, with its
    manifest entry), so the site itself never ships test code, and a rebuild during a long
    run cannot break a later page load (its wheel URLs change with each build). The copy's
    service worker does not know the added module: open it with service workers blocked."""
    shutil.copytree(source, dest)
    source = Path(__file__).with_name("browser_jobs.py")
    shutil.copy(source, dest / "jobs" / f"{JOB_MODULE}.py")
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["jobModules"].append({"module": JOB_MODULE, "url": f"jobs/{JOB_MODULE}.py",
                                   "sha256": hashlib.sha256(source.read_bytes()).hexdigest()})
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


def site_is_built() -> str | None:
    if not (SITE / "manifest.json").exists() or not (SITE / "test.html").exists():
        return ".cache/test-site is not built: npm ci && npm run build:test"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)"
    return None


def main(opts: Options) -> Result:
    """Serve a copy of site/, start Chromium with a profile on disk (OPFS on real disk, not
    in memory as in an incognito context), and run the chaos."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from serve import make_server
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="durably-chaos-") as tmp:
        site = site_copy(Path(tmp) / "site")
        return _serve_and_run(opts, site, Path(tmp) / "profile", make_server, sync_playwright)


def _serve_and_run(opts: Options, site: Path, profile: Path, make_server: Any, sync_playwright: Any) -> Result:
    server = make_server(site, 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        with sync_playwright() as pw:
            # Service workers blocked, as in the bench: the private copy's manifest gains a job
            # module after the build, which the precache list of sw.js does not know.
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, service_workers="block")
            try:
                return BrowserChaos(opts).run(context, f"http://127.0.0.1:{server.server_address[1]}/")
            finally:
                context.close()
    finally:
        server.shutdown()
        server.server_close()
