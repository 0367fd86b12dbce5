"""Browser chaos: reloads, closed tabs and terminated workers during slow multi-step jobs.

``python -m bench.chaos --host browser --interruptions 30 [--seed N]`` (a small version runs
in tests/browser/test_chaos_browser.py). Headless Chromium (Debian's ``/usr/bin/chromium``)
opens the site's test page (``test.html``, debug mode) and, for a fixed number of
interruptions at random moments while runs are executing:

- **reloads** the page (the page's ``pagehide`` closes the worker: the step in flight is
  cancelled and its lease handed back);
- **closes the tab** and opens a new one (no ``pagehide`` handler is awaited: the browser
  kills the worker);
- **terminates the worker** (``worker.terminate()`` from the page), then loads the page again.

The job is defined in the worker through ``evalPython`` after each boot, so the demo site
ships no test code. Its step bodies write a ledger row (``start``, then ``end`` or
``abort``) with the run id, step name, the page load's worker id and ``time.time()`` into
``chaos_ledger``, a table of the same database that the runtime never writes, each row
committed (autocommit) before the body returns. At the end everything is read back through
the page's API (getRuns, getSteps, the debug ``sql`` call, exportDatabase) and checked by
``bench/chaos/checks.py``, the CPython suite's checks: each page load is a "process" and each
interruption a kill of it.
"""

from __future__ import annotations

import base64
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

# Runs in the worker after every boot (evalPython's namespace has `app` and `host`). One run
# at a time (maxConcurrentRuns 1), so at most one body is in flight at an interruption.
JOBS_CODE = '''
import asyncio, time
from durably import job

app.driver.execute(
    "CREATE TABLE IF NOT EXISTS chaos_ledger (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
    "run_id TEXT NOT NULL, step TEXT NOT NULL, worker TEXT NOT NULL, t REAL NOT NULL)")
WORKER = app.worker_id

def note(kind, run_id, step):
    # Outside any transaction (none spans an await), so this commits on its own, at once.
    app.driver.execute("INSERT INTO chaos_ledger (kind, run_id, step, worker, t) VALUES (?, ?, ?, ?, ?)",
                       [kind, run_id, step, WORKER, time.time()])

@job("chaos-steps")
async def chaos_steps(step, input):
    total = 0
    for i, ms in enumerate(input["steps"]):
        async def body(name=f"s{i}", ms=ms):
            note("start", step.run_id, name)
            try:
                await asyncio.sleep(ms / 1000)
            except BaseException:
                try:
                    note("abort", step.run_id, name)
                finally:
                    raise
            note("end", step.run_id, name)
            return ms
        total += await step.run(f"s{i}", body)
    return {"total": total}

app.register(chaos_steps)
WORKER
'''


@dataclass
class Options:
    interruptions: int = 30
    runs: int = 0  # at least this many runs (more are triggered so work is always pending)
    seed: int = 0
    steps: tuple[int, int] = (3, 6)
    step_ms: tuple[int, int] = (100, 400)
    pause: tuple[float, float] = (0.2, 1.5)  # seconds between a page being ready and its interruption
    pending: int = 2  # runs kept unfinished before each interruption
    verbose: bool = False


@dataclass
class Result:
    report: checks.Report
    kinds: dict[str, int] = field(default_factory=dict)
    to_next_step: list[float] = field(default_factory=list)  # page load started -> first step (s)
    ready_to_step: list[float] = field(default_factory=list)  # worker ready -> first step (s)
    elapsed: float = 0.0

    def line(self) -> str:
        r = self.report
        kinds = ", ".join(f"{k} {self.kinds.get(k, 0)}" for k in KINDS)
        return (
            f"chaos browser: runs {r.runs}, steps {r.steps}, interruptions {r.interruptions} ({kinds}), "
            f"re-executed step bodies {r.reexecuted}, lost runs {r.lost}, duplicate completions {r.duplicates}, "
            f"half-written {r.half_written}, overlapping executions {r.overlaps}, "
            f"integrity {r.integrity}: {'PASS' if r.ok else 'FAIL'}"
        )

    def timing_line(self) -> str:
        def fig(values: list[float]) -> str:
            if not values:
                return "n/a"
            return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"

        return (f"reload to next step: {fig(self.to_next_step)} (n {len(self.to_next_step)}); "
                f"worker ready to next step: {fig(self.ready_to_step)}")


