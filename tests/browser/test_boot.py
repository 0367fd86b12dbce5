"""The browser host boots: sqlite-wasm on OPFS, Pyodide, the wheels, and Python's driver."""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.browser

PHASES = ["lock", "sqlite", "pool", "open", "snapshot", "install", "import", "start"]


def test_boot_reports_every_phase_with_its_timing(page, site_url, durably):
    timings = durably.open(page, site_url)
    # Python comes from the site's memory snapshot (tests/browser/test_snapshot.py): no
    # "pyodide" phase.
    assert list(timings) == PHASES
    shown = page.inner_text("#phases")
    for phase in PHASES:
        assert f"{phase}: {timings[phase]} ms" in shown
    pong = durably.call(page, "ping")
    assert pong["driver"] == "opfs-sahpool"
    assert pong["python"].startswith("3.")
    # durably is installed as a distribution, and micropip, put on sys.path at boot as the
    # site's own wheel but not imported, imports when a job wants it.
    assert durably.eval(page, "import importlib.metadata as m\nm.version('durably')") == pong["durably"]
    assert durably.eval(page, "import sys\n'micropip' in sys.modules") is False
    assert durably.eval(page, "import micropip, importlib.metadata as m\n[micropip.__version__, m.version('micropip')]") == ["0.11.1", "0.11.1"]


def test_a_row_written_by_python_survives_a_reload(page, site_url, durably):
    durably.open(page, site_url)
    durably.sql(page, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, extra BLOB)")
    written = durably.sql(page, "INSERT INTO notes (body, extra) VALUES (?, NULL)", ["kept across reloads"])
    assert written == {"rows": [], "changes": 1}

    page.reload()
    durably.wait_until_ready(page)

    assert durably.sql(page, "SELECT id, body, extra FROM notes") == {"rows": [[1, "kept across reloads", None]], "changes": 0}
    # The database really is on the OPFS pool, in write-ahead-log mode (docs/browser.md).
    assert durably.sql(page, "PRAGMA journal_mode")["rows"] == [["wal"]]


def test_sql_values_and_errors_cross_the_bridge_as_plain_python(page, site_url, durably):
    durably.open(page, site_url)
    result = durably.sql(page, "SELECT NULL, 1.5, 'text', x'00ff', 9007199254740993 = 9007199254740992 + 1, typeof(?)", [None])
    # NULL is None (not jsnull), the BLOB is bytes, the comparison of two integers beyond
    # 2^53 ran in SQLite, and a Python None binds as SQL NULL.
    assert result["rows"] == [[None, 1.5, "text", {"$bytes": "00ff"}, 1, "null"]]

    error = page.evaluate(
        "window.durably.call('sql', {sql: 'SELECT * FROM missing'}).then(() => null, (e) => ({name: e.name, message: e.message, code: e.code}))"
    )
    assert error == {"name": "StorageError", "message": "no such table: missing", "code": "SQLITE_ERROR"}

    durably.sql(page, "CREATE TABLE u (k TEXT UNIQUE)")
    durably.sql(page, "INSERT INTO u VALUES ('a')")
    error = page.evaluate(
        "window.durably.call('sql', {sql: \"INSERT INTO u VALUES ('a')\"}).then(() => null, (e) => e.code)"
    )
    assert error == "SQLITE_CONSTRAINT_UNIQUE"


