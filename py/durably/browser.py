"""The browser host: the Python half of the durably Web Worker.

The worker (``worker.js``, ``web/boot.js``) boots SQLite and Pyodide, checks the page's init
message and imports the job modules with :func:`import_job_modules`, creates one
``BrowserHost`` with :func:`make_host` and passes every request from the page to
:meth:`BrowserHost.handle_now` / :meth:`BrowserHost.handle` as ``(method, params_json)``;
the reply is JSON text, ``{"ok": value}`` or ``{"error": {"name", "message", ...}}``, where
``name`` is the Python error's class name (``ValidationError``, ``NotFoundError``, ...).
Every check of a request (method, parameters, size) is made here, once; the worker only
turns the page's params into JSON text. Events are pushed through the ``post_event``
callback as JSON text, for the types the page subscribed to. docs/protocol.md is the
contract; this module implements it, and its ``PROTOCOL_VERSION`` is the one the build
gives the JS side. It calls ``Durably``'s public API only.

The page's names are camelCase (``idempotencyKey``, ``jobName``); records (runs, steps,
logs, events) are the same plain data as ``Run.to_dict()`` on CPython, snake_case.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import logging
import os
import re
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from . import __version__, limits
from .app import Durably
from .clock import iso, parse_iso, system_clock
from .errors import DurablyError, NotFoundError, ValidationError
from .events import EVENT_TYPES, Event
from .jobs import Job
from .jsondata import parse_json
from .limits import MAX_MESSAGE_BYTES, MAX_RETENTION
from .settings import PAGE_NAMES, Settings
from .validation import check_timeout

logger = logging.getLogger("durably")

#: The version of docs/protocol.md. The one source: scripts/build.mjs reads it from here
#: and builds it into the JS (``web/wire.js``).
PROTOCOL_VERSION = 2
# Requests larger than limits.MAX_MESSAGE_BYTES are refused here, and only here: the worker
# sends every request on. (Imported under that name for the tests and the chaos suite.)
__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "BrowserHost",
    "check_import",
    "check_init",
    "hand_back_leases",
    "import_job_modules",
    "make_host",
    "parse_init",
]
#: The tables a durably database has at every schema version; an imported file without
#: them is not one (importDatabase).
REQUIRED_TABLES = ("durably_migrations", "durably_runs", "durably_steps")
#: What the tab stores as the ``error`` of a run that exportDatabase({move: true}) moved.
MOVED_REASON = "moved: exported with exportDatabase({move: true}) at AT; it goes on in the exported copy"
#: What the page's init message may name as a job module.
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")

#: Methods that change runs. Called with a request id (a call forwarded from another tab,
#: which may be sent again to the next leader if this one closes before replying), their
#: reply is recorded in the transaction of the change and a repeat gets it back.
RECORDED_METHODS = frozenset({"trigger", "triggerMany", "retrigger", "cancel", "deleteRun", "purgeRuns", "signal"})
#: How long a recorded reply is kept. A repeat comes within a hand-over (seconds).
REQUEST_TTL = timedelta(hours=1)
_PRUNE_EVERY = 100

# Returned by an immediate variant of a waiting method (BrowserHost._now_methods): "this
# one has to wait", so the request goes on to the async path.
_WAIT = object()


def jobs_in_modules(names: Iterable[str]) -> list[Job]:
    """Import each module and collect the jobs defined at its top level."""
    jobs: list[Job] = []
    for name in names:
        module = importlib.import_module(name)
        found = [v for v in vars(module).values() if isinstance(v, Job)]
        if not found:
            raise ValidationError(
                f"module {name!r} defines no jobs at its top level; decorate async functions with @job"
            )
        jobs.extend(found)
    return jobs


def parse_init(init_json: str, known_modules: Iterable[str]) -> dict[str, Any]:
    """Check the page's init message (``{jobs, options, debug}``, as JSON text) against the
    job modules the site was built with; returns it with its defaults filled in (no ``jobs``:
    every one of ``known_modules``).

    The worker checks the protocol version itself (it is the side that speaks it); the rest
    is checked here. Raises ``ValidationError`` saying what is wrong and what to do."""
    try:
        init = json.loads(init_json)
    except (TypeError, ValueError, RecursionError):  # ValueError: also an integer too long to read
        raise ValidationError("the init message is not JSON data") from None
    if not isinstance(init, dict):
        raise ValidationError(f"the init message must be an object, got {type(init).__name__}")
    known = list(known_modules)
    jobs = init.get("jobs")
    # Not given: every job module the site was built with (manifest.json's jobModules).
    jobs = known if jobs is None else jobs
    if not isinstance(jobs, list) or not all(isinstance(j, str) and _MODULE_NAME.fullmatch(j) for j in jobs):
        raise ValidationError(f"init.jobs must be a list of module names, got {json.dumps(jobs)}")
    options = init.get("options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ValidationError(f"init.options must be an object, got {json.dumps(options)}")
    unknown = [name for name in jobs if name not in known]
    if unknown:
        plural = len(unknown) > 1
        raise ValidationError(
            f"job module{'s' if plural else ''} {', '.join(json.dumps(n) for n in unknown)} "
            f"{'are' if plural else 'is'} not in this site's manifest.json; it has: "
            f"{', '.join(json.dumps(n) for n in known) or 'none'} "
            "(add it to jobs in [tool.durably.site] and build the site again: docs/site.md)"
        )
    return {"jobs": jobs, "options": options, "debug": init.get("debug") is True}


def check_init(init_json: str, known_modules: Iterable[str]) -> str:
    """Check a follower's init message as a leader's boot would, without booting: the job
    modules (:func:`parse_init`) and the options (as ``make_host``). Returns the checked
    init as JSON text; raises ``ValidationError`` with the message a leader's boot gives."""
    init = parse_init(init_json, known_modules)
    Settings.check(**_page_options(init["options"]))
    return json.dumps(init)


