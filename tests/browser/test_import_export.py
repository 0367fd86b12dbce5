"""One database, both hosts: exportDatabase (leases handed back in the copy; {move: true})
and importDatabase (checked before anything is replaced), against CPython's durably.

CPython's side runs in a subprocess (Playwright's sync API keeps an event loop running in
this process, so asyncio.run cannot). The demo's ``slow`` job logs one line per execution
of a step body, so "no step ran twice" is read from the logs of the finished run."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

TO_B64 = """(bytes) => { let bin = "";
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(bin); }"""
FROM_B64 = "(b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))"

# Runs on CPython: finish every run of the file at once, then report runs, steps and logs.
FINISH = """
import asyncio, json, sys, time
sys.path.insert(0, {web!r})
import demo_jobs
from durably import Durably, Job
jobs = [v for v in vars(demo_jobs).values() if isinstance(v, Job)]
app = Durably({db!r}, jobs=jobs, lease_duration=30)
t0 = time.monotonic()
done = asyncio.run(app.process_until_idle())
runs = [r.to_dict() for r in app.get_runs()]
print(json.dumps({{"done": done, "seconds": time.monotonic() - t0, "runs": runs,
    "steps": {{r["id"]: [s.to_dict() for s in app.get_steps(r["id"])] for r in runs}},
    "logs": {{r["id"]: [l.message for l in app.get_logs(r["id"])] for r in runs}}}}))