def test_every_kind_of_value_is_stored_exactly_through_the_driver(page, site_url, durably):
    # The driver hands plain values (str, int, float, None) to the bridge as arguments and the
    # bridge binds them itself; anything else (bytes, bool) goes the converted way. Both must
    # store exactly what Python gave: checked in SQLite by type and by the bytes stored.
    durably.open(page, site_url)
    mismatches = durably.eval(page, """
values = ["", "plain", "é", "😀 and 中文", "nul\\x00inside", "x" * 5000, "é😀" * 20000, "z" * 70000,
          0, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**53, 2**62, -(2**63),
          1.5, -0.25, 1e300, None, True, False, b"", b"\\x00\\xff", bytearray(b"ab")]
d = app._store.driver
d.execute("CREATE TABLE vals (i INTEGER PRIMARY KEY, v)")
for i, v in enumerate(values):
    d.execute("INSERT INTO vals VALUES (?, ?)", (i, v))
rows, _ = d.execute("SELECT v, typeof(v), hex(v) FROM vals ORDER BY i")
def expected(v):
    if v is None: return (None, "null", "")
    if isinstance(v, bool): return (int(v), "integer", str(int(v)).encode().hex().upper())
    if isinstance(v, int): return (v, "integer", str(v).encode().hex().upper())
    if isinstance(v, float): return (v, "real", None)
    if isinstance(v, str): return (v, "text", v.encode().hex().upper())
    return (bytes(v), "blob", bytes(v).hex().upper())
bad = [] if len(rows) == len(values) else [f"{len(rows)} rows for {len(values)} values"]
for v, (got, kind, hexed) in zip(values, rows):
    want_value, want_kind, want_hex = expected(v)
    same_value = bytes(got) == want_value if kind == "blob" else kind == "text" or got == want_value
    if kind != want_kind or (want_hex is not None and hexed != want_hex) or not same_value:
        bad.append([repr(v)[:40], repr(got)[:40], kind, hexed[:40]])
bad
""")
    assert mismatches == []


def test_a_long_string_is_bound_without_reserving_three_times_its_size(page, site_url, durably):
    # SQLite's heap is capped at 64 MiB (a fresh worker per test: the cap only goes down).
    # A 30-million-character string needs 30 MB as UTF-8; reserving UTF-8's worst case (3
    # bytes a character, 90 MB) for it would fail with "out of memory".
    durably.open(page, site_url)
    result = durably.eval(page, """
d = app._store.driver
d.execute("PRAGMA hard_heap_limit = 67108864")
text = "x" * 30_000_000 + "é"
rows, _ = d.execute("SELECT length(?1), ?2", (text, "small"))
rows2, _ = d.execute("SELECT ?1", ("next",))
[list(rows[0]), list(rows2[0])]
""")
    assert result == [[30_000_001, "small"], ["next"]]


def test_boot_needs_nothing_outside_127_0_0_1(context, site_url, durably):
    allowed: list[str] = []
    refused: list[str] = []

    def only_loopback(route):
        url = route.request.url
        if urlparse(url).hostname == "127.0.0.1":
            allowed.append(url)
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    durably.open(page, site_url)
    durably.sql(page, "CREATE TABLE offline (x)")
    assert refused == []
    # The route really saw the worker's own downloads, so the check above is not vacuous.
    assert any(u.endswith("pyodide.asm.wasm") for u in allowed), allowed
    assert any(u.endswith(".whl") for u in allowed), allowed


def test_a_second_tab_follows_the_first_and_takes_over_when_it_closes(context, site_url, durably):
    first = context.new_page()
    durably.open(first, site_url)
    durably.sql(first, "CREATE TABLE handover (who TEXT)")
    durably.sql(first, "INSERT INTO handover VALUES ('first')")

    second = context.new_page()
    second.goto(durably.test_page(site_url))
    durably.wait_until_ready(second)
    # Usable at once: its calls go to the first tab's worker, which holds the database.
    assert second.get_attribute("#status", "data-role") == "follower"
    assert durably.sql(second, "SELECT who FROM handover")["rows"] == [["first"]]
    durably.sql(second, "INSERT INTO handover VALUES ('second')")

    first.close(run_before_unload=True)
    second.wait_for_function("document.getElementById('status').dataset.role === 'leader'", timeout=durably.boot_timeout)
    assert durably.sql(second, "SELECT who FROM handover ORDER BY who")["rows"] == [["first"], ["second"]]
    assert durably.call(second, "ping")["driver"] == "opfs-sahpool"