def _page_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The page's options by their camelCase names, as ``Durably``'s keywords."""
    kwargs: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in PAGE_NAMES:
            raise ValidationError(f"unknown option {key!r}; the options are: {', '.join(PAGE_NAMES)}")
        kwargs[PAGE_NAMES[key]] = value
    return kwargs


def import_job_modules(names: Iterable[str]) -> str:
    """Import each module, for real; returns JSON text: a list of ``{module, traceback}``
    for the ones that failed (empty when all imported), so the page can show why."""
    failures = []
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:
            failures.append({"module": name, "traceback": traceback.format_exc()})
    return json.dumps(failures)


def check_import(bridge: Any) -> str:
    """Check a database file the page wants to import, opened in the pool as ``bridge``
    (a scratch copy, never the tab's own file): SQLite's ``PRAGMA integrity_check``,
    durably's tables, a schema version this durably knows. An older schema is migrated
    here, on the copy. Closes the bridge. Returns JSON ``{version, runs}``; raises
    ``ValidationError`` (or ``SchemaError``, for a newer durably) saying what is wrong."""
    from .pyodide_driver import PyodideDriver

    driver = PyodideDriver(bridge)
    try:
        try:
            rows, _ = driver.execute("PRAGMA integrity_check")
        except Exception as exc:
            raise ValidationError(f"the file is not a readable SQLite database: {exc}") from None
        # One line: the worker shows the last line of the error.
        problems = [" ".join(str(r[0]).split()) for r in rows]
        if problems != ["ok"]:
            raise ValidationError(
                "the file is damaged (SQLite's integrity check says: " + "; ".join(problems[:3]) + ")"
            )
        rows, _ = driver.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        missing = [t for t in REQUIRED_TABLES if t not in {r[0] for r in rows}]
        if missing:
            raise ValidationError(
                f"the file is an SQLite database but not a durably one: it has no {', '.join(missing)} "
                "table(s). Export a database from durably (exportDatabase, or the file of `durably worker --db`)"
            )
        app = Durably(driver)
        version = app.migrate()  # SchemaError for a newer durably's file, which is left as it was
        # durably's schema has no trigger (once migrated): one in the file would run inside
        # durably's own writes (e.g. delete runs as they are inserted).
        rows, _ = driver.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
        if rows:
            names = ", ".join(f"{name} (on {table})" for name, table in rows[:5])
            raise ValidationError(
                f"the file has trigger(s) durably did not create: {names}; a trigger runs inside durably's own "
                "writes and could change or delete runs. Drop them (DROP TRIGGER name) and export the file again"
            )
        runs = len(app.get_runs(limit=None))
        return json.dumps({"version": version, "runs": runs})
    finally:
        driver.close()


def hand_back_leases(bridge: Any) -> int:
    """In an exported copy (opened as ``bridge``, a scratch file): hand back every lease, so
    a worker that opens the copy resumes those runs at once instead of waiting out the
    tab's leases. Closes the bridge; returns how many leases were handed back."""
    from .pyodide_driver import PyodideDriver

    app = Durably(PyodideDriver(bridge))
    try:
        return app.reclaim_all_leases()
    finally:
        app.close()


def make_host(post_event: Callable[[str], Any], init_json: str) -> BrowserHost:
    """The worker's ``BrowserHost``, for an init message (JSON text) that
    :func:`parse_init` accepted."""
    init = json.loads(init_json)
    return BrowserHost(
        post_event=post_event,
        job_modules=init["jobs"],
        options=init["options"],
        debug=init["debug"],
    )


class BrowserHost:
    """Owns the ``Durably`` instance of the worker and answers the page's requests."""

    def __init__(
        self,
        *,
        post_event: Callable[[str], Any],
        job_modules: Iterable[str] = (),
        jobs: Iterable[Job] = (),
        options: dict[str, Any] | None = None,
        driver: Any = None,
        debug: bool = False,
    ) -> None:
        if driver is None:
            from .pyodide_driver import PyodideDriver

            driver = PyodideDriver()
        kwargs = _page_options(options)
        all_jobs = [*jobs, *jobs_in_modules(job_modules)]
        # Kept for swap_database(), which opens the imported file with the same jobs and options.
        self._app_args: dict[str, Any] = {
            "jobs": all_jobs,
            "worker_id": f"browser:{os.urandom(4).hex()}",
            "worker_host": ("browser", None),
            **kwargs,
        }
        self.app = Durably(driver, **self._app_args)
        self._post_event = post_event
        # The types each subscriber asked for: None is this worker's own page, a string
        # another tab whose calls the worker forwards here.
        self._subs: dict[str | None, set[str]] = {}
        # Subscribed type (of any subscriber) -> its unsubscribe. Only subscribed types have
        # a listener, so an event nobody wants is never even built (the bus skips unheard
        # types); each is posted once, and the worker passes it to the tabs that want it.
        self._types: dict[str, Callable[[], None]] = {}
        self._recorded_count = 0
        self.debug = debug
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": self._ping,
            "jobs": self._jobs,
            "trigger": self._trigger,
            "triggerMany": self._trigger_many,
            "getRun": self._get_run,
            "getRuns": self._get_runs,
            "getSteps": self._get_steps,
            "getLogs": self._get_logs,
            "getStatus": self._get_status,
            "cancel": self._cancel,
            "retrigger": self._retrigger,
            "deleteRun": self._delete_run,
            "signal": self._signal,
            "purgeRuns": self._purge_runs,
            "waitForRun": self._wait_for_run,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
        }
        # Methods that wait, with an immediate answer when there is nothing to wait for
        # (a run that has already finished); _WAIT sends the request on to handle().
        self._now_methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "waitForRun": self._wait_for_run_now,
        }
        if debug:
            self._methods["evalPython"] = self._eval_python
            self._methods["sql"] = self._sql

    async def start(self) -> dict[str, Any]:
        """Create or upgrade the schema, hand back the leases a closed tab left behind, and
        start the worker loop. Returns what the page shows once ready."""
        app = self.app
        app.migrate()
        # This worker holds the database's Web Lock: every lease, and every other worker
        # recorded, is a closed tab's.
        reclaimed = app.reclaim_all_leases()
        app.forget_answers(REQUEST_TTL)
        await app.start()
        return {"reclaimed": reclaimed, "jobs": sorted(app.jobs), "worker_id": app.worker_id}

    async def stop(self, timeout: float | None = 0) -> None:
        await self.app.stop(timeout)

    # -- import and export (web/leader.js) ----------------------------------------------------

    def leased_runs(self) -> int:
        """How many runs are in progress here (leased): importDatabase refuses to replace
        them unless told to."""
        return len(self.app.get_runs(status="leased", limit=None))

    def move_unfinished(self) -> int:
        """exportDatabase({move: true}), once the copy is taken: every unfinished run
        (pending, leased, waiting) is cancelled here with ``MOVED_REASON`` as its error, so
        this tab never finishes a run the copy will. Returns how many. The runtime is stopped."""
        at = iso(system_clock())
        moved = 0
        for run in self.app.get_runs(status=["pending", "leased", "waiting"], limit=None):
            self.app.cancel(run.id, reason=MOVED_REASON.replace("AT", at))
            moved += 1
        return moved

    async def swap_database(self, bridge: Any) -> dict[str, Any]:
        """Use another database (an imported file, opened as ``bridge``): the old one is
        closed (the runtime must be stopped), a new ``Durably`` with the same jobs and options
        opens this one, the subscriptions carry over, and start() migrates, hands back
        leases and starts the runtime."""
        from .pyodide_driver import PyodideDriver

        for unsubscribe in self._types.values():
            unsubscribe()
        self._types = {}
        self.app.close()
        self.app = Durably(PyodideDriver(bridge), **self._app_args)
        self._sync_listeners()
        return await self.start()

    # -- requests ----------------------------------------------------------------------------

    async def handle(self, method: Any, params_json: Any, tab: str | None = None, request: str | None = None) -> str:
        """Answer one request; never raises. Returns the reply as JSON text.

        ``tab``: the tab the call comes from, when the worker forwards it from another tab
        (None: this worker's own page); subscriptions are kept per tab. ``request``: the
        call's request id, given with forwarded calls; a method of ``RECORDED_METHODS``
        called again with the same id returns the first call's reply and changes nothing."""
        try:
            if request is not None and isinstance(method, str) and method in RECORDED_METHODS:
                return self._recorded(method, params_json, tab, request)
            result = self._dispatch(method, params_json, tab)
            if inspect.isawaitable(result):
                result = await result
            return _dumps({"ok": result})
        except Exception as exc:
            return self._error_reply(method, exc)

    def handle_now(
        self, method: Any, params_json: Any, tab: str | None = None, request: str | None = None
    ) -> str | None:
        """Answer a request within this call if it needs no waiting (every method but
        ``evalPython``, and ``waitForRun`` of an unfinished run); never raises. Returns the
        reply as JSON text, or None when the caller must send the request to ``handle``.
        ``tab`` and ``request`` as for :meth:`handle`.

        The worker calls this first: an async call from JS costs two or three turns of
        Pyodide's event loop (~0.15 ms each), and a trigger's reply would otherwise wait
        behind the run it just woke the worker loop for."""
        now = self._now_methods.get(method) if isinstance(method, str) else None
        if now is None and isinstance(method, str) and inspect.iscoroutinefunction(self._methods.get(method)):
            return None
        try:
            if request is not None and isinstance(method, str) and method in RECORDED_METHODS:
                return self._recorded(method, params_json, tab, request)
            if now is not None:
                result = now(self._parse(params_json))
                if result is _WAIT:
                    return None
            else:
                result = self._dispatch(method, params_json, tab)
            return _dumps({"ok": result})
        except Exception as exc:
            return self._error_reply(method, exc)

    def _recorded(self, method: str, params_json: Any, tab: str | None, request: Any) -> str:
        """Run a call that changes runs at most once per request id: the reply is recorded
        in the transaction of the change, so either both are committed or neither is."""
        if not isinstance(request, str) or not 0 < len(request) <= 200:
            raise ValidationError(f"a request id must be text of 1 to 200 characters, got {_describe(request)}")
        reply = self.app.answer_once(request, method, lambda: _dumps({"ok": self._dispatch(method, params_json, tab)}))
        self._recorded_count += 1
        if self._recorded_count % _PRUNE_EVERY == 0:
            self.app.forget_answers(REQUEST_TTL)
        return reply

    def forget_tab(self, tab: str) -> None:
        """Drop the subscriptions of a tab that has gone (closed, or its worker died)."""
        self._subs.pop(tab, None)
        self._sync_listeners()

    def _dispatch(self, method: Any, params_json: Any, tab: str | None = None) -> Any:
        if not isinstance(method, str):
            raise ValidationError(f"a call needs a method name (text), got {_describe(method)}")
        if method not in self._methods:
            raise NotFoundError(f"unknown method {method!r}; the methods are: {', '.join(sorted(self._methods))}")
        params = self._parse(params_json)
        # Subscriptions are kept per tab: the two methods that change them are told whose.
        if method == "subscribe":
            return self._subscribe(params, tab)
        if method == "unsubscribe":
            return self._unsubscribe(params, tab)
        return self._methods[method](params)

    @staticmethod
    def _error_reply(method: Any, exc: Exception) -> str:
        if isinstance(exc, DurablyError):
            return _dumps({"error": exc.to_dict()})
        if isinstance(exc, TimeoutError):
            return _dumps({"error": {"name": "TimeoutError", "message": str(exc)}})
        # A bug: say so, with the traceback, and keep serving.
        logger.error("durably: request %r failed", method, exc_info=exc)
        return _dumps(
            {
                "error": {
                    "name": type(exc).__name__,
                    "message": str(exc),
                    "traceback": "".join(traceback.format_exception(exc)),
                }
            }
        )

    @staticmethod
    def _parse(params_json: Any) -> dict[str, Any]:
        if params_json is None or params_json == "":
            return {}
        if not isinstance(params_json, str):
            raise ValidationError("params must arrive as JSON text")
        # A character is at most 4 bytes of UTF-8: only a long request is encoded to count.
        if len(params_json) * 4 > MAX_MESSAGE_BYTES:
            size = len(params_json.encode("utf-8", "surrogatepass"))
            if size > MAX_MESSAGE_BYTES:
                raise ValidationError(
                    f"the request is {size:,} bytes as UTF-8; the limit is {MAX_MESSAGE_BYTES:,} "
                    "(durably.limits.MAX_MESSAGE_BYTES). Keep job inputs small: store large data "
                    "elsewhere and pass a reference"
                )
        params = parse_json(params_json, "the params")
        if not isinstance(params, dict):
            raise ValidationError(f"params must be an object, got {type(params).__name__}")
        return params

    # -- methods -----------------------------------------------------------------------------

    def _ping(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "ping")
        import sys

        return {
            "protocol": PROTOCOL_VERSION,
            "durably": __version__,
            "python": sys.version.split()[0],
            "driver": getattr(self.app.driver, "name", "?"),
            "worker_id": self.app.worker_id,
            "limits": limits.as_dict(),
        }

    def _jobs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        _only(params, "jobs")
        out = []
        for name, definition in sorted(self.app.jobs.items()):
            doc = inspect.getdoc(definition.fn) or ""
            out.append({"name": name, "doc": doc})
        return out

    def _trigger(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "trigger", "job", "input", "idempotencyKey", "concurrencyKey", "coalesce", "labels")
        run = self.app.trigger(
            _required(params, "job", "trigger"),
            params.get("input"),
            idempotency_key=params.get("idempotencyKey"),
            concurrency_key=params.get("concurrencyKey"),
            coalesce=params.get("coalesce"),
            labels=params.get("labels"),
        )
        return run.to_dict()

    def _trigger_many(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        _only(params, "triggerMany", "job", "inputs", "labels")
        runs = self.app.trigger_many(
            _required(params, "job", "triggerMany"),
            _required(params, "inputs", "triggerMany"),
            labels=params.get("labels"),
        )
        return [run.to_dict() for run in runs]

    def _get_run(self, params: dict[str, Any]) -> dict[str, Any] | None:
        _only(params, "getRun", "id")
        run = self.app.get_run(_required(params, "id", "getRun"))
        return run.to_dict() if run else None

    def _get_runs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        _only(params, "getRuns", "status", "jobName", "labels", "limit", "offset")
        runs = self.app.get_runs(
            status=params.get("status"),
            job_name=params.get("jobName"),
            labels=params.get("labels"),
            limit=params.get("limit"),
            offset=params.get("offset", 0),
        )
        return [run.to_dict() for run in runs]

    def _get_steps(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        _only(params, "getSteps", "id")
        return [s.to_dict() for s in self.app.get_steps(_required(params, "id", "getSteps"))]

    def _get_logs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        _only(params, "getLogs", "id", "afterId", "limit", "last")
        logs = self.app.get_logs(
            _required(params, "id", "getLogs"),
            after_id=params.get("afterId"),
            limit=params.get("limit"),
            last=params.get("last"),
        )
        return [log.to_dict() for log in logs]

    def _get_status(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "getStatus")
        return self.app.status().to_dict()

    def _cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "cancel", "id")
        return self.app.cancel(_required(params, "id", "cancel")).to_dict()

    def _retrigger(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "retrigger", "id")
        return self.app.retrigger(_required(params, "id", "retrigger")).to_dict()

    def _delete_run(self, params: dict[str, Any]) -> None:
        _only(params, "deleteRun", "id")
        self.app.delete_run(_required(params, "id", "deleteRun"))

    def _signal(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "signal", "id", "name", "payload", "signalId")
        record = self.app.signal(
            _required(params, "id", "signal"),
            _required(params, "name", "signal"),
            params.get("payload"),
            signal_id=params.get("signalId"),
        )
        return record.to_dict()

    def _purge_runs(self, params: dict[str, Any]) -> int:
        _only(params, "purgeRuns", "olderThan", "limit")
        older = _required(params, "olderThan", "purgeRuns")
        if isinstance(older, (int, float)) and not isinstance(older, bool):
            if not 0 <= older <= MAX_RETENTION:  # also refuses NaN and infinities
                raise ValidationError(
                    f"olderThan must be an age from 0 to {MAX_RETENTION:,.0f} seconds "
                    f"(durably.limits.MAX_RETENTION) or an ISO-8601 date, got {older!r}"
                )
            cutoff: Any = timedelta(seconds=older)
        elif isinstance(older, str):
            try:
                cutoff = parse_iso(older)  # without a zone it is UTC, like a stored timestamp
            except (ValueError, OverflowError):
                raise ValidationError(
                    f"olderThan must be an age in seconds or an ISO-8601 date, got {older!r}"
                ) from None
        else:
            raise ValidationError(f"olderThan must be an age in seconds or an ISO-8601 date, got {older!r}")
        return self.app.purge_runs(cutoff, limit=params.get("limit", 500))

    def _wait_for_run_now(self, params: dict[str, Any]) -> Any:
        _only(params, "waitForRun", "id", "timeout")
        check_timeout(params.get("timeout"))
        run = self.app.poll_run(_required(params, "id", "waitForRun"))
        return run.to_dict() if run is not None else _WAIT

    async def _wait_for_run(self, params: dict[str, Any]) -> dict[str, Any]:
        _only(params, "waitForRun", "id", "timeout")
        run = await self.app.wait_for_run(_required(params, "id", "waitForRun"), timeout=params.get("timeout"))
        return run.to_dict()

    def _subscribe(self, params: dict[str, Any], tab: str | None = None) -> list[str]:
        _only(params, "subscribe", "types")
        types = _types(_required(params, "types", "subscribe"))
        mine = self._subs.setdefault(tab, set())
        mine.update(types)
        self._sync_listeners()
        return sorted(mine)

    def _unsubscribe(self, params: dict[str, Any], tab: str | None = None) -> list[str]:
        _only(params, "unsubscribe", "types")
        types = _types(_required(params, "types", "unsubscribe"))
        mine = self._subs.get(tab, set())
        mine.difference_update(types)
        if not mine:
            self._subs.pop(tab, None)
        self._sync_listeners()
        return sorted(mine)

    def _sync_listeners(self) -> None:
        """One bus listener per type some subscriber wants, and none for the others."""
        wanted = set().union(*self._subs.values())
        for t in [t for t in self._types if t not in wanted]:
            self._types.pop(t)()
        for t in wanted:
            if t not in self._types:
                self._types[t] = self.app.on(t, self._forward if t == "*" else self._forward_typed)

    async def _eval_python(self, params: dict[str, Any]) -> Any:
        """Debug builds only (``connect({debug: true})``): run Python in the worker, for the
        browser tests. The value of the last expression, if JSON data, is returned."""
        _only(params, "evalPython", "code")
        code = _required(params, "code", "evalPython")
        namespace: dict[str, Any] = {"host": self, "app": self.app}
        tree = ast.parse(code, mode="exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        result = eval(compile(tree, "<evalPython>", "exec", flags=flags), namespace)
        if inspect.isawaitable(result):
            await result
        if last is None:
            return None
        value = eval(compile(last, "<evalPython>", "eval", flags=flags), namespace)
        if inspect.isawaitable(value):
            value = await value
        return value

    def _sql(self, params: dict[str, Any]) -> dict[str, Any]:
        """Debug builds only: run one statement through the app's own driver (the browser
        tests' window into the database). BLOBs come back as ``{"$bytes": "<hex>"}``."""
        _only(params, "sql", "sql", "params")
        statement = _required(params, "sql", "sql")
        values = params.get("params") or []
        if not isinstance(statement, str) or not isinstance(values, list):
            raise ValidationError("sql: 'sql' must be text and 'params' a list")
        rows, changes = self.app.driver.execute(statement, values)
        return {"rows": [[_plain(v) if isinstance(v, bytes) else v for v in row] for row in rows], "changes": changes}

    # -- events ------------------------------------------------------------------------------

    def _forward(self, event: Event) -> None:
        self._post_event(_dumps(event.to_dict()))

    def _forward_typed(self, event: Event) -> None:
        if "*" not in self._types:  # else the "*" listener sends it: once is enough
            self._forward(event)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    return str(value)


# One encoder for every reply and event: json.dumps with options builds a new one per call.
_dumps = json.JSONEncoder(default=_plain, allow_nan=False).encode


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _only(params: dict[str, Any], method: str, *allowed: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValidationError(
            f"{method}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(allowed) or 'nothing'}"
        )


def _required(params: dict[str, Any], key: str, method: str) -> Any:
    if key not in params or params[key] is None:
        raise ValidationError(f"{method}: the parameter {key!r} is required")
    return params[key]


def _types(value: Any) -> list[str]:
    types = [value] if isinstance(value, str) else value
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise ValidationError("types must be an event type, '*', or a list of them")
    for t in types:
        if t != "*" and t not in EVENT_TYPES:
            raise ValidationError(f"unknown event type {t!r}; use '*' or one of: {', '.join(sorted(EVENT_TYPES))}")
    return types
