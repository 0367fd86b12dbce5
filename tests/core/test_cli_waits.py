"""The CLI for runs that wait: `durably signal` from another process wakes a worker's run,
and `durably schedules` lists what the workers registered, with the next times. On both
engines (``db``: a file, or a PostgreSQL URL, as in test_processes)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from durably import Durably

from .test_processes import cli, start_worker, stop, wait_until

JOBS = textwrap.dedent(
    """
    from durably import job

    @job("approval")
    async def approval(step, input):
        decision = await step.wait_for_signal("decision")
        return {"decision": decision}

    @job("new-year", schedule="0 0 1 1 *", timezone="Europe/Paris", catch_up="all")
    async def new_year(step, input):
        return input
    """
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "ledger_jobs.py").write_text(JOBS)  # start_worker runs the module ledger_jobs
    return tmp_path


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, workdir: Path) -> str:
    if request.param == "sqlite":
        return str(workdir / "jobs.db")
    return request.getfixturevalue("pg_url")


def run_status(db: str, run_id: str) -> tuple[str, object]:
    app = Durably(db)
    try:
        run = app.get_run(run_id)
        return (run.status, run.output) if run else ("missing", None)
    finally:
        app.close()


def test_durably_signal_wakes_a_run_that_a_worker_in_another_process_holds_waiting(workdir, db):
    run_id = json.loads(cli("trigger", "--db", db, "approval", cwd=workdir).stdout)["id"]
    worker = start_worker(workdir, db)
    try:
        wait_until(lambda: run_status(db, run_id)[0] == "waiting", what="the run to wait for its signal")
        out = cli("signal", "--db", db, run_id, "decision", '{"approved": true}', "--signal-id", "t-1", cwd=workdir)
        sent = json.loads(out.stdout)
        assert (sent["disposition"], sent["payload"], sent["signal_id"]) == ("delivered", {"approved": True}, "t-1")
        wait_until(lambda: run_status(db, run_id)[0] == "completed", what="the worker to resume the run")
        assert run_status(db, run_id)[1] == {"decision": {"approved": True}}
    finally:
        code, _, err = stop(worker)
    assert code == 0, err
    again = json.loads(cli("signal", "--db", db, run_id, "decision", '{"approved": true}', "--signal-id", "t-1",
                           cwd=workdir).stdout)
    assert again["disposition"] == "duplicate"
    for args, needle in (
        ((run_id, "decision", '{"approved": false}', "--signal-id", "t-1"), "first signal"),
        (("NOSUCHRUN", "decision"), "no run with id"),
        ((run_id, "decision", "{not json"), "not valid JSON"),
        ((run_id, ""), "must not be empty"),
    ):
        proc = cli("signal", "--db", db, *args, cwd=workdir, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    missing = cli("signal", "--db", str(workdir / "typo.db"), run_id, "decision", cwd=workdir, check=False)
    assert missing.returncode == 2 and "does not create one" in missing.stderr


def test_durably_schedules_lists_the_registered_schedules_with_their_next_times(workdir, db):
    Durably(db).migrate()
    assert "no schedules" in cli("schedules", "--db", db, cwd=workdir).stdout
    worker = start_worker(workdir, db)
    try:
        wait_until(lambda: cli("schedules", "--db", db, "--json", cwd=workdir).stdout.strip(),
                   what="the worker to register its schedule")
    finally:
        code, _, err = stop(worker)
    assert code == 0, err
    (line,) = cli("schedules", "--db", db, "--json", cwd=workdir).stdout.splitlines()
    listed = json.loads(line)
    assert (listed["job_name"], listed["cron"], listed["timezone"], listed["catch_up"]) == (
        "new-year", "0 0 1 1 *", "Europe/Paris", "all")
    times = listed["next_times"]
    assert len(times) == 3 and times[0] == listed["next_at"]
    # Midnight of 1 January in Paris is 23:00 UTC on 31 December, one year apart.
    assert all(t[5:] == "12-31T23:00:00.000000Z" for t in times)
    assert [int(t[:4]) for t in times] == [int(times[0][:4]) + i for i in range(3)]
    text = cli("schedules", "--db", db, cwd=workdir).stdout
    assert "new-year" in text and "0 0 1 1 *" in text and times[1] in text
