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


def host(name: str) -> str:
    return "browser" if name in BROWSER else "cpython"