app.close()
"""


def cpython(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def finish_on_cpython(db: Path) -> dict:
    return cpython(FINISH.format(web=str(ROOT / "web"), db=str(db)))


def boot(page, site_url, durably):
    durably.open(page, site_url, jobs=["demo_jobs"], options={"leaseRenewInterval": 1, "leaseDuration": 30})


def start_slow(page, steps: int, seconds: float, done: int) -> str:
    """Trigger a slow run and wait until `done` of its steps are committed."""
    run_id = page.evaluate(f"window.durably.trigger('slow', {{steps: {steps}, seconds: {seconds}}}).then((r) => r.id)")
    page.evaluate(
        """async ([id, n]) => { const d = window.durably; const t0 = Date.now();
            while ((await d.getSteps(id)).filter((s) => s.status === "completed").length < n) {
              if (Date.now() - t0 > 60000) throw new Error(`run ${id} did not commit ${n} steps in 60 s`);
              await new Promise((r) => setTimeout(r, 50));
            } }""",
        [run_id, done],
    )
    return run_id


def export(page, move: bool = False) -> tuple[bytes, dict]:
    got = page.evaluate(
        f"""async () => {{ const r = await window.durably.exportDatabase({{move: {json.dumps(move)}}});
            const bytes = r instanceof Uint8Array ? r : r.bytes;
            return {{b64: ({TO_B64})(bytes), moved: r.moved ?? null}}; }}"""
    )
    return base64.b64decode(got["b64"]), got


def import_error(page, data: bytes, replace: bool | None = None) -> dict | None:
    options = "{}" if replace is None else json.dumps({"replace": replace})
    return page.evaluate(
        f"""(b64) => window.durably.importDatabase(({FROM_B64})(b64), {options})
            .then(() => null, (e) => ({{name: e.name, message: e.message}}))""",
        base64.b64encode(data).decode(),
    )


def executions(logs: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in logs:
        if line.endswith(" executing"):
            counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    return counts


def test_a_run_exported_mid_run_is_finished_at_once_by_cpython_and_no_browser_step_runs_again(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    run_id = start_slow(page, steps=6, seconds=0.5, done=2)
    data, _ = export(page)  # while the run goes on in the tab
    db = tmp_path / "exported.db"
    db.write_bytes(data)
    with sqlite3.connect(db) as con:
        status, owner = con.execute("SELECT status, lease_owner FROM durably_runs WHERE id = ?", (run_id,)).fetchone()
        committed = [r[0] for r in con.execute("SELECT name FROM durably_steps WHERE run_id = ? AND status = 'completed'", (run_id,))]
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # A copy is a snapshot: the tab's lease is handed back in it.
    assert (status, owner) == ("pending", None)
    assert len(committed) >= 2

    result = finish_on_cpython(db)
    # At once: not after the tab's 30 s lease (the run's own steps take ~2 s).
    assert result["done"] == 1 and result["seconds"] < 20
    (run,) = result["runs"]
    assert run["status"] == "completed" and run["output"] == {"steps": 6}
    counts = executions(result["logs"][run_id])
    assert counts == {f"step-{i}": 1 for i in range(1, 7)}, counts


def test_a_move_stops_the_runs_in_the_tab_marks_them_moved_and_cpython_finishes_them(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    run_id = start_slow(page, steps=5, seconds=1, done=1)
    data, got = export(page, move=True)
    assert got["moved"] == 1
    here = page.evaluate("(id) => window.durably.getRun(id)", run_id)
    assert here["status"] == "cancelled" and here["error"].startswith("moved: exported with exportDatabase({move: true}) at ")
    steps_here = page.evaluate("(id) => window.durably.getSteps(id)", run_id)
    page.wait_for_timeout(1500)  # a tab that went on would commit step 2 within this
    assert page.evaluate("(id) => window.durably.getSteps(id)", run_id) == steps_here
    # The tab keeps working: a new run completes there.
    ok = page.evaluate("async () => { const r = await window.durably.trigger('slow', {steps: 1, seconds: 0});"
                       " return (await window.durably.waitForRun(r.id, {timeout: 30})).status; }")
    assert ok == "completed"

    db = tmp_path / "moved.db"
    db.write_bytes(data)
    result = finish_on_cpython(db)
    (run,) = [r for r in result["runs"] if r["id"] == run_id]
    assert run["status"] == "completed" and run["error"] is None
    assert executions(result["logs"][run_id]) == {f"step-{i}": 1 for i in range(1, 6)}


CPYTHON_DB = """
import asyncio, json, sys
sys.path.insert(0, {web!r})
import demo_jobs
from durably import Durably, Job
jobs = [v for v in vars(demo_jobs).values() if isinstance(v, Job)]
app = Durably({db!r}, jobs=jobs)
done = app.trigger("crunch", {{"n": 1000, "chunks": 2}})
asyncio.run(app.process_until_idle())
waiting = app.trigger("crunch", {{"n": 2000, "chunks": 4}}, labels={{"from": "cpython"}})
print(json.dumps({{"done": done.id, "waiting": waiting.id}}))
app.close()
"""


def test_a_database_written_on_cpython_imports_from_a_follower_tab_and_its_runs_show_and_resume(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    before = page.evaluate("window.durably.trigger('slow', {steps: 1, seconds: 0}).then((r) => r.id)")
    db = tmp_path / "cpython.db"
    ids = cpython(CPYTHON_DB.format(web=str(ROOT / "web"), db=str(db)))
    follower = page.context.new_page()
    durably.open(follower, site_url, jobs=["demo_jobs"])
    assert follower.evaluate("window.durably.role") == "follower"
    page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 30})", before)
    result = follower.evaluate(
        f"(b64) => window.durably.importDatabase(({FROM_B64})(b64))", base64.b64encode(db.read_bytes()).decode()
    )
    assert result["runs"] == 2 and result["schemaVersion"] >= 5
    # Both tabs see the imported database: the CPython runs, not the tab's earlier one.
    for tab in (page, follower):
        shown = tab.evaluate("window.durably.getRuns()")
        assert {r["id"] for r in shown} == {ids["done"], ids["waiting"]}
    finished = follower.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", ids["waiting"])
    assert finished["status"] == "completed" and finished["output"]["primes"] == 303
    assert finished["labels"] == {"from": "cpython"}
    assert page.evaluate("(id) => window.durably.getRun(id)", ids["done"])["output"]["primes"] == 168


def sqlite_file(path: Path, sql: str) -> bytes:
    with sqlite3.connect(path) as con:
        con.executescript(sql)
    con.close()
    return path.read_bytes()


def test_a_bad_file_is_refused_saying_why_and_the_database_is_untouched(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    run_id = page.evaluate("window.durably.trigger('slow', {steps: 1, seconds: 0}).then((r) => r.id)")
    page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 30})", run_id)
    good = tmp_path / "good.db"
    cpython(CPYTHON_DB.format(web=str(ROOT / "web"), db=str(good)))
    newer = tmp_path / "newer.db"
    newer.write_bytes(good.read_bytes())
    sqlite_file(newer, "INSERT INTO durably_migrations (version, applied_at) VALUES (999, '2030-01-01T00:00:00Z');")
    damaged = bytearray(good.read_bytes())
    page_size = int.from_bytes(damaged[16:18], "big")
    damaged[page_size * 2 : page_size * 2 + 64] = b"\xff" * 64

    cases = [
        (b"hello, this is not a database" * 40, "ValidationError", "the file is not an SQLite database (its first bytes are not \"SQLite format 3\")"),
        (good.read_bytes()[:1000], "ValidationError", "is not a whole number of pages"),
        (sqlite_file(tmp_path / "other.db", "CREATE TABLE notes (x);"), "ValidationError",
         "the file is an SQLite database but not a durably one: it has no durably_migrations, durably_runs, durably_steps table(s)"),
        (newer.read_bytes(), "SchemaError", "this database was written by a newer durably (schema version 999"),
        (bytes(damaged), "ValidationError", "the file is"),
    ]
    for data, name, text in cases:
        err = import_error(page, data)
        assert err is not None and err["name"] == name and text in err["message"], err
        assert err["message"].endswith("nothing was changed"), err
        runs = page.evaluate("window.durably.getRuns()")
        assert [r["id"] for r in runs] == [run_id]
    bad = page.evaluate("window.durably.importDatabase('not bytes').then(() => null, (e) => e.message)")
    assert bad == "importDatabase: bytes must be a Uint8Array or an ArrayBuffer (the file's contents), got String"


def test_an_import_is_refused_while_runs_are_leased_unless_replace(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    run_id = start_slow(page, steps=50, seconds=0.5, done=1)
    good = tmp_path / "good.db"
    ids = cpython(CPYTHON_DB.format(web=str(ROOT / "web"), db=str(good)))
    err = import_error(page, good.read_bytes())
    assert err == {
        "name": "ConflictError",
        "message": "importDatabase: 1 run is in progress in this database; importing would replace it and stop them. "
        "Wait for them, export them first, or pass {replace: true} to replace the database anyway",
    }
    assert page.evaluate("(id) => window.durably.getRun(id)", run_id)["status"] == "leased"
    assert import_error(page, good.read_bytes(), replace=True) is None
    assert {r["id"] for r in page.evaluate("window.durably.getRuns()")} == {ids["done"], ids["waiting"]}


def test_two_imports_at_once_run_one_after_the_other_and_the_last_one_wins(page, site_url, durably, tmp_path):
    """A double click on "Import": the second import waits for the first, instead of closing
    the database the first one is starting on (which failed with "DB has been closed.")."""
    boot(page, site_url, durably)
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    ids_first = cpython(CPYTHON_DB.format(web=str(ROOT / "web"), db=str(first)))
    ids_second = cpython(CPYTHON_DB.format(web=str(ROOT / "web"), db=str(second)))
    results = page.evaluate(
        f"""async ([a, b]) => {{ const d = window.durably;
            const one = (b64) => d.importDatabase(({FROM_B64})(b64), {{replace: true}})
              .then((r) => ({{ok: r.runs}}), (e) => ({{error: e.message}}));
            return Promise.all([one(a), one(b)]); }}""",
        [base64.b64encode(first.read_bytes()).decode(), base64.b64encode(second.read_bytes()).decode()],
    )
    assert results == [{"ok": 2}, {"ok": 2}], results
    assert {r["id"] for r in page.evaluate("window.durably.getRuns()")} == {ids_second["done"], ids_second["waiting"]}
    assert not {ids_first["done"], ids_first["waiting"]} & {r["id"] for r in page.evaluate("window.durably.getRuns()")}
    # The runtime runs on the file that won: its waiting run finishes.
    done = page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", ids_second["waiting"])
    assert done["status"] == "completed"


def test_an_import_and_an_export_at_once_give_a_whole_copy_and_a_working_database(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    before = page.evaluate("window.durably.trigger('slow', {steps: 1, seconds: 0}).then((r) => r.id)")
    page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 30})", before)
    db = tmp_path / "cpython.db"
    ids = cpython(CPYTHON_DB.format(web=str(ROOT / "web"), db=str(db)))
    got = page.evaluate(
        f"""async (b64) => {{ const d = window.durably;
            const [imp, exp] = await Promise.all([
              d.importDatabase(({FROM_B64})(b64)).then((r) => r.runs, (e) => e.message),
              d.exportDatabase({{move: true}}).then((r) => ({{b64: ({TO_B64})(r.bytes), moved: r.moved}}), (e) => e.message)]);
            return {{imp, exp}}; }}""",
        base64.b64encode(db.read_bytes()).decode(),
    )
    assert got["imp"] == 2 and isinstance(got["exp"], dict), got
    copy = tmp_path / "copy.db"
    copy.write_bytes(base64.b64decode(got["exp"]["b64"]))
    with sqlite3.connect(copy) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        exported = {row[0] for row in con.execute("SELECT id FROM durably_runs")}
    con.close()
    # The export saw one whole database: the one before the import, or the imported one.
    assert exported in ({before}, {ids["done"], ids["waiting"]}), exported
    runs = {r["id"]: r for r in page.evaluate("window.durably.getRuns()")}
    assert set(runs) == {ids["done"], ids["waiting"]}
    run_id = page.evaluate("window.durably.trigger('slow', {steps: 1, seconds: 0}).then((r) => r.id)")
    assert page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 30})", run_id)["status"] == "completed"


def test_a_file_with_a_trigger_that_deletes_runs_is_refused(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    db = tmp_path / "evil.db"
    cpython(CPYTHON_DB.format(web=str(ROOT / "web"), db=str(db)))
    data = sqlite_file(db, "CREATE TRIGGER wipe AFTER INSERT ON durably_runs BEGIN DELETE FROM durably_runs; END;")
    err = import_error(page, data)
    assert err is not None and err["name"] == "ValidationError", err
    assert "the file has trigger(s) durably did not create: wipe (on durably_runs)" in err["message"], err
    run_id = page.evaluate("window.durably.trigger('slow', {steps: 1, seconds: 0}).then((r) => r.id)")
    assert [r["id"] for r in page.evaluate("window.durably.getRuns()")] == [run_id]


def test_a_move_whose_copy_fails_moves_nothing_and_the_runs_go_on(page, site_url, durably, tmp_path):
    """The runs are marked moved only once the copy is whole: a failure while handing back the
    copy's leases used to leave them cancelled here with no copy anywhere."""
    boot(page, site_url, durably)
    run_id = start_slow(page, steps=3, seconds=0.3, done=1)
    durably.eval(page, "import durably.browser as b\ndef boom(bridge): raise RuntimeError('disk full')\nb.hand_back_leases = boom")
    err = page.evaluate("window.durably.exportDatabase({move: true}).then(() => null, (e) => ({name: e.name, message: e.message}))")
    assert err is not None and err["name"] == "StorageError" and "disk full" in err["message"], err
    done = page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", run_id)
    assert done["status"] == "completed" and done["error"] is None, done
    assert err["message"].endswith("nothing was moved"), err


