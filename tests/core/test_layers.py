"""The package's layers, as docs/architecture.md's module map states them: each module
imports only the modules listed for it there. A new import is a change to that table."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "py" / "durably"
BASE = {"errors", "limits", "clock"}

# docs/architecture.md, "The module map": module -> what it may import (besides itself).
IMPORTS: dict[str, set[str]] = {
    "__init__": {"app", "errors", "events", "jobs", "models", "retries", "steps"},
    "__main__": {"cli"},
    "browser": {"__init__", "app", "settings", "validation", "jsondata", "events", "jobs", "models", "pyodide_driver"}
    | BASE,
    "cli": {
        "app", "settings", "validation", "jsondata", "events", "jobs", "models", "schedules", "driver", "pg_driver",
        "site",
    }
    | BASE,
    # The site build (durably site build): the configuration and the requirements.
    "site": {"__init__", "errors", "settings"},
    "app": {
        "worker", "runtime", "store", "copying", "driver", "pg_driver", "events", "jobs", "settings", "validation",
        "jsondata", "models",
    }
    | BASE,
    "worker": {"__init__", "runtime", "store", "schedules", "jsondata"} | BASE,
    "runtime": {"steps", "store", "events", "jobs", "retries", "settings", "jsondata", "validation"} | BASE,
    "steps": {"store", "jobs", "retries", "jsondata", "validation", "runtime"} | BASE,
    "store": {"dialect", "rows", "driver", "models", "jsondata"} | BASE,
    "copying": {"store", "errors"},
    "dialect": {"migrations", "rows", "pg_sql"},
    "rows": {"models", "jsondata", "clock"},
    "migrations": set(),
    "migrations_postgres": {"migrations"},
    "driver": {"errors"},
    "pyodide_driver": {"driver", "errors"},
    "pg_driver": {"errors"},
    "pg_sql": {"dialect", "migrations_postgres", "rows"},
    "jobs": {"schemas", "retries", "schedules", "validation"} | BASE,
    "retries": {"validation"} | BASE,
    "schedules": {"models"} | BASE,
    "events": {"clock", "errors", "validation"},
    "schemas": {"errors", "validation"},
    "settings": {"validation"} | BASE,
    "jsondata": {"limits", "errors", "validation"},
    "validation": {"limits", "errors"},
    "models": {"clock"},
    "clock": set(),
    "limits": set(),
    "errors": set(),
}
# Imported for type hints only (under TYPE_CHECKING): no import at run time.
TYPE_ONLY = {("steps", "runtime")}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import __version__, limits
                found.update("__init__" if alias.name == "__version__" else alias.name for alias in node.names)
    return found


def test_every_module_imports_only_what_the_module_map_allows():
    modules = {path.stem: path for path in PACKAGE.glob("*.py")}
    assert set(modules) == set(IMPORTS), "a module was added or removed: put it in the module map"
    wrong = {
        name: sorted(_imports(path) - IMPORTS[name] - {name})
        for name, path in modules.items()
        if _imports(path) - IMPORTS[name] - {name}
    }
    assert wrong == {}, f"imports the module map does not allow: {wrong}"


def test_below_the_hosts_nothing_imports_the_app_and_the_kernel_never_does():
    for name in IMPORTS:
        if name not in ("__init__", "browser", "cli"):
            assert "app" not in IMPORTS[name] or name == "app", name
    assert not {"app", "worker", "browser", "cli"} & IMPORTS["runtime"]
    assert ("steps", "runtime") in TYPE_ONLY
    source = (PACKAGE / "steps.py").read_text()
    assert "if TYPE_CHECKING:\n    from .runtime import Runtime" in source
