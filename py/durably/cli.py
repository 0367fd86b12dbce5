"""The ``durably`` command (also ``python -m durably``): the CPython host.

    durably worker MODULE --db DB [--concurrency N]    run jobs until SIGTERM/SIGINT
    durably trigger --db DB JOB [INPUT_JSON]           insert a run, no job code needed
    durably runs --db DB [--status S] [--job J]        list runs, newest first
    durably show --db DB RUN_ID                        one run with its steps and its last logs
    durably status --db DB [--json] [--check]          workers, runs, pending runs nobody runs
    durably cancel --db DB RUN_ID
    durably retrigger --db DB RUN_ID
    durably delete --db DB RUN_ID
    durably signal --db DB RUN_ID NAME [PAYLOAD_JSON] [--signal-id ID]
    durably schedules --db DB [--json]                 scheduled jobs and their next times
    durably copy --from DB --to DB [--replace]         every run into another database
    durably site build [--config FILE] [--out DIR] [--find-links DIR]
                                                        build the browser site (docs/site.md)

``DB`` is an SQLite file or a ``postgresql://`` URL. ``--db`` defaults to the ``DURABLY_DB``
environment variable; every command but ``worker`` and ``trigger`` opens an existing
database only. Exit status: 0 on success, 2 for usage errors and bad input (one line on
stderr, no traceback), 1 for other failures (the database failed or cannot be reached, a
newer schema), 3 for ``status --check`` when a job with pending runs has no live worker.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .app import Durably
from .clock import iso
from .driver import Sqlite3Driver
from .errors import ConflictError, DurablyError, NotFoundError, NoWorkerWarning, StorageError, ValidationError
from .events import Event
from .jobs import Job
from .jsondata import parse_json
from .limits import WORKER_STALE_AFTER
from .models import Run, ScheduleRecord
from .schedules import Schedule
from .settings import OPTIONS
from .validation import check_timeout

BAD_INPUT = (ValidationError, NotFoundError, ConflictError)
#: Log lines ``durably show`` prints: the last ones (it says how many it left out).
SHOW_LOGS = 1000
#: ``durably status --check``: a job with pending runs has no live worker.
EXIT_UNHANDLED = 3


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 as well; keep it one line
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="durably", description="Durable Python jobs on SQLite or PostgreSQL.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def db_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            default=os.environ.get("DURABLY_DB"),
            metavar="DB",
            help="the database: an SQLite file or a postgresql://USER:PASSWORD@HOST:PORT/DBNAME URL "
            "(default: $DURABLY_DB)",
        )

    w = sub.add_parser("worker", help="run the jobs of MODULE until SIGTERM or SIGINT")
    w.add_argument("module", metavar="MODULE", help="a module name (my_app.jobs) or a .py file")
    db_option(w)
    # The worker's options, their defaults and help from durably.settings (one table).
    for name, (_, flag, text, default) in OPTIONS.items():
        if flag is not None:
            kind = type(default) if default is not None else str
            shown = "none" if default is None else f"{default:g}" if isinstance(default, float) else default
            metavar = {float: "SECONDS", int: "N"}.get(kind, "AGE")
            w.add_argument(flag, dest=name, type=kind, default=None, metavar=metavar, help=f"{text} (default {shown})")
    w.add_argument(
        "--stop-timeout",
        type=float,
        default=None,
        help="seconds to let steps in flight finish after SIGTERM before cancelling them",
    )
    w.add_argument("--quiet", action="store_true", help="do not print a line per event")

    t = sub.add_parser("trigger", help="insert a run of JOB (by name; no job code is imported)")
    db_option(t)
    t.add_argument("job", metavar="JOB")
    t.add_argument("input", metavar="INPUT_JSON", nargs="?", default="null", help="the input as JSON")
    t.add_argument("--idempotency-key")
    t.add_argument("--concurrency-key")
    t.add_argument("--coalesce", choices=["skip"])
    t.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--wait", type=float, metavar="SECONDS", help="wait for the run to finish")

    r = sub.add_parser("runs", help="list runs, newest first")
    db_option(r)
    r.add_argument("--status", action="append", help="filter by status (repeatable)")
    r.add_argument("--job", action="append", help="filter by job name (repeatable)")
    r.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--limit", type=int, default=50)
    r.add_argument("--json", action="store_true", help="print JSON lines")

    st = sub.add_parser("status", help="live workers, runs by status, and pending runs no live worker will run")
    db_option(st)
    st.add_argument("--json", action="store_true", help="print the status as one JSON object")
    st.add_argument(
        "--check",
        action="store_true",
        help=f"exit {EXIT_UNHANDLED} when a job with pending runs has no live worker (a health check)",
    )

    sg = sub.add_parser("signal", help="send the signal NAME to a run (step.wait_for_signal)")
    db_option(sg)
    sg.add_argument("run_id", metavar="RUN_ID")
    sg.add_argument("name", metavar="NAME")
    sg.add_argument("payload", metavar="PAYLOAD_JSON", nargs="?", default="null", help="the payload as JSON")
    sg.add_argument("--signal-id", help="an id that makes sending it again harmless (default: a new one)")

    sc = sub.add_parser("schedules", help="the scheduled jobs the workers registered, with their next times")
    db_option(sc)
    sc.add_argument("--json", action="store_true", help="print JSON lines")

    site = sub.add_parser("site", help="the browser site of your jobs (docs/site.md)")
    site_sub = site.add_subparsers(dest="site_command", metavar="SITE_COMMAND", parser_class=_Parser)
    sb = site_sub.add_parser("build", help="build the static site [tool.durably.site] describes")
    sb.add_argument(
        "--config", default="pyproject.toml", help="the file with [tool.durably.site] (default pyproject.toml)"
    )
    sb.add_argument("--out", help="the output folder (default: the config's out, else site)")
    sb.add_argument(
        "--find-links",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of wheels to resolve requirements from, e.g. Pyodide's own (repeatable)",
    )
    sb.add_argument("--test-page", action="store_true", help="add test.html, the browser tests' page (never deploy it)")

    for name, text in (
        ("show", "one run with its steps and logs"),
        ("cancel", "cancel a pending or leased run"),
        ("retrigger", "run a finished run's job again with the same input"),
        ("delete", "delete a finished run"),
    ):
        p = sub.add_parser(name, help=text)
        db_option(p)
        p.add_argument("run_id", metavar="RUN_ID")

    c = sub.add_parser(
        "copy",
        help="copy every run, with its steps, labels and logs, into another database (SQLite or PostgreSQL)",
    )
    c.add_argument("--from", dest="source", metavar="DB", required=True, help="the database to copy (it must exist)")
    c.add_argument("--to", dest="target", metavar="DB", required=True, help="the database to copy into")
    c.add_argument(
        "--replace",
        action="store_true",
        help="delete the runs the target holds first (in the same transaction); without it a target "
        "that holds runs is refused",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        print(f"durably: {exc}", file=sys.stderr)
        return 2
    except BAD_INPUT as exc:
        print(f"durably: {exc}", file=sys.stderr)
        return 2
    except DurablyError as exc:
        print(f"durably: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "site":
        return _site(args)
    if args.command == "copy":
        return _copy(args)
    if not args.db:
        raise UsageError(
            f"{args.command}: --db PATH is required (an SQLite file or a postgresql:// URL; or set DURABLY_DB)"
        )
    if args.command == "worker":
        return _worker(args)
    app = _open_existing(args.db, args.command) if args.command in EXISTING_ONLY else Durably(args.db)
    try:
        return _COMMANDS[args.command](app, args)
    finally:
        app.close()


# Commands about runs that must already exist: they open an existing database only, and
# never create one (a mistyped --db would otherwise leave a new, empty database behind).
EXISTING_ONLY = ("runs", "show", "status", "cancel", "retrigger", "delete", "signal", "schedules")


def _site(args: argparse.Namespace) -> int:
    from .site import SiteBuildError, build, load_config

    if args.site_command != "build":
        raise UsageError("site: give a command: durably site build [--config FILE] [--out DIR] [--find-links DIR]")
    config = load_config(args.config)
    try:
        site = build(
            config,
            out=Path(args.out) if args.out else None,
            find_links=[Path(p) for p in args.find_links],
            test_page=args.test_page,
        )
    except SiteBuildError as exc:
        print(f"durably: site build failed: {exc}", file=sys.stderr)
        return 1
    print(f"durably: the site is in {site}; serve it over http://localhost or https:// (docs/site.md)")
    return 0


def _open_existing(path: str, command: str) -> Durably:
    if _is_url(path):
        return _open_existing_url(path, command)
    missing = NotFoundError(
        f"no durably database at {path!r}: `durably {command}` reads an existing database and "
        "does not create one; check --db (or $DURABLY_DB)"
    )
    if path == ":memory:" or not os.path.isfile(path):
        raise missing
    try:
        app = Durably(Sqlite3Driver(path, create=False))
    except StorageError as exc:
        if exc.code == "SQLITE_CANTOPEN":
            raise missing from None
        raise
    try:
        if app.schema_version() == 0:  # a read only: nothing is created in the file
            raise NotFoundError(
                f"{path!r} is not a durably database (it has no durably tables); "
                f"`durably {command}` does not create one; check --db (or $DURABLY_DB)"
            )
    except BaseException:
        app.close()
        raise
    return app


def _is_url(db: str) -> bool:
    return "://" in db


def _shown(db: str) -> str:
    """The database as messages name it: a URL without its password."""
    if _is_url(db):
        from .pg_driver import describe_url

        return db.split("://", 1)[0] + "://" + describe_url(db)
    return db


def _open_existing_url(url: str, command: str) -> Durably:
    try:
        app = Durably(url)
    except StorageError as exc:
        if exc.code == "3D000":  # the database does not exist: like a missing file
            raise NotFoundError(f"no durably database at {_shown(url)}: {exc}") from None
        raise
    try:
        if app.schema_version() == 0:  # reads only: nothing is created
            raise NotFoundError(
                f"{_shown(url)} holds no durably tables (in the schema its search_path names first); "
                f"`durably {command}` does not create them; check --db (or $DURABLY_DB)"
            )
    except BaseException:
        app.close()
        raise
    return app


def _copy(args: argparse.Namespace) -> int:
    source_db, target_db = args.source, args.target
    if not _is_url(source_db) and not _is_url(target_db) and os.path.exists(target_db):
        if os.path.exists(source_db) and os.path.samefile(source_db, target_db):
            raise UsageError("copy: --from and --to name the same database file")
    if source_db == target_db:
        raise UsageError("copy: --from and --to name the same database")
    source = _open_existing(source_db, "copy")
    try:
        target = Durably(target_db)
        try:
            result = source.copy_to(target, replace=args.replace)
        finally:
            target.close()
    finally:
        source.close()
    out = {"from": _shown(source_db), "to": _shown(target_db), **result.to_dict()}
    print(json.dumps(out))
    if result.handed_back:
        print(
            f"durably: {result.handed_back} run(s) were leased in the source; they are pending in the copy "
            "and resume at their first unfinished step there. Stop the source's workers before the "
            "target's start, or both execute them",
            file=sys.stderr,
        )
    return 0


def _labels(pairs: list[str]) -> dict[str, str] | None:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label takes KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels or None


def _trigger(app: Durably, args: argparse.Namespace) -> int:
    check_timeout(args.wait, "--wait")  # before the trigger: a refused command leaves no run
    data = parse_json(args.input, "INPUT_JSON", """; e.g. '{"org": "a"}'""")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoWorkerWarning)
        run = app.trigger(
            args.job,
            data,
            idempotency_key=args.idempotency_key,
            concurrency_key=args.concurrency_key,
            coalesce=args.coalesce,
            labels=_labels(args.label),
        )
    for warning in caught:  # one line each on stderr, no source line
        print(f"durably: warning: {warning.message}", file=sys.stderr)
    print(json.dumps({"id": run.id, "job_name": run.job_name, "status": run.status, "disposition": run.disposition}))
    if args.wait is not None:
        final = asyncio.run(app.wait_for_run(run.id, timeout=args.wait))
        print(json.dumps(final.to_dict()))
    return 0


def _runs(app: Durably, args: argparse.Namespace) -> int:
    runs = app.get_runs(status=args.status, job_name=args.job, labels=_labels(args.label), limit=args.limit)
    if args.json:
        for run in runs:
            print(_json(run.to_dict()))
        return 0
    print(f"{'ID':26}  {'JOB':20}  {'STATUS':9}  {'PROGRESS':10}  CREATED")
    for run in runs:
        # str(): a hand-edited row may hold NULL or a BLOB where text belongs.
        print(
            f"{str(run.id):26}  {str(run.job_name)[:20]:20}  {str(run.status):9}  {_progress(run):10}  "
            f"{run.to_dict()['created_at']}"
        )
    return 0


def _json(value: Any, indent: int | None = None) -> str:
    """JSON for the terminal; a BLOB a hand edit left in a text column shows as the
    browser protocol shows it, ``{"$bytes": "<hex>"}``."""
    return json.dumps(value, indent=indent, default=lambda v: {"$bytes": v.hex()} if isinstance(v, bytes) else str(v))


def _progress(run: Run) -> str:
    p = run.progress
    if not isinstance(p, dict) or p.get("current") is None:  # none yet, or a hand edit
        return "-"
    return f"{p['current']}/{p['total']}" if p.get("total") is not None else str(p["current"])


def _show(app: Durably, args: argparse.Namespace) -> int:
    run = app.get_run(args.run_id)
    if run is None:
        raise NotFoundError(f"no run with id {args.run_id!r}")
    out = run.to_dict()
    out["steps"] = [s.to_dict() for s in app.get_steps(run.id)]
    logs = app.get_logs(run.id, last=SHOW_LOGS)
    out["logs"] = [log.to_dict() for log in logs]
    left_out = app.count_logs(run.id) - len(logs) if len(logs) == SHOW_LOGS else 0
    if left_out > 0:
        out["logs_left_out"] = left_out
    print(_json(out, indent=2))
    if left_out > 0:
        print(
            f"durably: showing the last {SHOW_LOGS:,} log lines; {left_out:,} earlier lines were left out "
            "(Durably.get_logs(run_id, after_id=..., limit=...) pages through them all)",
            file=sys.stderr,
        )
    return 0


def _status(app: Durably, args: argparse.Namespace) -> int:
    status = app.status()
    if args.json:
        print(json.dumps(status.to_dict()))
    else:
        now = status.checked_at
        print(
            f"workers: {len(status.workers)} live, {len(status.stale_workers)} stale "
            f"(no heartbeat for {WORKER_STALE_AFTER:g} s)"
        )
        for w in status.workers + status.stale_workers:
            state = "live " if w in status.workers else "stale"
            beat = "unreadable" if w.heartbeat_at is None else f"{(now - w.heartbeat_at).total_seconds():.0f} s ago"
            where = w.host if w.pid is None else f"{w.host} pid {w.pid}"
            print(
                f"  {state} {w.worker_id}  {where}  durably {w.version}  concurrency {w.concurrency}  "
                f"heartbeat {beat}  jobs: {', '.join(w.jobs) or '-'}"
            )
        print("runs: " + ", ".join(f"{name} {count}" for name, count in status.runs.items()))
        if status.unhandled:
            for name, count in status.unhandled.items():
                print(f"unhandled: job {name!r} has {count} pending run(s) and no live worker registers it")
        else:
            print("unhandled: none")
    if args.check and not status.healthy:
        jobs = ", ".join(f"{name!r} ({count} pending)" for name, count in status.unhandled.items())
        print(f"durably: unhealthy: no live worker runs {jobs}", file=sys.stderr)
        return EXIT_UNHANDLED
    return 0


def _cancel(app: Durably, args: argparse.Namespace) -> int:
    run = app.cancel(args.run_id)
    print(json.dumps({"id": run.id, "status": run.status}))
    return 0


def _retrigger(app: Durably, args: argparse.Namespace) -> int:
    run = app.retrigger(args.run_id)
    print(json.dumps({"id": run.id, "job_name": run.job_name, "status": run.status, "retrigger_of": args.run_id}))
    return 0


def _delete(app: Durably, args: argparse.Namespace) -> int:
    app.delete_run(args.run_id)
    print(json.dumps({"id": args.run_id, "deleted": True}))
    return 0


def _signal(app: Durably, args: argparse.Namespace) -> int:
    payload = parse_json(args.payload, "PAYLOAD_JSON", """; e.g. '{"approved": true}'""")
    record = app.signal(args.run_id, args.name, payload, signal_id=args.signal_id)
    print(_json(record.to_dict()))
    return 0


#: Times ``durably schedules`` shows for each schedule: its next slot and the ones after it.
SCHEDULE_TIMES = 3


def _schedules(app: Durably, args: argparse.Namespace) -> int:
    records = app.get_schedules()
    rows = []
    for record in records:
        data = record.to_dict()
        data["next_times"] = _next_times(record)
        rows.append(data)
    if args.json:
        for data in rows:
            print(_json(data))
        return 0
    if not rows:
        print("no schedules (a worker registers its jobs' schedules when it starts)")
        return 0
    print(f"{'JOB':20}  {'SCHEDULE':16}  {'TIME ZONE':16}  {'CATCH-UP':8}  {'LAST SLOT':27}  NEXT TIMES")
    for data in rows:
        print(
            f"{str(data['job_name'])[:20]:20}  {str(data['cron'])[:16]:16}  {str(data['timezone'])[:16]:16}  "
            f"{str(data['catch_up']):8}  {data['last_slot'] or '-':27}  {', '.join(data['next_times']) or '-'}"
        )
    return 0


def _next_times(record: ScheduleRecord) -> list[str]:
    """The schedule's next slot and the ones after it (as many as ``SCHEDULE_TIMES``), UTC."""
    if record.next_at is None:
        return []
    times = [record.next_at]
    try:
        schedule = Schedule(record.cron, record.timezone, record.catch_up)
        while len(times) < SCHEDULE_TIMES:
            following = schedule.next_after(times[-1])
            if following is None:
                break
            times.append(following)
    except Exception:  # a hand edit, or an expression this durably does not read: the stored time
        pass
    return [iso(t) for t in times]