def test_a_moved_copy_imported_back_into_the_same_tab_resumes_its_runs(page, site_url, durably, tmp_path):
    boot(page, site_url, durably)
    run_id = start_slow(page, steps=3, seconds=0.3, done=1)
    data, got = export(page, move=True)
    assert got["moved"] == 1
    assert page.evaluate("(id) => window.durably.getRun(id)", run_id)["status"] == "cancelled"
    assert import_error(page, data) is None
    done = page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", run_id)
    assert done["status"] == "completed" and done["error"] is None
    logs = page.evaluate("(id) => window.durably.getLogs(id)", run_id)
    assert executions([entry["message"] for entry in logs]) == {f"step-{i}": 1 for i in range(1, 4)}


# A module worker of the site's origin that opens the OPFS pool itself (no durably running)
# and leaves it as an import cut off by a reload would: the database it was replacing kept
# as /durably-previous.db, and /durably.db not yet written.
CUT_OFF_IMPORT = """async (sqliteUrl) => {
    const code = `
      import init from ${JSON.stringify(sqliteUrl)};
      const sqlite3 = await init();
      let pool;
      for (let i = 0; i < 20 && !pool; i++) {
        try { pool = await sqlite3.installOpfsSAHPoolVfs({}); }
        catch { await new Promise((r) => setTimeout(r, 100)); }
      }
      // As importDatabase does before it keeps the copy: the WAL checkpointed into the file.
      const db = new pool.OpfsSAHPoolDb("/durably.db");
      db.exec("PRAGMA locking_mode = EXCLUSIVE");
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      db.close();
      const bytes = pool.exportFile("/durably.db");
      pool.importDb("/durably-previous.db", bytes);
      for (const s of ["-wal", "-journal", ""]) pool.unlink("/durably.db" + s);
      postMessage(pool.getFileNames());
    `;
    const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
    const worker = new Worker(url, { type: "module" });
    const names = await new Promise((resolve, reject) => {
      worker.onmessage = (e) => resolve(e.data);
      worker.onerror = (e) => reject(new Error(e.message));
    });
    worker.terminate();
    return names;
}"""


