"""The contenders: label -> (module, options). Each module has the same function shape
(see ``bench.common``); options select a setting of the same library (e.g. DBOS tuned)."""

from __future__ import annotations

CPYTHON: dict[str, tuple[str, dict]] = {
    "durably": ("bench.contenders.durably_py", {}),
    "floor": ("bench.contenders.floor", {}),
    "dbos": ("bench.contenders.dbos_transact", {"tuned": False}),
    "dbos-wal": ("bench.contenders.dbos_transact", {"tuned": True}),
    "huey": ("bench.contenders.huey_sqlite", {}),
}

# Browser contenders: label -> page under bench/web/ (driven by bench.browser). durably's own
# browser host joins here once the site build (Pyodide worker) exists.
BROWSER: dict[str, str] = {
    "coji-durably": "coji.html",
    "browser-floor": "floor.html",
}

# Workload 4 only (page load to ready): label -> page, served by bench.browser (the site
# under /site/).
BROWSER_LOAD: dict[str, str] = {
    "durably-browser": "site/index.html",
    "pyodide-bare": "pyodide.html",
}


def host(name: str) -> str:
    return "browser" if name in BROWSER or name in BROWSER_LOAD else "cpython"


def supports(name: str, kind: str) -> bool:
    """Load-only contenders run workload 4 and nothing else; the others never run it."""
    return (kind == "load") == (name in BROWSER_LOAD)
