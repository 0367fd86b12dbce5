"""The core's behavioural suite (every file of tests/core/behaviour/), run inside Pyodide in
the browser on SQLite WASM (opfs-sahpool), one pytest test per core test.

The suite needs only ``make_app``, ``clock`` and ``pytest.raises``/``pytest.importorskip``:
the worker gets a small ``pytest`` shim and a ``make_app`` that builds ``Durably`` apps on
``/core-tests.db``, a separate database file in the same OPFS pool (opened through the
bridge's ``open``), recreated for every test, so the page's own database is never touched.
Apps made in one test share that connection, as processes share a file on CPython: each
store call is synchronous and no transaction spans an ``await``.

One page boots once for the whole module (a boot costs seconds) and loads every file of the
suite as a module of a package (``behaviour``, as on CPython, so their relative imports of
``helpers`` work); each test then runs one coroutine of the suite in the worker through
``evalPython`` and reports its traceback.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

SUITE = Path(__file__).resolve().parents[1] / "core" / "behaviour"
# A core test that cannot apply in a browser is listed here with the reason (none so far).
NOT_IN_BROWSER: dict[str, str] = {}


def _suite_files() -> dict[str, str]:
    """Module name (in the package ``behaviour``) -> source, helpers first: every file but
    ``conftest.py``, whose fixture (SQLite and PostgreSQL on CPython) this harness replaces."""
    files = sorted(SUITE.glob("*.py"), key=lambda p: (p.stem != "helpers", p.stem))
    return {p.stem: p.read_text() for p in files if p.stem not in ("__init__", "conftest")}


def _suite_tests() -> list[str]:
    """``module::test`` for every test of every file of the suite."""
    found = []
    for module, source in _suite_files().items():
        for node in ast.parse(source).body:
            if isinstance(node, (ast.AsyncFunctionDef, ast.FunctionDef)) and node.name.startswith("test_"):
                found.append(f"{module}::{node.name}")
    return found


HARNESS = r'''
import asyncio, contextlib, inspect, re, sys, traceback, types
from datetime import datetime, timedelta, timezone

import durably_bridge
from durably import Durably
from durably.pyodide_driver import PyodideDriver

DB = "/core-tests.db"

class Skipped(Exception):
    pass

class _Raises:
    def __init__(self, expected, match=None):
        self.expected, self.match, self.value, self.type = expected, match, None, None
    def __enter__(self):
        return self
    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            raise AssertionError(f"DID NOT RAISE {self.expected}")
        if not issubclass(exc_type, self.expected):
            return False
        if self.match is not None and not re.search(self.match, str(exc)):
            raise AssertionError(f"regex {self.match!r} does not match {str(exc)!r}")
        self.value, self.type = exc, exc_type
        return True

def _importorskip(name, *args, **kwargs):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as exc:
        raise Skipped(f"{name} is not installed in Pyodide: {exc}") from None

shim = types.ModuleType("pytest")
shim.raises = lambda expected, match=None: _Raises(expected, match)
shim.importorskip = _importorskip
shim.skip = lambda reason="": (_ for _ in ()).throw(Skipped(reason))
sys.modules["pytest"] = shim

class FakeClock:
    def __init__(self):
        self.now = datetime.now(timezone.utc)
    def __call__(self):
        return self.now
    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)

package = types.ModuleType("behaviour")
package.__path__ = []
sys.modules["behaviour"] = package
for module_name, source in SOURCES.items():  # helpers first: the tests import it
    module = types.ModuleType(f"behaviour.{module_name}")
    module.__file__ = f"tests/core/behaviour/{module_name}.py"
    module.__package__ = "behaviour"
    sys.modules[module.__name__] = module
    setattr(package, module_name, module)
    exec(compile(source, module.__file__, "exec"), module.__dict__)

def count_tests():
    return sum(
        name.startswith("test_")
        for module_name in SOURCES
        for name in vars(getattr(package, module_name))
    )

async def run_core_test(test_id, timeout=120):
    module_name, name = test_id.split("::")
    fn = getattr(getattr(package, module_name), name)
    with contextlib.suppress(Exception):
        durably_bridge.remove(DB)
    bridge = durably_bridge.open(DB)
    apps = []
    def make_app(jobs=(), **options):
        options.setdefault("polling_interval", 0.05)
        options.pop("db", None)
        app = Durably(PyodideDriver(bridge), jobs=jobs, **options)
        apps.append(app)
        return app
    fixtures = {"make_app": make_app, "clock": FakeClock()}
    kwargs = {p: fixtures[p] for p in inspect.signature(fn).parameters}
    try:
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            await asyncio.wait_for(result, timeout)
        outcome = {"outcome": "passed"}
    except Skipped as exc:
        outcome = {"outcome": "skipped", "reason": str(exc)}
    except BaseException:
        outcome = {"outcome": "failed", "traceback": traceback.format_exc()}
    for app in apps:
        with contextlib.suppress(BaseException):
            if app.running:
                await app.stop(0)
            app.close()
    bridge.close()
    return outcome

globals()["run_core_test"] = run_core_test
'''


@pytest.fixture(scope="module")
def pyodide_page(browser, site_url, durably):
    Durably = durably
    context = browser.new_context()
    page = context.new_page()
    try:
        Durably.open(page, site_url)
        # evalPython's namespace is fresh for each call: keep the harness in a module.
        code = (
            "import sys, types\n"
            "h = types.ModuleType('core_harness')\n"
            "sys.modules['core_harness'] = h\n"
            f"h.__dict__['SOURCES'] = {_suite_files()!r}\n"
            f"exec(compile({HARNESS!r}, 'core_harness', 'exec'), h.__dict__)\n"
            "h.count_tests()"
        )
        assert Durably.eval(page, code) == len(_suite_tests())
        yield page
    finally:
        context.close()


def test_the_harness_runs_every_file_of_the_suite():
    on_disk = {p.stem for p in SUITE.glob("test_*.py")}
    assert on_disk and {test.split("::")[0] for test in _suite_tests()} == on_disk


@pytest.mark.parametrize("name", _suite_tests())
def test_core_behaviour_in_pyodide(pyodide_page, durably, name):
    if name in NOT_IN_BROWSER:
        pytest.skip(NOT_IN_BROWSER[name])
    result = durably.eval(pyodide_page, f"import core_harness\nawait core_harness.run_core_test({name!r})")
    if result["outcome"] == "skipped":
        pytest.skip(f"in Pyodide: {result['reason']}")
    assert result["outcome"] == "passed", f"{name} failed inside Pyodide:\n{result['traceback']}"