def test_an_import_cut_off_by_a_reload_boots_on_the_database_it_was_replacing(context, site_url, durably):
    """A reload between removing the database and writing the imported one used to leave no
    database at all: the tab booted on an empty one, every run gone."""
    page = context.new_page()
    boot(page, site_url, durably)
    run_id = page.evaluate("window.durably.trigger('slow', {steps: 1, seconds: 0}).then((r) => r.id)")
    page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", run_id)
    page.close()  # its worker goes, and with it the pool's files

    other = context.new_page()
    other.goto(site_url + "manifest.json")
    names = other.evaluate(CUT_OFF_IMPORT, site_url + "vendor/sqlite-wasm/index.mjs")
    assert "/durably-previous.db" in names and "/durably.db" not in names, names
    other.close()

    again = context.new_page()
    boot(again, site_url, durably)
    assert [r["id"] for r in again.evaluate("window.durably.getRuns()")] == [run_id]
    assert again.evaluate("(id) => window.durably.getRun(id)", run_id)["status"] == "completed"


def test_imports_after_long_strings_leave_no_binding_buffer_behind(page, site_url, durably):
    # The bridge encodes strings into a scratch buffer it keeps (15 MB after a 5-million-
    # character value), and an import closes the database under its bridge. Were the buffer
    # the bridge's own, each import would leave one behind, until SQLite's heap, capped here at
    # 64 MiB (a fresh worker per test: the cap only goes down), ran out.
    boot(page, site_url, durably)
    bind = 'app.driver.execute("SELECT length(?)", ("x" * 5_000_000,))[0][0][0]'
    swap = """async () => { const d = window.durably; const r = await d.exportDatabase();
        await d.importDatabase(r instanceof Uint8Array ? r : r.bytes, {replace: true}); }"""
    for _ in range(4):
        assert durably.eval(page, bind) == 5_000_000
        page.evaluate(swap)
    durably.eval(page, 'app.driver.execute("PRAGMA hard_heap_limit = 67108864")[0]')
    assert durably.eval(page, bind) == 5_000_000
    assert durably.eval(page, 'app.driver.execute("SELECT ?", ("after",))[0][0][0]') == "after"
