"""Compare the ledger (what step bodies say they executed) with the database (what the
runtime committed) and with the harness's own timeline of signals and cancels.

Everything here is a pure function of its inputs, so the self-test (tests/chaos) can feed
it a doctored ledger or database and see each check fail.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .ledger import Execution

# A ledger time is taken a few microseconds after the step's started_at, and a step body's
# end a few microseconds before its completed_at; allow for clock reads on both sides.
SLACK = 0.002
# A step body in flight while PostgreSQL restarts, or this long after it is back, may lose
# its commit: the connection was cut, or the write failed and the run's lease (1 s) expired
# before it was taken over at a poll. Such a body may run again (its step never committed).
RESTART_GRACE = 2.0
# The steps of chaos-wait that have no body (a durable sleep, a signal wait): checked by 10.
WAIT_STEPS = ("nap", "go")


@dataclass
class Timeline:
    """What the harness did, with wall-clock times (time.time())."""

    kills: list[tuple[int, float]] = field(default_factory=list)  # (pid, t)
    stops: list[tuple[int, float, float]] = field(default_factory=list)  # (pid, t_stop, t_cont)
    terms: list[tuple[int, float]] = field(default_factory=list)  # (pid, t)
    restarts: list[tuple[str, float, float]] = field(default_factory=list)  # (mode, t_stop, t_back): PostgreSQL
    exits: dict[int, float] = field(default_factory=dict)  # pid -> when it was seen dead
    expected: dict[str, str] = field(default_factory=dict)  # run id -> "completed" | "cancelled"


@dataclass
class Report:
    runs: int = 0
    steps: int = 0
    kills: int = 0
    stops: int = 0
    terms: int = 0
    restarts: int = 0  # PostgreSQL restarts (--db postgres)
    db: str = "sqlite"
    cancelled: int = 0
    reexecuted: int = 0
    lost: int = 0
    duplicates: int = 0
    half_written: int = 0
    overlaps: int = 0
    stale_tails: int = 0
    # Runs that waited (chaos-wait): failed attempts retried, sleepers woken after their
    # wake-up time, signals delivered once.
    waits: int = 0
    retried: int = 0
    woken: int = 0
    signalled: int = 0
    integrity: str = "?"
    failures: list[str] = field(default_factory=list)

    @property
    def interruptions(self) -> int:
        return self.kills + self.stops + self.terms

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self, host: str = "cpython") -> str:
        where = f"{host} on postgresql" if self.db == "postgres" else host
        restarts = f", PostgreSQL restarts {self.restarts}" if self.db == "postgres" else ""
        return (
            f"chaos {where}: runs {self.runs} ({self.cancelled} cancelled), steps {self.steps}, "
            f"interruptions {self.interruptions} (SIGKILL {self.kills}, SIGSTOP {self.stops}, SIGTERM {self.terms}"
            f"{restarts}), "
            f"re-executed step bodies {self.reexecuted}, lost runs {self.lost}, "
            f"duplicate completions {self.duplicates}, half-written {self.half_written}, "
            f"overlapping executions {self.overlaps} (stale tails after SIGCONT {self.stale_tails}), "
            + (
                f"waits {self.waits} (retried attempts {self.retried}, sleepers woken {self.woken}, "
                f"signals delivered once {self.signalled}), "
                if self.waits
                else ""
            )
            + f"integrity {self.integrity}: {'PASS' if self.ok else 'FAIL'}"
        )


def ts(text: str | None) -> float | None:
    if text is None:
        return None
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


@dataclass
class DbState:
    runs: dict[str, dict]  # id -> {status, concurrency_key, output, completed_steps, completed_at, job_name, input}
    steps: dict[tuple[str, str], dict]  # (run id, name) -> {status, started_at, completed_at, output}
    step_rows: int  # rows in durably_steps, to see duplicates the dict would hide
    integrity: str
    signals: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (run id, name) -> [{signal_id, payload}]
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # (run id, step) -> failed attempts recorded


_RUNS_SQL = (
    # A finished run stores its count of completed steps; an unfinished one's is counted
    # from the steps table (schema 2: a step's commit does not touch the run).
    "SELECT id, status, concurrency_key, output, "
    "CASE WHEN completed_at IS NULL THEN (SELECT COUNT(*) FROM durably_steps s "
    "WHERE s.run_id = durably_runs.id AND s.status = 'completed') "
    "ELSE completed_steps END, completed_at, job_name, input FROM durably_runs"
)
_STEPS_SQL = "SELECT run_id, name, status, started_at, completed_at, output FROM durably_steps"
_SIGNALS_SQL = "SELECT run_id, name, signal_id, payload FROM durably_signals"  # schema 5
_ATTEMPTS_SQL = "SELECT run_id, step_name, COUNT(*) FROM durably_attempts GROUP BY 1, 2"


def _state(run_rows: Iterable, step_rows: list, integrity: str, signal_rows: Iterable = (),
           attempt_rows: Iterable = ()) -> DbState:
    runs: dict[str, dict] = {}
    steps: dict[tuple[str, str], dict] = {}
    signals: dict[tuple[str, str], list[dict]] = {}
    attempts: dict[tuple[str, str], int] = {}
    for r in run_rows:
        runs[r[0]] = {"status": r[1], "concurrency_key": r[2], "output": r[3],
                      "completed_steps": r[4], "completed_at": ts(r[5]), "job_name": r[6],
                      "input": _json_or_none(r[7])}
    for run_id, name, status, started, completed, output in step_rows:
        steps[(run_id, name)] = {"status": status, "started_at": ts(started), "completed_at": ts(completed),
                                 "output": output}
    for run_id, name, signal_id, payload in signal_rows:
        signals.setdefault((run_id, name), []).append({"signal_id": signal_id, "payload": _json_or_none(payload)})
    for run_id, step, count in attempt_rows:
        attempts[(run_id, step)] = count
    return DbState(runs, steps, len(step_rows), integrity, signals, attempts)


def read_db(path: str | Path) -> DbState:
    """The runs, steps, signals and attempts tables and the engine's integrity check
    (SQLite's ``PRAGMA integrity_check``; on PostgreSQL, a ``postgresql://`` URL, amcheck's
    check of every durably index against its table). A database too damaged to read gives
    empty tables and the error as its integrity verdict (so every run is lost)."""
    if str(path).startswith("postgresql://"):
        return _read_postgres(str(path))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows: list = []
    try:
        try:
            integrity = "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
        except sqlite3.DatabaseError as exc:
            return DbState({}, {}, 0, f"unreadable: {exc}")
        run_rows: list = []
        signal_rows: list = []
        attempt_rows: list = []
        try:
            run_rows = conn.execute(_RUNS_SQL).fetchall()
            rows = conn.execute(_STEPS_SQL).fetchall()
            tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "durably_signals" in tables:  # schema 5
                signal_rows = conn.execute(_SIGNALS_SQL).fetchall()
                attempt_rows = conn.execute(_ATTEMPTS_SQL).fetchall()
        except sqlite3.DatabaseError as exc:
            integrity = f"{integrity}; unreadable: {exc}"
    finally:
        conn.close()
    return _state(run_rows, rows, integrity, signal_rows, attempt_rows)


def _read_postgres(url: str) -> DbState:
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        return DbState({}, {}, 0, f"unreadable: {exc}")
    try:
        problems = []
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            indexes = conn.execute(
                "SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_am a ON a.oid = c.relam "
                "WHERE t.relname LIKE 'durably_%' AND a.amname = 'btree' "
                "AND t.relnamespace = current_schema()::regnamespace").fetchall()
            for oid, name in indexes:
                try:
                    conn.execute("SELECT bt_index_check(%s, true)", (oid,))  # heapallindexed
                except psycopg.Error as exc:
                    problems.append(f"{name}: {exc}")
            integrity = "; ".join(problems) or ("ok" if indexes else "no durably indexes found")
        except psycopg.Error as exc:
            integrity = f"amcheck unavailable: {exc}"
        try:
            run_rows = conn.execute(_RUNS_SQL).fetchall()
            rows = conn.execute(_STEPS_SQL).fetchall()
            signal_rows = conn.execute(_SIGNALS_SQL).fetchall()
            attempt_rows = conn.execute(_ATTEMPTS_SQL).fetchall()
        except psycopg.Error as exc:
            return DbState({}, {}, 0, f"{integrity}; unreadable: {exc}")
    finally:
        conn.close()
    return _state(run_rows, rows, integrity, signal_rows, attempt_rows)


def _json_or_none(text: str | None):
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def parse_events(lines: Iterable[tuple[int, str]]) -> list[tuple[int, str, str, dict]]:
    """``(pid, line)`` of a worker's stdout (one line per event, see durably.cli) ->
    ``(pid, type, run_id, payload)``."""
    out = []
    for pid, line in lines:
        parts = line.split(maxsplit=4)
        if len(parts) < 4 or ":" not in parts[1]:
            continue
        payload = {}
        if len(parts) == 5 and parts[4].startswith("{"):
            try:
                payload = json.loads(parts[4])
            except ValueError:
                payload = {}
        out.append((pid, parts[1], parts[2], payload))
    return out


def _at_restart(ex: Execution, tl: Timeline) -> bool:
    """Was this body in flight during a PostgreSQL restart (or just after it)?"""
    return any(ex.start < t_back + RESTART_GRACE and (ex.end is None or ex.end > t_stop)
               for _, t_stop, t_back in tl.restarts)


def _segments(ex: Execution, tl: Timeline, horizon: float) -> list[tuple[float, float, bool]]:
    """When the body was actually executing: ``[start, end]`` minus the times its process
    was frozen by SIGSTOP. Returns ``(a, b, after_a_stop)`` segments."""
    end = ex.end
    if end is None:
        end = tl.exits.get(ex.pid, horizon)
    segs = [(ex.start, end, False)]
    for pid, t_stop, t_cont in tl.stops:
        if pid != ex.pid:
            continue
        nxt = []
        for a, b, stale in segs:
            if b <= t_stop or a >= t_cont:
                nxt.append((a, b, stale or a >= t_cont and ex.start < t_stop))
                continue
            if a < t_stop:
                nxt.append((a, t_stop, stale))
            if b > t_cont:
                nxt.append((t_cont, b, True))
        segs = nxt
    return segs


def _overlaps(groups: dict[str, list[Execution]], tl: Timeline, horizon: float,
              same_run_ok: bool) -> tuple[list[str], int]:
    bad, stale_tails = [], 0
    for key, exs in groups.items():
        segs = []
        for ex in exs:
            for a, b, stale in _segments(ex, tl, horizon):
                segs.append((a, b, stale, ex))
        segs.sort(key=lambda s: s[0])
        for i, (_a1, b1, s1, e1) in enumerate(segs):
            for a2, b2, s2, e2 in segs[i + 1:]:
                if a2 >= b1:
                    break
                if e1 is e2 or (same_run_ok and e1.run_id == e2.run_id):
                    continue
                if s1 or s2:
                    stale_tails += 1
                    continue
                bad.append(f"{key}: {e1.run_id}/{e1.step} (pid {e1.pid}) and {e2.run_id}/{e2.step} "
                           f"(pid {e2.pid}) executed at the same time ({a2:.3f}..{min(b1, b2):.3f})")
    return bad, stale_tails


def check(ledger: list[Execution], db: DbState, tl: Timeline,
          events: list[tuple[int, str, str, dict]] | None = None, horizon: float | None = None) -> Report:
    rep = Report(kills=len(tl.kills), stops=len(tl.stops), terms=len(tl.terms), restarts=len(tl.restarts))
    fail = rep.failures.append
    horizon = horizon if horizon is not None else max([e.end or e.start for e in ledger] + [0.0]) + 1
    rep.runs = len(tl.expected)
    rep.cancelled = sum(1 for s in tl.expected.values() if s == "cancelled")
    rep.steps = sum(1 for s in db.steps.values() if s["status"] == "completed")
    rep.integrity = db.integrity

    # 1. Every run reaches the state it should.
    for run_id, want in tl.expected.items():
        got = db.runs.get(run_id, {}).get("status")
        if got != want:
            rep.lost += 1
            fail(f"run {run_id} is {got or 'missing'}, expected {want}")
    for run_id in db.runs.keys() - tl.expected.keys():
        fail(f"run {run_id} is in the database but was never triggered")

    # 2. Nothing half-written: a completed run has its output and counters match its steps.
    done_per_run: dict[str, int] = {}
    for (run_id, _), s in db.steps.items():
        if s["status"] == "completed":
            done_per_run[run_id] = done_per_run.get(run_id, 0) + 1
    for run_id, r in db.runs.items():
        if r["status"] == "completed" and r["output"] is None:
            rep.half_written += 1
            fail(f"run {run_id} is completed without an output")
        if r["completed_steps"] != done_per_run.get(run_id, 0):
            rep.half_written += 1
            fail(f"run {run_id} counts {r['completed_steps']} completed steps, the steps table has "
                 f"{done_per_run.get(run_id, 0)}")
    if db.step_rows != len(db.steps):
        rep.duplicates += db.step_rows - len(db.steps)
        fail(f"{db.step_rows - len(db.steps)} duplicate step rows")

    # 3. Every completed step was executed (the ledger has its body ending before the commit),
    #    and no completed step was executed again after its commit.
    by_step: dict[tuple[str, str], list[Execution]] = {}
    for ex in ledger:
        by_step.setdefault((ex.run_id, ex.step), []).append(ex)
    for key, s in db.steps.items():
        if s["status"] != "completed" or key[1] in WAIT_STEPS:
            continue
        exs = by_step.get(key, [])
        if not any(e.outcome == "end" and e.end <= s["completed_at"] + SLACK for e in exs):
            fail(f"step {key[0]}/{key[1]} committed as completed but no body execution ended before the commit")
        for e in exs:
            if e.start > s["completed_at"] + SLACK:
                fail(f"step {key[0]}/{key[1]} was executed again (pid {e.pid}) after it committed")

    # 4. Re-executions: only bodies in flight at a SIGKILL, in a SIGSTOPped worker or during a
    # PostgreSQL restart. A killed worker's last body may have ended (or not) before the
    # kill; either way its commit may not have happened. Only that last execution is
    # excused, not earlier ones. (Check 3 holds for all: no body ran after its step committed.)
    killed = {pid for pid, _ in tl.kills}
    at_restarts = 0
    last_start: dict[int, float] = {}
    for ex in ledger:
        last_start[ex.pid] = max(last_start.get(ex.pid, ex.start), ex.start)
    for key, exs in by_step.items():
        exs = sorted(exs, key=lambda e: e.start)
        # A failed attempt (a body that raised on purpose) runs again by design: a retry.
        rep.retried += sum(1 for e in exs if e.outcome == "fail")
        rep.reexecuted += sum(1 for e in exs[:-1] if e.outcome != "fail")
        for e in exs[:-1]:
            if e.outcome == "fail":
                continue
            if e.pid in killed and e.start == last_start[e.pid]:
                continue
            if any(pid == e.pid and e.start < t_stop and (e.end is None or e.end > t_stop)
                   for pid, t_stop, _ in tl.stops):
                continue
            if _at_restart(e, tl):
                at_restarts += 1
                continue
            fail(f"step {key[0]}/{key[1]} ran again although its execution by pid {e.pid} "
                 f"was not interrupted by a kill, a stop or a restart ({e.outcome})")
    if rep.reexecuted > rep.kills + rep.stops + at_restarts:
        fail(f"{rep.reexecuted} re-executed step bodies for {rep.kills} kills, {rep.stops} stops "
             f"and {at_restarts} bodies in flight at restarts")

    # 5. SIGTERM: the step in flight finishes, and is never executed again.
    for pid, t in tl.terms:
        for e in ledger:
            if e.pid == pid and e.start <= t and (e.end is None or e.end >= t):
                if e.outcome not in ("end", "fail"):
                    fail(f"step {e.run_id}/{e.step} in flight at SIGTERM of pid {pid} did not finish ({e.outcome})")
                if _at_restart(e, tl):
                    continue  # its commit may have met the restart
                if e.outcome == "end" and any(o.start > e.start for o in by_step[(e.run_id, e.step)]):
                    fail(f"step {e.run_id}/{e.step} in flight at SIGTERM of pid {pid} was executed again")

    # 6. SIGSTOP: the frozen worker's late step write is refused once another worker took over.
    for pid, t_stop, _t_cont in tl.stops:
        for e in ledger:
            if e.pid != pid or e.start >= t_stop or (e.end is not None and e.end <= t_stop):
                continue
            others = [o for o in by_step.get((e.run_id, e.step), []) if o.pid != pid]
            row = db.steps.get((e.run_id, e.step))
            if others and row is not None and row["started_at"] is not None and row["started_at"] < t_stop:
                fail(f"step {e.run_id}/{e.step}: the late write of SIGSTOPped pid {pid} was accepted "
                     "although another worker had taken the run over")

    # 7. No committed step after its run was cancelled.
    for run_id, r in db.runs.items():
        if r["status"] != "cancelled" or r["completed_at"] is None:
            continue
        for (rid, name), s in db.steps.items():
            if rid == run_id and s["status"] == "completed" and s["completed_at"] > r["completed_at"] + SLACK:
                fail(f"step {run_id}/{name} committed after the run was cancelled")

    # 8. No two workers executing steps of one run, or of one concurrency key, at once.
    by_run: dict[str, list[Execution]] = {}
    by_key: dict[str, list[Execution]] = {}
    for ex in ledger:
        by_run.setdefault(ex.run_id, []).append(ex)
        key = db.runs.get(ex.run_id, {}).get("concurrency_key")
        if key is not None:
            by_key.setdefault(key, []).append(ex)
    bad_run, tails_run = _overlaps(by_run, tl, horizon, same_run_ok=False)
    bad_key, tails_key = _overlaps(by_key, tl, horizon, same_run_ok=True)
    rep.overlaps = len(bad_run) + len(bad_key)
    rep.stale_tails = tails_run + tails_key
    for msg in bad_run + bad_key:
        fail(msg)
    if rep.stale_tails > 2 * rep.stops:
        fail(f"{rep.stale_tails} stale tails after SIGCONT for {rep.stops} stops")

    # 9. The runtime's own reports: one step:complete per step, one run:complete per run.
    if events is not None:
        seen: dict[tuple[str, str], int] = {}
        for _pid, kind, run_id, payload in events:
            if kind == "step:complete":
                k = (run_id, payload.get("step_name", "?"))
            elif kind == "run:complete":
                k = (run_id, "<run>")
            else:
                continue
            seen[k] = seen.get(k, 0) + 1
        for k, n in seen.items():
            if n > 1:
                rep.duplicates += n - 1
                fail(f"{k[0]}/{k[1]} was reported complete {n} times")

    # 10. Runs that waited (chaos-wait): the failed attempt was retried (and recorded, at most
    #     once per failure), the sleeper woke no earlier than its wake-up time, and the signal
    #     was delivered once: one stored signal, the step's result and the run's output.
    for run_id, r in db.runs.items():
        if r.get("job_name") != "chaos-wait":
            continue
        rep.waits += 1
        failures = sum(1 for e in by_step.get((run_id, "flaky"), []) if e.outcome == "fail")
        if db.attempts.get((run_id, "flaky"), 0) > failures:
            fail(f"run {run_id}: {db.attempts[(run_id, 'flaky')]} failed attempts recorded for step flaky, "
                 f"{failures} in the ledger")
        if r["status"] != "completed":
            continue
        nap = db.steps.get((run_id, "nap"))
        after = [e.start for e in by_step.get((run_id, "w1"), [])]
        nap_ms = (r.get("input") or {}).get("nap_ms", 0)
        if nap is None or nap["status"] != "completed":
            fail(f"run {run_id} completed without its sleep completed")
        elif after and min(after) < nap["started_at"] + nap_ms / 1000 - SLACK:
            fail(f"run {run_id} woke from its {nap_ms} ms sleep early: the next step started "
                 f"{nap['started_at'] + nap_ms / 1000 - min(after):.3f} s before its wake-up time")
        else:
            rep.woken += 1
        sent = db.signals.get((run_id, "go"), [])
        output = _json_or_none(r["output"]) or {}
        go = db.steps.get((run_id, "go"))
        if len(sent) != 1:
            fail(f"run {run_id} has {len(sent)} stored signals 'go', not one")
        elif output.get("signal") != sent[0]["payload"] or go is None or _json_or_none(go["output"]) != sent[0]["payload"]:
            fail(f"run {run_id}: its output {output.get('signal')!r} is not the signal it was sent {sent[0]['payload']!r}")
        else:
            rep.signalled += 1

    if db.integrity != "ok":
        fail(f"PRAGMA integrity_check: {db.integrity}")
    return rep
