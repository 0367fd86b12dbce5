"""Real processes on one database: the CLI worker, SIGKILL, SIGTERM, and two workers.

The tests that are not about SQLite files run on both engines (the ``db`` fixture: a file,
or a fresh schema of the session's PostgreSQL server). The job bodies write a ledger (a
file the runtime never touches) of every execution of a step body, with the worker's pid,
so the checks compare against an independent record.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import durably
from durably import Durably

JOBS = textwrap.dedent(
    """
    import asyncio, os, time
    from durably import job

    def note(ledger, what, run_id, step):
        with open(ledger, "a") as f:
            f.write(f"{what} {run_id} {step} {os.getpid()} {time.time():.6f}\\n")

    @job("multi")
    async def multi(step, input):
        for i in range(input["steps"]):
            name = f"s{i}"
            async def body(name=name):
                note(input["ledger"], "start", step.run_id, name)
                await asyncio.sleep(input["sleep"])
                note(input["ledger"], "end", step.run_id, name)
                return name
            await step.run(name, body)
        return "done"
    """
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "ledger_jobs.py").write_text(JOBS)
    return tmp_path


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, workdir: Path) -> str:
    """The database the processes share: an SQLite file in the work folder, or a URL."""
    if request.param == "sqlite":
        return str(workdir / "jobs.db")
    return request.getfixturevalue("pg_url")


# The durably these tests import, first on the children's path too: otherwise a child could
# import another copy (an editable install of another checkout) than the one under test.
PACKAGE_ROOT = str(Path(durably.__file__).resolve().parents[1])


def child_env(workdir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, str(workdir)])}


def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = child_env(cwd)
    proc = subprocess.run([sys.executable, "-m", "durably", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"durably {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def start_worker(workdir: Path, db: str, *extra: str) -> subprocess.Popen:
    env = child_env(workdir)
    return subprocess.Popen(
        [sys.executable, "-m", "durably", "worker", "ledger_jobs", "--db", db,
         "--polling-interval", "0.05", *extra],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def ledger(path: Path) -> list[tuple[str, str, str, int, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, run_id, step, pid, t = line.split()
        out.append((what, run_id, step, int(pid), float(t)))
    return out


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def trigger(workdir: Path, db: str, ledger_path: Path, steps: int, sleep: float, **keys: str) -> str:
    extra = []
    for key, value in keys.items():
        extra += [f"--{key.replace('_', '-')}", value]
    out = cli("trigger", "--db", db, "multi",
              json.dumps({"steps": steps, "sleep": sleep, "ledger": str(ledger_path)}), *extra, cwd=workdir)
    return json.loads(out.stdout)["id"]


def statuses(db: str) -> dict[str, str]:
    app = Durably(db)
    try:
        return {r.id: r.status for r in app.get_runs()}
    finally:
        app.close()


def committed_steps(db: str, run_id: str) -> list[str]:
    app = Durably(db)
    try:
        return [s.name for s in app.get_steps(run_id) if s.status == "completed"]
    finally:
        app.close()


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_sigkill_mid_run_then_another_worker_resumes_without_rerunning_finished_steps(workdir, db):
    path = workdir / "ledger.txt"
    run_id = trigger(workdir, db, path, steps=6, sleep=0.15)
    first = start_worker(workdir, db, "--lease-duration", "1", "--lease-renew-interval", "0.2")
    wait_until(lambda: any(e[0] == "start" and e[2] == "s3" for e in ledger(path)), what="step s3 to start")
    first.kill()
    first.wait(timeout=10)
    done_before_kill = set(committed_steps(db, run_id))
    assert {"s0", "s1", "s2"} <= done_before_kill

    second = start_worker(workdir, db, "--lease-duration", "1", "--lease-renew-interval", "0.2")
    try:
        wait_until(lambda: statuses(db)[run_id] == "completed", what="the run to complete")
    finally:
        stop(second)
    entries = ledger(path)
    by_second = [e for e in entries if e[3] == second.pid and e[0] == "start"]
    assert not done_before_kill & {e[2] for e in by_second}, "a committed step ran again"
    starts = [e[2] for e in entries if e[0] == "start"]
    reexecuted = [s for s in set(starts) if starts.count(s) > 1]
    assert len(reexecuted) <= 1  # only the step in flight at the kill
    assert committed_steps(db, run_id) == [f"s{i}" for i in range(6)]


def test_sigterm_lets_the_step_in_flight_finish_and_the_next_worker_resumes_at_the_next_step(workdir, db):
    path = workdir / "ledger.txt"
    run_id = trigger(workdir, db, path, steps=4, sleep=0.3)
    first = start_worker(workdir, db)  # default 30 s lease: a resume must not wait for it
    wait_until(lambda: any(e[0] == "start" and e[2] == "s1" for e in ledger(path)), what="step s1 to start")
    code, out, err = stop(first, signal.SIGTERM)
    assert code == 0, err
    assert "SIGTERM received" in err
    assert any(e[:3] == ("end", run_id, "s1") and e[3] == first.pid for e in ledger(path))
    assert statuses(db)[run_id] == "pending"
    assert committed_steps(db, run_id) == ["s0", "s1"]

    t0 = time.monotonic()
    second = start_worker(workdir, db)
    try:
        wait_until(lambda: statuses(db)[run_id] == "completed", what="the run to complete")
    finally:
        stop(second)
    assert time.monotonic() - t0 < 15  # far less than the 30 s lease
    starts = [e[2] for e in ledger(path) if e[0] == "start"]
    assert starts == ["s0", "s1", "s2", "s3"]  # zero re-executions
    assert {e[3] for e in ledger(path) if e[2] in ("s2", "s3")} == {second.pid}


def test_two_workers_on_one_database_never_run_steps_of_the_same_run_or_key_at_once(workdir, db):
    path = workdir / "ledger.txt"
    ids = [trigger(workdir, db, path, steps=3, sleep=0.1) for _ in range(12)]
    keyed = [trigger(workdir, db, path, steps=2, sleep=0.03, concurrency_key="shared") for _ in range(1)]
    workers = [start_worker(workdir, db, "--concurrency", "2") for _ in range(2)]
    # One pending run per job and key: queue the second once the first has started.
    wait_until(lambda: statuses(db)[keyed[0]] != "pending", what="the first keyed run to start")
    keyed.append(trigger(workdir, db, path, steps=2, sleep=0.03, concurrency_key="shared"))
    try:
        wait_until(lambda: all(s == "completed" for s in statuses(db).values())
                   and len(statuses(db)) == len(ids) + len(keyed), timeout=40, what="all runs to complete")
    finally:
        for w in workers:
            stop(w)
    entries = ledger(path)
    spans: dict[tuple[str, str], list] = {}
    for what, run_id, step, pid, t in entries:
        spans.setdefault((run_id, step), []).append((what, pid, t))
    for key, marks in spans.items():
        assert [m[0] for m in marks] == ["start", "end"], f"{key} ran more than once: {marks}"
    by_run: dict[str, list] = {}
    for (run_id, _), marks in spans.items():
        by_run.setdefault(run_id, []).append((marks[0][2], marks[1][2], marks[0][1]))
    for run_id, intervals in by_run.items():
        intervals.sort()
        for (_, e1, _), (s2, _, _) in zip(intervals, intervals[1:], strict=False):
            assert e1 <= s2, f"steps of run {run_id} overlapped"
    keyed_intervals = sorted(i for r in keyed for i in by_run[r])
    first_run = sorted(by_run[keyed[0]])
    second_run = sorted(by_run[keyed[1]])
    assert first_run[-1][1] <= second_run[0][0] or second_run[-1][1] <= first_run[0][0]
    assert len(keyed_intervals) == 4
    assert len({pid for *_, pid in (i for r in ids for i in by_run[r])}) == 2, "both workers did work"


def test_cli_trigger_runs_show_cancel_retrigger_delete_and_exit_codes(workdir, db):
    out = cli("trigger", "--db", db, "multi", '{"steps": 0, "sleep": 0, "ledger": "x"}',
              "--label", "team=a", "--idempotency-key", "k1", cwd=workdir)
    first = json.loads(out.stdout)
    assert first["status"] == "pending" and first["disposition"] == "created"
    again = json.loads(cli("trigger", "--db", db, "multi", "{}", "--idempotency-key", "k1", cwd=workdir).stdout)
    assert again["id"] == first["id"] and again["disposition"] == "idempotent"

    listing = cli("runs", "--db", db, "--json", "--label", "team=a", cwd=workdir).stdout.splitlines()
    assert [json.loads(line)["id"] for line in listing] == [first["id"]]
    assert first["id"] in cli("runs", "--db", db, cwd=workdir).stdout
    shown = json.loads(cli("show", "--db", db, first["id"], cwd=workdir).stdout)
    assert shown["labels"] == {"team": "a"} and shown["steps"] == []

    bad = cli("retrigger", "--db", db, first["id"], cwd=workdir, check=False)
    assert bad.returncode == 2 and "pending" in bad.stderr and "Traceback" not in bad.stderr
    assert json.loads(cli("cancel", "--db", db, first["id"], cwd=workdir).stdout)["status"] == "cancelled"
    again = cli("cancel", "--db", db, first["id"], cwd=workdir, check=False)
    assert again.returncode == 2 and "already cancelled" in again.stderr
    new = json.loads(cli("retrigger", "--db", db, first["id"], cwd=workdir).stdout)
    assert new["id"] != first["id"] and new["status"] == "pending"
    assert json.loads(cli("delete", "--db", db, first["id"], cwd=workdir).stdout)["deleted"] is True

    for args, needle in [
        (("trigger", "--db", db, "multi", "{not json"), "not valid JSON"),
        (("show", "--db", db, "nope"), "no run with id"),
        (("cancel", "--db", db, "nope"), "no run with id"),
        (("runs",), "--db PATH is required"),
        (("runs", "--db", db, "--status", "finished"), "unknown status"),
        (("worker", "no_such_module", "--db", db), "cannot import"),
        (("worker", "json", "--db", db), "defines no jobs"),
        (("trigger", "--db", db, "multi", "{}", "--label", "novalue"), "KEY=VALUE"),
        (("frobnicate",), "invalid choice"),
    ]:
        proc = cli(*args, cwd=workdir, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cli_worker_prints_one_line_per_event_and_runs_module_files(workdir, db):
    run_id = trigger(workdir, db, workdir / "ledger.txt", steps=2, sleep=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "durably", "worker", str(workdir / "ledger_jobs.py"), "--db", db,
         "--polling-interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(workdir),
    )
    try:
        wait_until(lambda: statuses(db)[run_id] == "completed", what="the run to complete")
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    lines = out.splitlines()
    types = [line.split()[1] for line in lines]
    assert types == ["run:leased", "step:start", "step:complete", "step:start", "step:complete", "run:complete"]
    assert all(run_id in line for line in lines)
    assert "worker stopped" in err
    if "://" in db:  # the ready line names the server, never the password
        password = db.split("@")[0].rsplit(":", 1)[1]
        assert password not in err and "db postgresql://postgres@127.0.0.1:" in err, err


def test_a_database_from_a_newer_schema_is_refused_and_left_untouched(workdir):
    db = str(workdir / "jobs.db")
    app = Durably(db)
    app.trigger("x", 1)
    app._store.driver.execute("INSERT INTO durably_migrations (version, applied_at) VALUES (99, 'later')")
    app.close()
    before = Path(db).read_bytes()
    proc = cli("runs", "--db", db, cwd=workdir, check=False)
    assert proc.returncode == 1 and "newer durably" in proc.stderr and "not modified" in proc.stderr
    newer = Durably(db)
    with pytest.raises(Exception, match="schema version 99"):
        newer.trigger("x", 2)
    newer.close()
    assert Path(db).read_bytes() == before


def test_a_file_that_is_not_a_database_gives_a_clear_error(workdir):
    path = workdir / "notes.txt"
    path.write_text("hello, I am not SQLite" * 100)
    proc = cli("runs", "--db", str(path), cwd=workdir, check=False)
    assert proc.returncode == 1
    assert "not a database" in proc.stderr and "Traceback" not in proc.stderr
    assert path.read_text().startswith("hello")


def test_a_newer_schema_file_in_rollback_journal_mode_is_not_switched_to_wal(workdir):
    """Guards defect 6: the driver switched the file to WAL when it opened it, before the
    version check, so "the database was not modified" was false for such a file."""
    db = str(workdir / "jobs.db")
    app = Durably(db)
    app.trigger("x", 1)
    app._store.driver.execute("INSERT INTO durably_migrations (version, applied_at) VALUES (99, 'later')")
    app.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    conn.close()
    before = Path(db).read_bytes()
    assert before[18:20] == b"\x01\x01"  # the header's rollback-journal mark
    for args in (("runs", "--db", db), ("trigger", "--db", db, "x", "2")):
        proc = cli(*args, cwd=workdir, check=False)
        assert proc.returncode == 1 and "not modified" in proc.stderr, (args, proc.stderr)
    newer = Durably(db)
    with pytest.raises(Exception, match="schema version 99"):
        newer.get_runs()
    newer.close()
    assert Path(db).read_bytes() == before
    assert not Path(db + "-wal").exists()
    proc = cli("status", "--db", db, cwd=workdir, check=False)
    assert proc.returncode == 1 and "not modified" in proc.stderr
    assert Path(db).read_bytes() == before


def test_a_folder_or_a_missing_folder_as_db_gets_a_message_that_says_so(workdir):
    """`--db` naming a folder got "unable to open database file (does its folder exist, and
    may this process write there?)", which does not say what is wrong."""
    for args in (("trigger", "--db", str(workdir), "multi"), ("worker", "ledger_jobs", "--db", str(workdir))):
        proc = cli(*args, cwd=workdir, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{str(workdir)!r} is a folder; give the path of a database file" in proc.stderr, proc.stderr
    missing = workdir / "no-such-folder" / "jobs.db"
    proc = cli("trigger", "--db", str(missing), "multi", cwd=workdir, check=False)
    assert proc.returncode == 1 and "does its folder exist" in proc.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["ledger_jobs.py"]


def test_a_database_file_name_that_is_not_utf8_opens_for_every_command(workdir):
    """Linux file names are bytes. `durably trigger` and `worker` opened one that is not
    UTF-8 (Python reads it as "\\udcff"), but the read commands, which open existing
    files only, built a URI from it and died with a UnicodeEncodeError traceback."""
    db = str(workdir / os.fsdecode(b"jobs-\xff.db"))
    run_id = json.loads(cli("trigger", "--db", db, "multi", "1", cwd=workdir).stdout)["id"]
    assert [line.split()[0] for line in cli("runs", "--db", db, cwd=workdir).stdout.splitlines()[1:]] == [run_id]
    assert json.loads(cli("show", "--db", db, run_id, cwd=workdir).stdout)["id"] == run_id
    assert cli("cancel", "--db", db, run_id, cwd=workdir).returncode == 0
    assert os.fsencode(db) in [os.fsencode(str(p)) for p in workdir.iterdir()]
    for bad in ("jobs\x00.db", "jobs-\ud800.db"):  # no file can have these names
        with pytest.raises(durably.ValidationError, match="cannot be a file name"):
            Durably(str(workdir / bad))


def test_a_database_missing_a_durably_table_says_what_to_do(workdir):
    """A durably table dropped by hand gave only SQLite's "no such table: durably_steps"."""
    db = str(workdir / "jobs.db")
    cli("trigger", "--db", db, "multi", "1", cwd=workdir)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE durably_steps")
    conn.close()
    proc = cli("runs", "--db", db, cwd=workdir, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "no such table: durably_steps" in proc.stderr and "restore the file from a backup" in proc.stderr


def test_read_commands_open_existing_databases_only_and_say_so(workdir):
    """Guards defect 7: `durably runs --db typo.db` created a new database file."""
    typo = workdir / "typo.db"
    for command in (("runs",), ("show", "RUN"), ("status",), ("cancel", "RUN"), ("delete", "RUN")):
        proc = cli(command[0], "--db", str(typo), *command[1:], cwd=workdir, check=False)
        assert proc.returncode == 2, proc.stderr
        assert f"no durably database at {str(typo)!r}" in proc.stderr and "does not create one" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in workdir.iterdir()) == ["ledger_jobs.py"]
    empty = workdir / "empty.db"
    empty.touch()
    proc = cli("runs", "--db", str(empty), cwd=workdir, check=False)
    assert proc.returncode == 2 and "is not a durably database" in proc.stderr
    assert empty.read_bytes() == b""


def test_cli_status_lists_workers_and_check_fails_for_pending_runs_no_worker_runs(workdir, db):
    """Runs nobody will ever execute: `durably status` and its health check, and the one
    warning line of a trigger no worker will pick up."""
    typo = cli("trigger", "--db", db, "mutli", "{}", cwd=workdir)
    assert typo.stderr.startswith("durably: warning: no worker has registered job 'mutli'")
    assert len(typo.stderr.strip().splitlines()) == 1
    worker = start_worker(workdir, db)
    try:
        wait_until(lambda: json.loads(cli("status", "--db", db, "--json", cwd=workdir).stdout)["workers"],
                   what="the worker to record itself")
        status = json.loads(cli("status", "--db", db, "--json", cwd=workdir).stdout)
        assert [(w["pid"], w["jobs"]) for w in status["workers"]] == [(worker.pid, ["multi"])]
        assert status["unhandled"] == {"mutli": 1} and status["healthy"] is False
        check = cli("status", "--db", db, "--check", cwd=workdir, check=False)
        assert check.returncode == 3
        assert "unhandled: job 'mutli' has 1 pending run(s)" in check.stdout
        assert check.stderr.strip() == "durably: unhealthy: no live worker runs 'mutli' (1 pending)"
        good = cli("trigger", "--db", db, "multi", '{"steps": 0, "sleep": 0, "ledger": "x"}', cwd=workdir)
        assert good.stderr == ""  # a live worker registers that job: no warning
        cli("cancel", "--db", db, json.loads(typo.stdout)["id"], cwd=workdir)
        healthy = cli("status", "--db", db, "--check", cwd=workdir)
        assert "unhandled: none" in healthy.stdout and f"pid {worker.pid}" in healthy.stdout
    finally:
        stop(worker)
    assert json.loads(cli("status", "--db", db, "--json", cwd=workdir).stdout)["workers"] == []


def test_bad_input_on_the_command_line_is_refused_with_one_line_and_leaves_no_run(workdir, db):
    """Guards defects 1, 4 and 9 from the CLI: a deep INPUT_JSON printed a traceback, and
    --lease-duration inf killed the worker loop silently at its first claim."""
    cli("trigger", "--db", db, "multi", '{"steps": 0, "sleep": 0, "ledger": "x"}', cwd=workdir)
    for args, needle in [
        (("trigger", "--db", db, "multi", "[" * 50_000 + "]" * 50_000), "nested too deep"),
        (("trigger", "--db", db, "multi", "[" * 65 + "]" * 65), "nested more than 64 levels"),
        (("trigger", "--db", db, "multi", "1" * 5000), "4300 digits"),
        (("trigger", "--db", db, "multi", "{}", "--wait", "inf"), "MAX_TIMEOUT"),
        (("runs", "--db", db, "--limit", str(2**70)), "MAX_PAGE"),
        (("show", "--db", db, "a\udcff"), "not valid Unicode"),
        (("worker", "ledger_jobs", "--db", db, "--lease-duration", "inf"), "MAX_LEASE_DURATION"),
        (("worker", "ledger_jobs", "--db", db, "--polling-interval", "1e300"), "MAX_POLLING_INTERVAL"),
        (("worker", "ledger_jobs", "--db", db, "--concurrency", "100000"), "MAX_CONCURRENT_RUNS"),
        (("worker", "ledger_jobs", "--db", db, "--stop-timeout", "nan"), "MAX_TIMEOUT"),
    ]:
        proc = cli(*args, cwd=workdir, check=False)
        assert proc.returncode == 2, (args[:4], proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, (args[:4], proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert len(statuses(db)) == 1


def test_show_prints_the_last_thousand_log_lines_and_says_how_many_it_left_out(workdir, db):
    run_id = json.loads(cli("trigger", "--db", db, "multi", "{}", cwd=workdir).stdout)["id"]
    app = Durably(db)
    for i in range(1500):
        app.driver.execute(
            "INSERT INTO durably_logs (run_id, level, message, created_at) VALUES (?, 'info', ?, '2026-01-01T00:00:00.000000Z')",
            (run_id, f"line {i}"),
        )
    app.close()
    proc = cli("show", "--db", db, run_id, cwd=workdir)
    shown = json.loads(proc.stdout)
    assert [log["message"] for log in shown["logs"]] == [f"line {i}" for i in range(500, 1500)]
    assert shown["logs_left_out"] == 500
    assert "showing the last 1,000 log lines; 500 earlier lines were left out" in proc.stderr


def test_read_commands_print_a_hand_edited_database_without_a_traceback(workdir):
    """`durably runs`, `show` and `status` (the health check) raised on rows a hand edit
    left: a progress that is not an object, timestamps without a zone or not timestamps at
    all, a worker row whose heartbeat cannot be read."""
    db = str(workdir / "jobs.db")
    run_ids = [json.loads(cli("trigger", "--db", db, "multi", str(i), cwd=workdir).stdout)["id"] for i in range(3)]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE durably_runs SET progress = '[1, 2]', created_at = '2026-01-01 12:00:00' WHERE id = ?",
                 (run_ids[0],))
    conn.execute("UPDATE durably_runs SET progress = '{\"total\": 3}', input = 'NaN' WHERE id = ?", (run_ids[1],))
    conn.execute("INSERT INTO durably_steps (run_id, idx, name, status, output, started_at, completed_at) "
                 "VALUES (?, 0, 's0', 'completed', '1', 'soon', '2026-01-01 12:00:01')", (run_ids[2],))
    conn.execute("INSERT INTO durably_workers (worker_id, host, pid, jobs, version, concurrency, started_at, "
                 "heartbeat_at) VALUES ('w', 'h', 1, '[\"multi\"]', '0', 1, 'then', 'a while ago')")
    conn.execute("INSERT INTO durably_runs (id, job_name, status, input, created_at, updated_at) "
                 "VALUES (NULL, X'6A6F62', 'pending', '1', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
    conn.commit()
    conn.close()
    table = cli("runs", "--db", db, cwd=workdir)
    assert len(table.stdout.splitlines()) == 5 and table.stderr == ""
    listed = [json.loads(line) for line in cli("runs", "--db", db, "--json", cwd=workdir).stdout.splitlines()][:3]
    assert [r["created_at"] for r in listed][-1] == "2026-01-01T12:00:00.000000Z"
    assert listed[1]["input"] is None and "input" in listed[1]["decode_error"]
    shown = json.loads(cli("show", "--db", db, run_ids[2], cwd=workdir).stdout)
    assert shown["steps"][0]["started_at"] is None and "started_at" in shown["steps"][0]["decode_error"]
    status = cli("status", "--db", db, "--check", cwd=workdir, check=False)
    assert status.returncode == 3 and "Traceback" not in status.stderr
    assert "stale w  h pid 1  durably 0  concurrency 1  heartbeat unreadable" in status.stdout
