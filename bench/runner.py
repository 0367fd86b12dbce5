"""Run the cases round by round, alternating the contenders, and summarise.

Each round runs every case once per contender, in a rotated order (round r starts with the
r-th contender), so no contender always goes first or always runs on a machine warmed or
loaded by the same neighbour. The machine is shared and noisy: figures are medians over
rounds with min and max, and ratios are taken within a round (side by side) before their
median is taken.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata

from bench.common import percentile, remove_db, spread
from bench.contenders import BROWSER, BROWSER_LOAD, BROWSER_RESUME, CPYTHON, POSTGRES, engine, host, supports

ROOT = os.path.dirname(os.path.abspath(__file__))
TMP = os.path.join(ROOT, "results", "tmp")

# (metric, unit, higher_is_better) per kind of case; the first one is the headline.
METRICS = {
    "steps": [
        ("steps_per_s", "steps/s", True),
        ("us_per_step", "µs/step", False),
        ("first_slice_us", "µs/step, first slice", False),
        ("last_slice_us", "µs/step, last slice", False),
        ("last_over_first", "last/first slice", False),
    ],
    "runs": [("runs_per_s", "runs/s", True)],
    "workers": [("runs_per_s", "runs/s, steady state", True), ("wall_runs_per_s", "runs/s, wall clock", True)],
    "load": [
        ("cold_ms", "cold: load to ready ms", False),
        ("warm_ms_p50", "warm: reload to ready ms p50", False),
    ],
    "trigger": [
        ("trigger_ms_p50", "trigger ms p50", False),
        ("trigger_ms_p95", "trigger ms p95", False),
        ("start_ms_p50", "trigger-to-start ms p50", False),
        ("start_ms_p95", "trigger-to-start ms p95", False),
    ],
    "resume": [
        ("reload_ms_p50", "reload to next step ms p50", False),
        ("reload_ms_max", "reload to next step ms max", False),
        ("ready_ms_p50", "worker ready to next step ms p50", False),
        ("ready_ms_max", "worker ready to next step ms max", False),
    ],
}


@dataclass(frozen=True)
class Case:
    id: str
    workload: int
    kind: str  # steps | runs | trigger | load | resume | workers
    func: str
    params: dict
    title: str
    host: str | None = None  # "cpython" or "browser": the case is only for that host's contenders


@dataclass
class Plan:
    mode: str
    rounds: int
    cases: list[Case]
    scale_runs: int | None
    timeout: float
    contenders: list[str] = field(default_factory=lambda: [n for n in CPYTHON if n not in POSTGRES])
    browser: bool = False
    postgres: bool = False


LOAD_CASE = Case("4-load", 4, "load", "load_time", {"warm": 3},
                 "Workload 4 (browser): page load to worker ready, cold (fresh profile) and warm (3 reloads)")


def resume_case(reloads: int) -> Case:
    return Case("5-resume", 5, "resume", "resume", {"reloads": reloads},
                f"Workload 5 (browser): reload in the middle of a step to the next step starting "
                f"({reloads} reloads a round; @coji/durably 2)")


# The smoke run's CPython contenders: the floor, durably and one peer (DBOS with our settings,
# the one the targets name); the full run has them all.
QUICK_CONTENDERS = ["floor", "durably", "dbos-wal"]


def workers_cases(k: int) -> list[Case]:
    """Workload 7 (issue 13): K one-step runs against 1, 2, 4 and 8 worker processes."""
    return [Case(f"7-workers-w{w}", 7, "workers", "runs_workers", {"k": k, "workers": w},
                 f"Workload 7 (PostgreSQL): {k:,} one-step runs, {w} worker process{'es' if w > 1 else ''}")
            for w in (1, 2, 4, 8)]


def make_plan(quick: bool, rounds: int | None = None, scale_runs: int | None = None,
              browser: bool = False, postgres: bool = False) -> Plan:
    plan = _make_plan(quick, rounds, scale_runs, browser)
    if postgres:
        plan.postgres = True
        plan.contenders += sorted(POSTGRES)
        plan.cases += workers_cases(200 if quick else 2_000)
    return plan


def _make_plan(quick: bool, rounds: int | None, scale_runs: int | None, browser: bool) -> Plan:
    if quick:
        cases = [
            Case("1-steps-n200", 1, "steps", "steps", {"n": 200, "slices": 10}, "Workload 1: one run of 200 steps"),
            Case("2-runs-k50", 2, "runs", "runs", {"k": 50}, "Workload 2: 50 one-step runs triggered at once"),
            Case("3-trigger-k20", 3, "trigger", "trigger_latency", {"k": 20}, "Workload 3: trigger and trigger-to-start latency (20 samples)"),
        ]
        if browser:
            cases += [LOAD_CASE, resume_case(2)]
        return Plan("quick", rounds or 1, cases, 1000 if scale_runs is None else scale_runs, 120,
                    contenders=list(QUICK_CONTENDERS), browser=browser)
    cases = [
        Case("1-steps-n200", 1, "steps", "steps", {"n": 200, "slices": 10}, "Workload 1: one run of 200 steps"),
        # 10,000 steps take @coji/durably 4-6 minutes a round: the browser's large N is 2,000
        Case("1-steps-n2000", 1, "steps", "steps", {"n": 2_000, "slices": 20}, "Workload 1: one run of 2,000 steps (browser)", "browser"),
        Case("1-steps-n10000", 1, "steps", "steps", {"n": 10_000, "slices": 20}, "Workload 1: one run of 10,000 steps (CPython)", "cpython"),
        Case("2-runs-k100", 2, "runs", "runs", {"k": 100}, "Workload 2: 100 one-step runs triggered at once"),
        Case("3-trigger-k100", 3, "trigger", "trigger_latency", {"k": 100}, "Workload 3: trigger and trigger-to-start latency (100 samples)"),
    ]
    if browser:
        cases += [LOAD_CASE, resume_case(5)]
    return Plan("full", rounds or 3, cases, 100_000 if scale_runs is None else scale_runs, 1800, browser=browser)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(module: str, func: str, kwargs: dict, timeout: float) -> dict:
    """Run one measurement in a child process; return its result or ``{"error": ...}``."""
    os.makedirs(TMP, exist_ok=True)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    out = os.path.join(TMP, f"result-{tag}.json")
    db = os.path.join(TMP, f"bench-{tag}.db")
    kwargs = {**kwargs, "db_path": db}
    cmd = [sys.executable, "-m", "bench.child", module, func, json.dumps(kwargs), out]
    cwd = os.path.dirname(ROOT)  # so that `bench` imports from this checkout
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        try:
            with open(out) as f:
                got = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            got = {"error": f"child exited {proc.returncode} without a result: {proc.stderr[-2000:]}"}
    except subprocess.TimeoutExpired:
        got = {"error": f"timed out after {timeout:.0f} s"}
    finally:
        remove_db(db)
        if os.path.exists(out):
            os.remove(out)
    if "ok" in got:
        return got["ok"]
    return {"error": got["error"], "traceback": got.get("traceback")}


def derive(kind: str, r: dict) -> dict:
    """The per-round figures a case is summarised by."""
    if "error" in r:
        return {}
    if kind == "steps":
        sl = r["slice_us_per_step"]
        return {
            "steps_per_s": r["steps_per_s"],
            "us_per_step": 1e6 / r["steps_per_s"],
            "first_slice_us": sl[0],
            "last_slice_us": sl[-1],
            "last_over_first": sl[-1] / sl[0],
        }
    if kind == "runs":
        return {"runs_per_s": r["runs_per_s"]}
    if kind == "workers":
        return {"runs_per_s": r["runs_per_s"], "wall_runs_per_s": r["wall_runs_per_s"]}
    if kind == "load":
        return {"cold_ms": r["cold_ms"], "warm_ms_p50": percentile(r["warm_ms"], 50)}
    if kind == "resume":
        return {"reload_ms_p50": percentile(r["reload_ms"], 50), "reload_ms_max": max(r["reload_ms"]),
                "ready_ms_p50": percentile(r["ready_ms"], 50), "ready_ms_max": max(r["ready_ms"])}
    return {
        "trigger_ms_p50": percentile(r["trigger_ms"], 50),
        "trigger_ms_p95": percentile(r["trigger_ms"], 95),
        "start_ms_p50": percentile(r["start_ms"], 50),
        "start_ms_p95": percentile(r["start_ms"], 95),
    }


def _ratio(a: float, b: float, higher_better: bool) -> float:
    """How many times better a is than b (above 1: a is better)."""
    return a / b if higher_better else b / a


def summarise(case: Case, per_round: dict[str, list[dict]]) -> dict:
    figures = {name: [derive(case.kind, r) for r in rs] for name, rs in per_round.items()}
    summary = {
        name: {m: spread([f[m] for f in fs if m in f]) for m, _, _ in METRICS[case.kind]}
        for name, fs in figures.items()
    }
    ratios: dict = {}
    names = [n for n in per_round if any(figures[n])]
    for a, b in itertools.combinations(names, 2):
        if host(a) != host(b) or engine(a) != engine(b):
            continue  # a browser figure against a CPython one, or SQLite's against PostgreSQL's, says nothing
        pair = {}
        for m, _, higher in METRICS[case.kind]:
            if m == "last_over_first":
                continue
            vals = [
                _ratio(fa[m], fb[m], higher)
                for fa, fb in zip(figures[a], figures[b], strict=False)
                if m in fa and m in fb and fa[m] and fb[m]
            ]
            pair[m] = spread(vals)
        ratios[f"{a} vs {b}"] = pair
    return {"figures": figures, "summary": summary, "ratios": ratios}


def _versions() -> dict:
    out = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for pkg in ("dbos", "huey", "sqlalchemy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    out["commit"] = _commit(ROOT)
    from bench import browser

    if browser.base_site():  # the other build measured as durably-browser-base, and its commit
        out["base_site"] = browser.base_site()
        out["base_commit"] = _commit(browser.base_site())
    return out


def _commit(folder: str) -> str | None:
    """The git commit a folder's checkout is at (with "+changes" if it has uncommitted ones)."""
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+changes" if dirty else "")


