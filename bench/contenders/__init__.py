"""The contenders: label -> (module, options). Each module has the same function shape
(see ``bench.common``); options select a setting of the same library (e.g. DBOS tuned)."""

from __future__ import annotations

CPYTHON: dict[str, tuple[str, dict]] = {
    "durably": ("bench.contenders.durably_py", {}),
    "floor": ("bench.contenders.floor", {}),
    "dbos": ("bench.contenders.dbos_transact", {"tuned": False}),
    "dbos-wal": ("bench.contenders.dbos_transact", {"tuned": True}),
    "huey": ("bench.contenders.huey_sqlite", {}),
    # On the bench's own PostgreSQL server: only with python -m bench --postgres.
    "dbos-pg": ("bench.contenders.dbos_postgres", {}),
    "durably-pg": ("bench.contenders.durably_postgres", {"notify": True}),
    # The same without NOTIFY: the worker finds runs by polling (workload 3 only).
    "durably-pg-poll": ("bench.contenders.durably_postgres", {"notify": False}),
    # The commits a durable runtime cannot avoid, with psycopg on the same server.
    "pg-floor": ("bench.contenders.pg_floor", {}),
}

# The contenders that need the bench's PostgreSQL server (python -m bench --postgres).
POSTGRES: set[str] = {"dbos-pg", "durably-pg", "durably-pg-poll", "pg-floor"}

# Workload 7 (one-step runs/s against 1, 2, 4, 8 worker processes on one PostgreSQL server):
# the contenders that have a runs_workers(k, workers, db_path).
WORKERS: set[str] = {"dbos-pg", "durably-pg"}

# Contenders that run only some workloads' kinds (a setting measured where it matters).
ONLY_KINDS: dict[str, set[str]] = {"durably-pg-poll": {"trigger"}}

# Browser contenders of workloads 1-3: label -> page (driven by bench.browser). durably's is
# its own site's test page (a private copy, under /site/) with a bench-only job module.
BROWSER: dict[str, str] = {
    "durably-browser": "site/test.html?jobs=bench_jobs&debug=1",
    # The same page from another build of durably's site (--base-site DIR, e.g. an older
    # commit's .cache/test-site), served from a second origin so each keeps its own OPFS
    # database: "base:" pages go to that server. Old and new alternate in one run.
    "durably-browser-base": "base:site/test.html?jobs=bench_jobs&debug=1",
    "coji-durably": "coji.html",
    "browser-floor": "floor.html",
}

# Workload 5 (reload mid-job to the next step): label -> (page, most reloads per round).
# @coji/durably waits out its 30 s lease after each reload, so it gets 2 a round.
BROWSER_RESUME: dict[str, tuple[str, int]] = {
    "durably-browser": (BROWSER["durably-browser"], 100),
    "durably-browser-nosnap": ("site-nosnap/test.html?jobs=bench_jobs&debug=1", 100),
    "durably-browser-base": (BROWSER["durably-browser-base"], 100),
    "coji-durably": (BROWSER["coji-durably"], 2),
}

# Workload 4 only (page load to ready): label -> page, served by bench.browser (the site
# under /site/; the same site without its Python memory snapshot under /site-nosnap/, so the
# gain of the snapshot is measured side by side with the boot it replaces).
BROWSER_LOAD: dict[str, str] = {
    "durably-browser": "site/index.html",
    "durably-browser-nosnap": "site-nosnap/index.html",
    "durably-browser-base": "base:site/index.html",
    "pyodide-bare": "pyodide.html",
}


def host(name: str) -> str:
    return "browser" if name in BROWSER or name in BROWSER_LOAD else "cpython"


def engine(name: str) -> str:
    """The database a contender stores in: its figures are set against those on the same one."""
    return "postgresql" if name in POSTGRES else "sqlite"


def supports(name: str, kind: str) -> bool:
    """Workload 4 (load), 5 (resume) and 7 (workers) have their own lists; workloads 1-3 are
    for the CPython and BROWSER contenders."""
    if kind == "load":
        return name in BROWSER_LOAD
    if kind == "resume":
        return name in BROWSER_RESUME
    if kind == "workers":
        return name in WORKERS
    if name in ONLY_KINDS:
        return kind in ONLY_KINDS[name]
    return name in CPYTHON or name in BROWSER
