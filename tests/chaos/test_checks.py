"""The chaos checks can fail: a clean scenario passes, and each doctored ledger, database
or timeline makes exactly the check it targets fail."""

from __future__ import annotations

import copy
import sqlite3

import pytest

from bench.chaos import checks
from bench.chaos.checks import DbState, Timeline
from bench.chaos.ledger import Execution, note, read

T = 1_000_000.0  # an arbitrary epoch for the synthetic timeline


def ex(run, step, pid, start, end=None, outcome=None):
    return Execution(run, step, pid, T + start, None if end is None else T + end,
                     outcome or ("end" if end is not None else "running"))


def clean():
    """R1: 2 steps, pid 2 killed during s1, pid 3 re-ran it. R2: cancelled after s0.
    R3, R4: same concurrency key, one after the other. R5: pid 4 frozen (SIGSTOP) in s0,
    pid 5 took over; pid 4's body ended just after SIGCONT and its write was refused."""
    ledger = [
        ex("R1", "s0", 2, 0.0, 0.1), ex("R1", "s1", 2, 0.1),            # killed at 0.15
        ex("R1", "s1", 3, 1.3, 1.4),
        ex("R2", "s0", 3, 0.0, 0.05, "end"),
        ex("R3", "s0", 6, 0.0, 0.1), ex("R4", "s0", 6, 0.2, 0.3),
        ex("R5", "s0", 4, 2.0, 4.001), ex("R5", "s0", 5, 3.5, 3.6), ex("R5", "s1", 5, 3.6, 4.1),
    ]
    steps = {
        ("R1", "s0"): (0.1, 0.101), ("R1", "s1"): (1.3, 1.401), ("R2", "s0"): (0.0, 0.051),
        ("R3", "s0"): (0.0, 0.101), ("R4", "s0"): (0.2, 0.301),
        ("R5", "s0"): (3.5, 3.601), ("R5", "s1"): (3.6, 4.101),
    }
    db = DbState(
        runs={
            "R1": {"status": "completed", "concurrency_key": None, "output": "1", "completed_steps": 2, "completed_at": T + 1.5},
            "R2": {"status": "cancelled", "concurrency_key": None, "output": None, "completed_steps": 1, "completed_at": T + 0.2},
            "R3": {"status": "completed", "concurrency_key": "k", "output": "1", "completed_steps": 1, "completed_at": T + 0.11},
            "R4": {"status": "completed", "concurrency_key": "k", "output": "1", "completed_steps": 1, "completed_at": T + 0.31},
            "R5": {"status": "completed", "concurrency_key": None, "output": "1", "completed_steps": 2, "completed_at": T + 4.2},
        },
        steps={k: {"status": "completed", "started_at": T + a - 0.0001, "completed_at": T + b} for k, (a, b) in steps.items()},
        step_rows=len(steps),
        integrity="ok",
    )
    tl = Timeline(
        kills=[(2, T + 0.15)], stops=[(4, T + 2.05, T + 4.0)], terms=[],
        exits={2: T + 0.15}, expected={"R1": "completed", "R2": "cancelled", "R3": "completed",
                                       "R4": "completed", "R5": "completed"},
    )
    events = [(3, "step:complete", "R1", {"step_name": "s1"}), (2, "step:complete", "R1", {"step_name": "s0"})]
    return ledger, db, tl, events


def run(ledger, db, tl, events):
    return checks.check(ledger, db, tl, events, horizon=T + 10)


def test_a_body_that_ended_just_before_its_worker_was_killed_may_run_again():
    ledger, db, tl, events = clean()
    ledger[1] = ex("R1", "s1", 2, 0.1, 0.14)  # ended, then SIGKILL at 0.15 before the commit
    rep = run(ledger, db, tl, events)
    assert rep.ok, rep.failures