_COMMANDS = {
    "trigger": _trigger,
    "runs": _runs,
    "show": _show,
    "status": _status,
    "cancel": _cancel,
    "retrigger": _retrigger,
    "delete": _delete,
    "signal": _signal,
    "schedules": _schedules,
}


def load_jobs(module: str) -> list[Job]:
    """Import MODULE (a dotted name, or a path to a .py file) and return the jobs defined
    at its top level."""
    if module.endswith(".py") or os.sep in module:
        path = Path(module)
        if not path.is_file():
            raise UsageError(f"no such file: {module}")
        sys.path.insert(0, str(path.resolve().parent))
        name = path.stem
    else:
        sys.path.insert(0, os.getcwd())
        name = module
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"cannot import {module!r}: {exc}") from None
    if spec is None:
        raise UsageError(
            f"cannot import {module!r}: no module named {name!r} (run from the folder that holds it, or set PYTHONPATH)"
        )
    try:
        mod = importlib.import_module(name)
    except Exception:
        traceback.print_exc()
        raise UsageError(f"importing {module!r} failed (traceback above)") from None
    jobs = [value for value in vars(mod).values() if isinstance(value, Job)]
    if not jobs:
        raise UsageError(f"module {module!r} defines no jobs at its top level; decorate async functions with @job")
    return jobs