def _pg_version(cluster) -> str:
    try:
        return str(cluster.execute("SHOW server_version")[0][0])
    except Exception as exc:  # the figures matter more than the version line
        return f"unknown ({exc})"


def _runs(name: str, case: Case) -> bool:
    return supports(name, case.kind) and (case.host is None or case.host == host(name))


def run_plan(plan: Plan, only: list[str] | None = None) -> dict:
    if not plan.postgres:
        return _run_plan(plan, only, {})
    # One server for every PostgreSQL contender, fsync on (the server's defaults); each
    # measurement makes a database of its own on it (see bench.contenders.dbos_postgres).
    from bench import pg_cluster

    with pg_cluster.PgCluster(durable=True) as cluster:
        os.environ["DURABLY_BENCH_PG_URL"] = cluster.url("postgres")
        try:
            return _run_plan(plan, only, {"postgresql": _pg_version(cluster)})
        finally:
            os.environ.pop("DURABLY_BENCH_PG_URL", None)


def _run_plan(plan: Plan, only: list[str] | None, server_versions: dict) -> dict:
    names = list(plan.contenders) + (list(BROWSER) + list(BROWSER_LOAD) if plan.browser else [])
    if only:  # --only may name any contender, also one the plan leaves out by default
        names += [n for n in only if n in CPYTHON]
    names = [n for n in dict.fromkeys(names) if not only or n in only]
    if not only:  # the other build is measured when one was given (--base-site)
        from bench import browser

        names = [n for n in names if n != "durably-browser-base" or browser.base_site()]
    status: dict[str, dict] = {}
    session = None
    for name in names:
        if name in BROWSER or name in BROWSER_LOAD:
            from bench import browser

            reason = browser.available(BROWSER_LOAD.get(name))
        else:
            module, _ = CPYTHON[name]
            reason = importlib.import_module(module).available()
        status[name] = {"available": reason is None, "reason": reason}
        if reason:
            _log(f"skip {name}: {reason}")
    live = [n for n in names if status[n]["available"]]
    if any(host(n) == "browser" for n in live):
        from bench import browser

        browser.build()
        session = browser.BrowserSession(os.path.join(TMP, "chromium-profile"))

    started = time.time()
    load_start = os.getloadavg()
    per_case: dict[str, dict[str, list[dict]]] = {
        c.id: {n: [] for n in live if _runs(n, c)} for c in plan.cases
    }
    try:
        for rnd in range(plan.rounds):
            order = live[rnd % len(live):] + live[: rnd % len(live)] if live else []
            for case in plan.cases:
                for name in order:
                    if not _runs(name, case):
                        continue
                    t = time.monotonic()
                    if case.kind == "load":
                        r = session.load_time(BROWSER_LOAD[name], case.params["warm"], plan.timeout)
                    elif case.kind == "resume":
                        page, most = BROWSER_RESUME[name]
                        r = session.resume(page, min(most, case.params["reloads"]), plan.timeout)
                    elif name in BROWSER:
                        r = session.measure(BROWSER[name], case.func, case.params, plan.timeout)
                    else:
                        module, options = CPYTHON[name]
                        r = measure(module, case.func, {**case.params, **options}, plan.timeout)
                    per_case[case.id][name].append(r)
                    head = METRICS[case.kind][0][0]
                    shown = derive(case.kind, r).get(head)
                    _log(
                        f"round {rnd + 1}/{plan.rounds} {case.id:16} {name:13} "
                        + (f"{head}={shown:.1f}" if shown is not None else f"ERROR {r.get('error')}")
                        + f"  ({time.monotonic() - t:.1f} s wall)"
                    )

    finally:
        browser_versions = session.versions if session else {}
        if session:
            session.close()

    cases_out = []
    for case in plan.cases:
        if not per_case[case.id]:
            continue  # none of the selected contenders runs it (e.g. CPython's N with --only browser)
        s = summarise(case, per_case[case.id])
        cases_out.append({
            "id": case.id, "workload": case.workload, "kind": case.kind, "title": case.title,
            "params": case.params, "raw": per_case[case.id], **s,
        })

    scale = None
    if plan.scale_runs and "durably" in live:
        _log(f"scale: durably on {plan.scale_runs} runs")
        module, _ = CPYTHON["durably"]
        scale = measure(module, "scale", {"n_runs": plan.scale_runs}, plan.timeout * 2)
        _log(f"scale: {scale}")
    elif plan.scale_runs:
        scale = {"skipped": status.get("durably", {}).get("reason") or "durably not selected"}

    return {
        "meta": {
            "mode": plan.mode,
            "rounds": plan.rounds,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_seconds": time.time() - started,
            "host": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "loadavg_at_start": load_start,
                "loadavg_at_end": os.getloadavg(),
            },
            "versions": {**_versions(), **browser_versions, **server_versions},
            "command": " ".join(["python -m bench"] + sys.argv[1:]),
        },
        "contenders": status,
        "cases": cases_out,
        "scale": scale,
    }