def test_the_clean_scenario_passes_with_its_figures():
    rep = run(*clean())
    assert rep.ok, rep.failures
    assert (rep.runs, rep.steps, rep.reexecuted, rep.lost, rep.duplicates, rep.overlaps) == (5, 7, 2, 0, 0, 0)
    assert rep.stale_tails == 1  # pid 4's body ran on for 1 ms after SIGCONT, next to pid 5's s1
    assert "lost runs 0" in rep.line() and rep.line().endswith("PASS")


def doctor_lost(ledger, db, tl, events):
    db.runs["R1"]["status"] = "pending"


def doctor_missing(ledger, db, tl, events):
    del db.runs["R4"]


def doctor_cancel_ignored(ledger, db, tl, events):
    db.runs["R2"]["status"] = "completed"


def doctor_duplicate_row(ledger, db, tl, events):
    db.step_rows += 1


def doctor_counter(ledger, db, tl, events):
    db.runs["R3"]["completed_steps"] = 2


def doctor_no_output(ledger, db, tl, events):
    db.runs["R4"]["output"] = None


def doctor_rerun_after_commit(ledger, db, tl, events):
    tl.kills.append((7, T + 6))
    tl.exits[7] = T + 6
    ledger.append(ex("R1", "s0", 7, 5.0))


def doctor_rerun_without_kill(ledger, db, tl, events):
    ledger.insert(0, ex("R3", "s0", 9, -1.0, -0.9))


def doctor_rerun_of_an_earlier_step_of_a_killed_worker(ledger, db, tl, events):
    # pid 2 finished R1/s0 (its body ended), went on to s1 and was killed: s0 running again
    # is not explained by the kill, which only excuses the body pid 2 was last in.
    ledger.insert(2, ex("R1", "s0", 3, 0.9, 1.0))
    db.steps[("R1", "s0")].update(started_at=T + 0.9 - 0.0001, completed_at=T + 1.001)


def doctor_too_many_reruns(ledger, db, tl, events):
    tl.kills.clear()
    tl.exits[2] = T + 0.15


def doctor_overlap_in_run(ledger, db, tl, events):
    ledger[2] = ex("R1", "s1", 3, 0.12, 1.4)  # pid 3 started while pid 2 was still in s1


def doctor_overlap_in_key(ledger, db, tl, events):
    ledger[5] = ex("R4", "s0", 8, 0.05, 0.3)
    db.steps[("R4", "s0")]["started_at"] = T + 0.05


def doctor_new_step_after_sigcont(ledger, db, tl, events):
    ledger.append(ex("R5", "s1", 4, 4.002, 4.05, "abort"))  # the frozen worker started a new step


def doctor_stale_write_accepted(ledger, db, tl, events):
    db.steps[("R5", "s0")]["started_at"] = T + 2.0 - 0.0001


def doctor_commit_after_cancel(ledger, db, tl, events):
    db.steps[("R2", "s0")]["completed_at"] = T + 0.3


def doctor_sigterm_step_unfinished(ledger, db, tl, events):
    tl.terms.append((6, T + 0.25))
    ledger[5] = ex("R4", "s0", 6, 0.2, 0.3, "abort")


def doctor_duplicate_event(ledger, db, tl, events):
    events.append((5, "step:complete", "R1", {"step_name": "s1"}))


def doctor_never_executed(ledger, db, tl, events):
    del ledger[3]


def doctor_integrity(ledger, db, tl, events):
    db.integrity = "*** in database main ***\nPage 4: btreeInitPage() returns error code 11"