def test_page_url(site_url: str) -> str:
    options = {"maxConcurrentRuns": 1}
    return f"{site_url}test.html?{urlencode({'jobs': '', 'debug': '1', 'options': json.dumps(options)})}"


class _Load:
    """One page load: its worker id (the ledger's "process"), when it started and was ready."""

    def __init__(self, page: Any, started: float) -> None:
        self.page = page
        self.started = started
        self.ready = 0.0
        self.worker = ""


class BrowserChaos:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.triggered: list[str] = []
        self.loads: list[_Load] = []
        self.tl = checks.Timeline()
        self.kinds = {k: 0 for k in KINDS}

    def log(self, msg: str) -> None:
        if self.opts.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # -- the page ---------------------------------------------------------------------------

    def _boot(self, page: Any, url: str, started: float, navigate: str = "goto") -> _Load:
        load = _Load(page, started)
        if navigate == "reload":
            page.reload(wait_until="commit")
        else:
            page.goto(url, wait_until="commit")
        page.wait_for_function(
            "['ready', 'error'].includes(document.getElementById('status')?.dataset.state)"
            " && (document.getElementById('status').dataset.state !== 'ready' || window.durably)",
            timeout=BOOT_TIMEOUT_MS,
        )
        if page.get_attribute("#status", "data-state") != "ready":
            raise RuntimeError(f"the worker did not boot: {page.inner_text('#status')}")
        load.ready = time.time()
        load.worker = page.evaluate("(code) => window.durably.evalPython(code)", JOBS_CODE)
        self.loads.append(load)
        self.log(f"load {len(self.loads)}: {load.worker} ready in {load.ready - started:.1f} s")
        return load

    @staticmethod
    def _call(page: Any, method: str, params: dict | None = None) -> Any:
        return page.evaluate("([m, p]) => window.durably.call(m, p)", [method, params or {}])

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
        page = context.new_page()
        load = self._boot(page, url, time.time())
        for n, kind in enumerate(kinds, 1):
            self._top_up(load.page)
            time.sleep(self.rng.uniform(*self.opts.pause))
            pid = len(self.loads)
            t_int = time.time()
            self.tl.kills.append((pid, t_int))
            self.kinds[kind] += 1
            self.log(f"interruption {n}/{len(kinds)}: {kind} of load {pid}")
            if kind == "reload":
                load = self._boot(load.page, url, time.time(), navigate="reload")
            elif kind == "close-tab":
                fresh = context.new_page()  # keeps the context open while the old tab closes
                load.page.close()
                load = self._boot(fresh, url, time.time())
            else:
                load.page.evaluate("window.durably.worker.terminate()")
                load = self._boot(load.page, url, time.time())
            # The old worker cannot have executed anything once the new one holds the lock.
            self.tl.exits[pid] = load.ready
        while len(self.triggered) < self.opts.runs:
            self._trigger(load.page)
        page = load.page
        for run_id in self.triggered:
            page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 300}).catch(() => null)", run_id)
        result = self._collect(page)
        result.elapsed = time.time() - t0
        return result

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
        result = Result(rep, dict(self.kinds))
        # Reload to next step: from the start of each page load after an interruption to the
        # first step body its worker started (the ledger's own clock: the same system clock).
        first: dict[str, float] = {}
        for kind, _run, _step, worker, t in got["ledger"]:
            if kind == "start" and worker not in first:
                first[worker] = t
        for load in self.loads[1:]:
            if load.worker in first:
                result.to_next_step.append(first[load.worker] - load.started)
                result.ready_to_step.append(first[load.worker] - load.ready)
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
        # A private copy: a rebuild of site/ during a run of minutes (its wheel URLs change
        # with each build) must not make a later page load fail.
        site = Path(tmp) / "site"
        shutil.copytree(SITE, site)
        return _serve_and_run(opts, site, Path(tmp) / "profile", make_server, sync_playwright)


def _serve_and_run(opts: Options, site: Path, profile: Path, make_server: Any, sync_playwright: Any) -> Result:
    server = make_server(site, 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                return BrowserChaos(opts).run(context, f"http://127.0.0.1:{server.server_address[1]}/")
            finally:
                context.close()
    finally:
        server.shutdown()
        server.server_close()