def test_a_job_module_that_fails_to_import_is_shown_with_its_traceback(context, site_url, durably):
    broken = b"import durably\nraise RuntimeError('job file is broken')\n"
    context.route("**/jobs/demo_jobs.py", lambda route: route.fulfill(status=200, content_type="text/x-python", body=broken))

    def manifest(route):
        # The worker checks each file against manifest.json: a site built with this module.
        data = route.fetch().json()
        for entry in data["jobModules"]:
            if entry["module"] == "demo_jobs":
                entry["sha256"] = hashlib.sha256(broken).hexdigest()
        route.fulfill(json=data)

    context.route("**/manifest.json", manifest)
    page = context.new_page()
    page.goto(durably.test_page(site_url, ["demo_jobs"]))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=durably.boot_timeout)
    assert page.inner_text("#status") == (
        "Could not start (import): cannot import demo_jobs: RuntimeError: job file is broken"
    )
    assert 'File "/home/pyodide/durably_jobs/demo_jobs.py", line 2' in page.inner_text("#error")
    # connect() rejects with the boot's error, not left hanging.
    error = page.evaluate("window.connectError")
    assert (error["name"], error["phase"]) == ("BootError", "import")
    assert "RuntimeError: job file is broken" in error["detail"]


def test_a_wheel_that_cannot_be_downloaded_fails_the_install_phase_clearly(context, site_url, durably):
    context.route("**/durably-*.whl", lambda route: route.fulfill(status=404, body="gone"))
    page = context.new_page()
    page.goto(durably.test_page(site_url))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=durably.boot_timeout)
    status = page.inner_text("#status")
    assert re.fullmatch(
        r"Could not start \(install\): cannot download wheels/\w+/durably-[^/]+\.whl: HTTP 404\. "
        r"Is the site fully deployed\?",
        status,
    ), status


def test_a_wheel_that_is_not_the_built_one_is_refused(context, site_url, durably):
    context.route("**/durably-*.whl", lambda route: route.fulfill(status=200, content_type="application/zip", body=b"PK not it"))
    page = context.new_page()
    page.goto(durably.test_page(site_url))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=durably.boot_timeout)
    assert re.fullmatch(
        r"Could not start \(install\): wheels/\w+/durably-[^/]+\.whl is not the file this site was built with "
        r"\(SHA-256 \w{12}\.\.\., expected \w{12}\.\.\.\): rebuild and redeploy the whole site/ folder",
        page.inner_text("#status"),
    ), page.inner_text("#status")


@pytest.mark.parametrize("fault", ["offline", "missing"])
def test_sqlite_that_cannot_be_downloaded_fails_the_sqlite_phase_saying_what_to_do(context, site_url, durably, fault):
    # Emscripten's own words were all the page showed: "Aborted(NetworkError: ...). Build
    # with -sASSERTIONS for more info."
    if fault == "offline":
        context.route("**/sqlite3.wasm", lambda route: route.abort("internetdisconnected"))
    else:
        context.route("**/sqlite3.wasm", lambda route: route.fulfill(status=404, body="gone"))
    page = context.new_page()
    page.goto(durably.test_page(site_url))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=durably.boot_timeout)
    status = page.inner_text("#status")
    assert status.startswith("Could not start (sqlite): cannot load SQLite (vendor/sqlite-wasm/): "), status
    assert status.endswith(
        "Check the network and reload; if it keeps failing, the site may be half deployed: redeploy the whole site/ folder."
    ), status
    assert "ASSERTIONS" not in status and ".." not in status


def test_a_missing_pyodide_wasm_fails_the_boot_at_once_instead_of_hanging(context, site_url, durably):
    # Pyodide only logs "wasm instantiation failed!" and never settles loadPyodide(): the
    # snapshot phase, which has no time limit, waited forever.
    context.route("**/pyodide.asm.wasm", lambda route: route.fulfill(status=404, body="gone"))
    page = context.new_page()
    page.goto(durably.test_page(site_url))
    page.wait_for_function("document.getElementById('status').dataset.state === 'error'", timeout=30_000)
    assert page.inner_text("#status") == (
        "Could not start (pyodide): cannot download vendor/pyodide/pyodide.asm.wasm: HTTP 404. Is the site fully deployed?"
    )