@pytest.mark.parametrize("doctor, needle", [
    (doctor_lost, "run R1 is pending, expected completed"),
    (doctor_missing, "run R4 is missing"),
    (doctor_cancel_ignored, "run R2 is completed, expected cancelled"),
    (doctor_duplicate_row, "duplicate step rows"),
    (doctor_counter, "counts 2 completed steps"),
    (doctor_no_output, "completed without an output"),
    (doctor_rerun_after_commit, "executed again (pid 7) after it committed"),
    (doctor_rerun_without_kill, "was not interrupted by a kill, a stop or a restart"),
    (doctor_rerun_of_an_earlier_step_of_a_killed_worker, "R1/s0 ran again although its execution by pid 2"),
    (doctor_too_many_reruns, "re-executed step bodies for 0 kills"),
    (doctor_overlap_in_run, "R1: R1/s1 (pid 2) and R1/s1 (pid 3) executed at the same time"),
    (doctor_overlap_in_key, "k: R3/s0 (pid 6) and R4/s0 (pid 8) executed at the same time"),
    (doctor_new_step_after_sigcont, "executed at the same time"),
    (doctor_stale_write_accepted, "late write of SIGSTOPped pid 4 was accepted"),
    (doctor_commit_after_cancel, "committed after the run was cancelled"),
    (doctor_sigterm_step_unfinished, "in flight at SIGTERM of pid 6 did not finish"),
    (doctor_duplicate_event, "R1/s1 was reported complete 2 times"),
    (doctor_never_executed, "no body execution ended before the commit"),
    (doctor_integrity, "PRAGMA integrity_check"),
])
def test_each_check_fails_on_a_doctored_record(doctor, needle):
    data = copy.deepcopy(clean())
    doctor(*data)
    rep = run(*data)
    assert not rep.ok and rep.line().endswith("FAIL")
    assert any(needle in f for f in rep.failures), rep.failures


def test_a_really_corrupted_database_fails_the_integrity_check(tmp_path):
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE durably_runs (id, status, concurrency_key, output, completed_steps, completed_at);"
        "CREATE TABLE durably_steps (run_id, name, status, started_at, completed_at);"
        "CREATE TABLE pad (x); CREATE INDEX pad_x ON pad (x);")
    conn.executemany("INSERT INTO pad VALUES (?)", [(f"{i:08d}" * 20,) for i in range(2000)])
    conn.commit()
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'pad_x'").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096 if len(data) % 4096 == 0 else 1024
    start = (root - 1) * page + 100 if root == 1 else (root - 1) * page
    data[start + 8: start + 400] = b"\xff" * 392  # trample the index's root page cells
    path.write_bytes(bytes(data))
    state = checks.read_db(path)
    assert state.integrity != "ok"


def test_the_ledger_pairs_starts_with_ends_and_keeps_killed_bodies_open(tmp_path):
    path = str(tmp_path / "ledger.tsv")
    note(path, "start", "R", "s0")
    note(path, "end", "R", "s0")
    note(path, "start", "R", "s1")
    got = read(path)
    assert [(e.step, e.outcome, e.end is None) for e in got] == [("s0", "end", False), ("s1", "running", True)]


def _rerun_of_r3(ledger, db):
    """R3's s0 ran twice, by pid 6 (its commit lost) and pid 7 (committed at 5.1)."""
    ledger[4] = ex("R3", "s0", 6, 0.0, 0.1)
    ledger.append(ex("R3", "s0", 7, 5.0, 5.1))
    db.steps[("R3", "s0")] = {"status": "completed", "started_at": T + 5.0 - 0.0001, "completed_at": T + 5.101}
    db.runs["R3"]["completed_at"] = T + 5.2


def test_a_body_in_flight_at_a_postgresql_restart_may_run_again_and_only_that_one():
    ledger, db, tl, events = clean()
    _rerun_of_r3(ledger, db)
    # Far from any restart: a re-execution nothing explains.
    rep = run(ledger, db, tl, events)
    assert not rep.ok and any("not interrupted by a kill, a stop or a restart" in f for f in rep.failures)
    # The server restarted while the body ran: its commit met the restart.
    tl.restarts = [("fast", T + 0.05, T + 0.6)]
    rep = run(ledger, db, tl, events)
    assert rep.ok, rep.failures
    assert rep.restarts == 1 and "PostgreSQL restarts" not in rep.line()  # only said for --db postgres
    rep.db = "postgres"
    assert rep.line().startswith("chaos cpython on postgresql:") and "PostgreSQL restarts 1)" in rep.line()