def _event_line(event: Event) -> str:
    data = event.to_dict()
    for key in ("type", "timestamp", "sequence", "run_id", "job_name", "labels"):
        data.pop(key, None)
    payload = json.dumps(data, default=str, separators=(",", ":")) if data else ""
    when = iso(event.timestamp)
    return f"{when} {event.type:18} {event.run_id or '-':26} {event.job_name or '-'} {payload}".rstrip()


def _worker(args: argparse.Namespace) -> int:
    jobs = load_jobs(args.module)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = {name: getattr(args, name) for name in OPTIONS if getattr(args, name, None) is not None}
    app = Durably(args.db, jobs=jobs, **options)
    check_timeout(args.stop_timeout, "--stop-timeout", zero=True)
    app.migrate()  # fail fast (newer schema, unreadable file) before announcing readiness
    if not args.quiet:
        app.on("*", lambda event: print(_event_line(event), flush=True))

    def on_signal(name: str) -> None:
        print(
            f"durably: {name} received; finishing the steps in flight (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    print(
        f"durably: worker {app.worker_id} ready: jobs {', '.join(sorted(app.jobs))}; db {_shown(args.db)}; "
        f"concurrency {app.max_concurrent_runs}",
        file=sys.stderr,
        flush=True,
    )
    try:
        asyncio.run(app.serve(on_signal=on_signal, stop_timeout=args.stop_timeout))
    finally:
        app.close()
    print("durably: worker stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