def test_a_committed_step_that_runs_again_fails_even_during_a_restart():
    ledger, db, tl, events = clean()
    ledger.append(ex("R3", "s0", 7, 0.5, 0.6))  # after its commit at 0.101
    tl.restarts = [("immediate", T + 0.4, T + 0.7)]
    rep = run(ledger, db, tl, events)
    assert any("was executed again (pid 7) after it committed" in f for f in rep.failures), rep.failures


def test_postgresql_state_is_read_with_its_integrity_check(pg_url):
    from durably import Durably

    app = Durably(pg_url)
    try:
        run_id = app.trigger("j", 1, concurrency_key="k").id
    finally:
        app.close()
    state = checks.read_db(pg_url)
    assert state.integrity == "ok" and state.runs[run_id]["status"] == "pending" and state.step_rows == 0
    assert state.runs[run_id]["concurrency_key"] == "k"


def with_waits():
    """clean() plus R6, a chaos-wait run: w0; flaky failed once (pid 3) and passed on its
    retry; a 200 ms sleep from 0.6; the signal; w1 after the sleep."""
    ledger, db, tl, events = clean()
    ledger += [ex("R6", "w0", 3, 0.3, 0.35), ex("R6", "flaky", 3, 0.36, 0.4, "fail"),
               ex("R6", "flaky", 3, 0.5, 0.55), ex("R6", "w1", 3, 0.9, 0.95)]
    rows = {"w0": (0.3, 0.351), "flaky": (0.5, 0.551), "nap": (0.6, 0.8), "go": (0.85, 0.86), "w1": (0.9, 0.951)}
    for name, (a, b) in rows.items():
        db.steps[("R6", name)] = {"status": "completed", "started_at": T + a - 0.0001, "completed_at": T + b,
                                  "output": '{"run":"R6"}' if name == "go" else "1"}
    db.step_rows += len(rows)
    db.runs["R6"] = {"status": "completed", "concurrency_key": None, "output": '{"signal":{"run":"R6"}}',
                     "completed_steps": 5, "completed_at": T + 1.0, "job_name": "chaos-wait",
                     "input": {"nap_ms": 200}}
    db.signals[("R6", "go")] = [{"signal_id": "sig-R6", "payload": {"run": "R6"}}]
    db.attempts[("R6", "flaky")] = 1
    tl.expected["R6"] = "completed"
    return ledger, db, tl, events


def test_a_run_that_waited_passes_and_its_retry_is_no_re_execution():
    rep = run(*with_waits())
    assert rep.ok, rep.failures
    assert (rep.waits, rep.retried, rep.woken, rep.signalled, rep.reexecuted) == (1, 1, 1, 1, 2)
    assert "waits 1 (retried attempts 1, sleepers woken 1, signals delivered once 1)" in rep.line()


def doctor_woke_early(ledger, db, tl, events):
    ledger[-1] = ex("R6", "w1", 3, 0.7, 0.75)


def doctor_signal_twice(ledger, db, tl, events):
    db.signals[("R6", "go")].append({"signal_id": "other", "payload": {"run": "X"}})


def doctor_wrong_signal(ledger, db, tl, events):
    db.runs["R6"]["output"] = '{"signal":{"run":"X"}}'


def doctor_phantom_attempt(ledger, db, tl, events):
    db.attempts[("R6", "flaky")] = 2


def doctor_waiting_for_ever(ledger, db, tl, events):
    db.runs["R6"]["status"] = "waiting"


@pytest.mark.parametrize("doctor, needle", [
    (doctor_woke_early, "woke from its 200 ms sleep early"),
    (doctor_signal_twice, "2 stored signals 'go'"),
    (doctor_wrong_signal, "is not the signal it was sent"),
    (doctor_phantom_attempt, "2 failed attempts recorded for step flaky, 1 in the ledger"),
    (doctor_waiting_for_ever, "run R6 is waiting, expected completed"),
])
def test_each_check_of_runs_that_wait_fails_on_a_doctored_record(doctor, needle):
    data = copy.deepcopy(with_waits())
    doctor(*data)
    rep = run(*data)
    assert not rep.ok and any(needle in f for f in rep.failures), rep.failures
