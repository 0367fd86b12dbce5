"""The PostgreSQL driver: psycopg 3 behind the same ``execute(sql, params)`` seam.

Install it with the optional extra: ``pip install 'durably[postgres]'``. This module imports
without psycopg (the browser's build ships it and never imports psycopg); psycopg is
imported when a driver is created.

Connections. One connection per driver, in autocommit mode: the store serialises its calls
with one lock and sends its own ``BEGIN``/``COMMIT``, so a pool would only hold connections
nobody uses at the same time. The connection turns bitmap scans off (``enable_bitmapscan``):
durably's statements are written for ordered index scans, as on SQLite (see ``_connect``).
``listen()`` opens one more connection, on a thread of its own, for ``LISTEN``. A worker
process therefore holds two connections, a process that only triggers or reads holds one.

Reconnecting. When the server goes away (restart, failover, a cut network), the statement
in flight fails with ``StorageError`` (``code`` ``"08006"``, or the server's own code such
as ``"57P01"``): its outcome is unknown only if it was a ``COMMIT`` or a lone write. The
driver never re-sends it. The next ``execute`` opens a new connection, except inside a
transaction that the lost connection held: those statements are refused (the server
rolled the transaction back) until the caller sends ``ROLLBACK``, which the driver answers
itself, so a transaction is never continued on a connection that did not start it. A
connection that was idle when the server closed it (outside a transaction, the server's
goodbye or end of stream waiting unread on its socket) is replaced before the next
statement is sent, so a process that was idle through a restart sees no error at all.

Parameters. The store writes ``?`` placeholders (SQLite's style); this driver turns each
``?`` outside quotes and comments into psycopg's ``%s`` and doubles every ``%`` (psycopg
reads ``%`` everywhere, even inside string literals). Statements sent to PostgreSQL must
therefore not use the ``jsonb`` operators ``?``, ``?|`` and ``?&`` (use ``jsonb_exists``).

Errors. Every failure is a :class:`durably.errors.StorageError` whose ``code`` is the
five-character SQLSTATE (``"23505"`` unique violation, ``"40001"`` serialization failure,
...). Failures to connect get one too (PostgreSQL sends none before a session exists, so it
is read from the message): ``"28P01"`` wrong password, ``"28000"`` unknown role or no
``pg_hba.conf`` entry, ``"3D000"`` missing database, ``"08001"`` server unreachable, and
``"0A000"`` for a server older than :data:`MIN_SERVER_VERSION`. A malformed URL is a
:class:`durably.errors.ValidationError`. :func:`is_transient` says which codes may succeed
if tried again.
"""

from __future__ import annotations

import logging
import re
import select
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import StorageError, ValidationError

__all__ = [
    "MIN_SERVER_VERSION",
    "PostgresDriver",
    "Listener",
    "describe_url",
    "is_postgres_url",
    "is_transient",
    "translate_placeholders",
]

logger = logging.getLogger("durably")

#: The oldest PostgreSQL major version durably accepts. The SQL needs 11 (SKIP LOCKED,
#: identity columns, ON CONFLICT, hashtextextended); 13 is the oldest major still shipped by
#: the long-term distributions (Debian 11, RHEL 9). CI tests against Debian 12's 15.
MIN_SERVER_VERSION = 13

# SQLSTATEs the store and the runtime act on.
UNIQUE_VIOLATION = "23505"
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
LOCK_NOT_AVAILABLE = "55P03"
CONNECTION_LOST = "08006"  # connection_failure: the server went away mid-session
CANNOT_CONNECT = "08001"  # sqlclient_unable_to_establish_sqlconnection
AUTH_FAILED = "28P01"  # invalid_password
AUTH_REJECTED = "28000"  # invalid_authorization_specification: unknown role, pg_hba.conf
MISSING_DATABASE = "3D000"  # invalid_catalog_name
SERVER_TOO_OLD = "0A000"  # feature_not_supported
BAD_TEXT = "22021"  # character_not_in_repertoire: NUL or a lone surrogate in text
NO_SCHEMA = "3F000"  # invalid_schema_name: no schema of search_path exists to create in
DUPLICATE_TABLE = "42P07"  # duplicate_table
READ_ONLY = "25006"  # read_only_sql_transaction: a standby, or default_transaction_read_only

# What to do, added to the server's message for the failures a user causes by configuration.
_HINTS = {
    NO_SCHEMA: (
        "no schema named by the connection's search_path exists at {where}: create it "
        "(CREATE SCHEMA name) or name an existing one in the URL: ?options=-csearch_path%3Dname"
    ),
    READ_ONLY: (
        "the server at {where} takes no writes for this session: a standby (a read replica), or "
        "default_transaction_read_only set for the database or role; point durably at the primary"
    ),
    DUPLICATE_TABLE: (
        "the schema durably creates its tables in already holds a table of that name, and durably "
        "has no record of creating it (another application's?); give durably a schema of its own: "
        "CREATE SCHEMA durably, then ?options=-csearch_path%3Ddurably in the URL"
    ),
}

# Worth trying again later: the connection went away (admin_shutdown, crash_shutdown,
# cannot_connect_now, idle-in-transaction timeout, the 08 class) or the server chose this
# transaction as the loser of a conflict (serialization failure, deadlock, lock timeout).
_TRANSIENT = frozenset(
    {
        SERIALIZATION_FAILURE,
        DEADLOCK_DETECTED,
        LOCK_NOT_AVAILABLE,
        "57P01",
        "57P02",
        "57P03",
        "25P03",
        "08000",
        "08003",
        "08006",
        "08001",
        "08004",
    }
)

_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (what ``Durably(db)`` routes here)."""
    return isinstance(db, str) and db.lower().startswith(_SCHEMES)


def is_transient(exc: BaseException) -> bool:
    """True when the failure may go away by itself: connection lost or refused, the server
    restarting, a serialization failure or deadlock (the transaction was rolled back)."""
    return isinstance(exc, StorageError) and exc.code in _TRANSIENT


def _error(message: str, code: str | None) -> StorageError:
    """A ``StorageError`` with its SQLSTATE, marked ``transient`` as :func:`is_transient` says."""
    return StorageError(message, code=code, transient=code in _TRANSIENT)


# -- placeholders -----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<str>'(?:[^']|'')*'?)                 # '...' with '' inside (E'' escapes: none used)
    | (?P<ident>"(?:[^"]|"")*"?)               # "quoted identifier"
    | (?P<line>--[^\n]*)                       # -- comment
    | (?P<block>/\*.*?(?:\*/|\Z))              # /* comment */ (not nested)
    | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*|)\$.*?(?:\$(?P=tag)\$|\Z))  # $tag$...$tag$
    | (?P<q>\?)
    | (?P<pct>%)
    """,
    re.VERBOSE | re.DOTALL,
)


def translate_placeholders(sql: str) -> str:
    """``?`` -> ``%s`` outside string literals, quoted identifiers, comments and dollar
    quotes; every ``%`` -> ``%%`` (psycopg treats ``%`` as special everywhere)."""

    def sub(m: re.Match[str]) -> str:
        if m.group("q"):
            return "%s"
        if m.group("pct"):
            return "%%"
        return m.group(0).replace("%", "%%")

    return _TOKEN.sub(sub, sql)


# -- connect-time errors ------------------------------------------------------------------------

# PostgreSQL sends no SQLSTATE that libpq keeps for a failed connection, so the code is read
# from the message (the server's part is in the server's language: English by default).
_CONNECT_PATTERNS = [
    (
        re.compile(r"password authentication failed|authentication failed|no password supplied", re.I),
        AUTH_FAILED,
        "the user name or password is wrong",
    ),
    (
        re.compile(r'database "[^"]*" does not exist', re.I),
        MISSING_DATABASE,
        "create the database first (createdb, or CREATE DATABASE as an admin)",
    ),
    (
        re.compile(r'role "[^"]*" does not exist|no pg_hba\.conf entry', re.I),
        AUTH_REJECTED,
        "the server does not accept this user from here (its role or pg_hba.conf)",
    ),
    (
        re.compile(r"the database system is (starting up|shutting down|in recovery mode)", re.I),
        "57P03",
        "the server is restarting; try again in a moment",
    ),
    (
        re.compile(
            r"connection refused|could not translate host name|failed to resolve host|"
            r"timeout expired|could not connect|no route to host|network is unreachable|"
            r"server closed the connection",
            re.I,
        ),
        CANNOT_CONNECT,
        "is the server running, and are the host and port right?",
    ),
]


# libpq's own refusal of a parameter's value (sslmode=bogus, keepalives=x): bad input, found
# only when connecting since the URL's reader checks names, not values.
_BAD_VALUE = re.compile(r"invalid [\w ]+ value|invalid integer value", re.I)


def _connect_error(exc: Exception, where: str, url: str = "") -> StorageError | ValidationError:
    text = _scrub(" ".join(str(exc).split()), url)
    if _BAD_VALUE.search(text):
        return ValidationError(
            f"not a valid PostgreSQL URL ({where}): {text}; fix that parameter in the query string "
            "(the form is postgresql://USER:PASSWORD@HOST:PORT/DBNAME[?sslmode=require&...])"
        )
    for pattern, code, hint in _CONNECT_PATTERNS:
        if pattern.search(text):
            return _error(f"cannot connect to PostgreSQL at {where}: {text} ({hint})", code)
    return _error(f"cannot connect to PostgreSQL at {where}: {text}", CANNOT_CONNECT)


def _userinfo(url: str) -> str:
    """The ``USER:PASSWORD`` part of a URL, found as libpq or a careless user may write it:
    up to the last ``@`` before the query string, or, when the password holds a ``?`` or
    ``#``, up to the first ``@`` after it. Empty when there is none."""
    rest = url.split("://", 1)[1] if "://" in url else url
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    if "@" in head:
        return head[: head.rfind("@")]
    if "@" in rest and "/" not in head:
        return rest[: rest.find("@")]
    return ""


def _passwords(url: str) -> list[str]:
    """Every spelling of the URL's password(s) that an error message could echo."""
    found = []
    user, sep, password = _userinfo(url).partition(":")
    if sep and password:
        found.append(password)
    found += [p for p in re.findall(r"[?&]password=([^&#]*)", url) if p]
    out = set()
    for secret in found:
        out.add(secret)
        out.add(unquote(secret))
        out.update(piece for piece in re.split(r"[@/?#:&]", secret) if len(piece) >= 2)
    return sorted((s for s in out if s), key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    """``text`` with every spelling of ``url``'s password replaced by ``***``."""
    for secret in _passwords(url):
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
    return text


def describe_url(url: str) -> str:
    """``user@host:port/dbname`` for messages: never the password. Several hosts (libpq's
    ``host1:port1,host2:port2``) are listed, an IPv6 host is bracketed, a Unix-socket
    folder is shown as a path."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
    except Exception:  # no psycopg, or a URL it cannot read
        params = None
    if params is not None:
        hosts = str(params.get("host") or "localhost").split(",")
        ports = str(params.get("port") or "").split(",")
        ports = ports * len(hosts) if len(ports) == 1 else (ports + [""] * len(hosts))[: len(hosts)]
        where = ",".join(
            (f"[{h}]" if ":" in h else h) + (f":{p}" if p else "") for h, p in zip(hosts, ports, strict=True)
        )
        user = f"{params['user']}@" if params.get("user") else ""
        return f"{user}{where}/{params.get('dbname') or ''}"
    try:
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"{user}{host}{port}{parts.path or '/'}"
    except ValueError:
        return "the given URL"


# What libpq sends in the start-up message, which the server refuses past 10,000 bytes
# (closing the connection with no reason given). Room is left for the names and the rest.
_STARTUP_PARAMETERS = ("user", "dbname", "options", "application_name")
MAX_STARTUP_BYTES = 9000


def _check_url(url: str) -> dict[str, Any]:
    if not isinstance(url, str) or not is_postgres_url(url):
        raise ValidationError(
            f"a PostgreSQL database is given as a URL: postgresql://USER:PASSWORD@HOST:PORT/DBNAME, got {url!r}"
        )
    from psycopg.conninfo import conninfo_to_dict

    user, sep, password = _userinfo(url).partition(":")
    bad = sorted(
        {c for c in password if c in "@/?#"} | ({"%"} if re.search(r"%(?![0-9A-Fa-f]{2})", password) else set())
    )
    if sep and bad:
        codes = ", ".join(f"{c} as %{ord(c):02X}" for c in bad)
        raise ValidationError(
            f"the password in the PostgreSQL URL holds {' '.join(bad)}, which a URL must percent-encode "
            f"({codes}); the form is postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
        )
    try:
        params = conninfo_to_dict(url)
        for port in str(params.get("port") or "").split(","):  # libpq lists one per host
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"the port {port!r} is not a number from 1 to 65535")
        startup = sum(len(str(params.get(k) or "").encode()) for k in _STARTUP_PARAMETERS)
        if startup > MAX_STARTUP_BYTES:
            raise ValueError(
                f"its {', '.join(_STARTUP_PARAMETERS)} come to {startup:,} bytes; PostgreSQL closes a "
                f"connection whose start-up message passes 10,000 bytes, so keep them under {MAX_STARTUP_BYTES:,}"
            )
    except Exception as exc:  # psycopg.ProgrammingError, ValueError
        raise ValidationError(
            f"not a valid PostgreSQL URL ({describe_url(url)}): {_scrub(' '.join(str(exc).split()), url)}; "
            "the form is postgresql://USER:PASSWORD@HOST:PORT/DBNAME[?sslmode=require&...]"
        ) from None
    return params


# -- the driver -----------------------------------------------------------------------------------


class PostgresDriver:
    """A driver over one psycopg 3 connection (autocommit; the store sends BEGIN/COMMIT).

    ``url``: ``postgresql://USER:PASSWORD@HOST:PORT/DBNAME`` with any libpq parameters in
    the query string (``sslmode=require``, ``options=-csearch_path%3Dmyschema``, ...).
    ``idle_in_transaction_timeout``: seconds after which the server ends a session that
    sits inside a transaction (a frozen or killed client), releasing its row locks; 0 keeps
    the server's setting. ``prepare=False`` turns off server-side prepared statements
    (needed behind PgBouncer in transaction mode). ``notify=False``: no wake-ups, workers
    find other processes' runs by polling alone (for comparisons, or where ``LISTEN`` cannot
    reach the server, as behind PgBouncer in transaction mode).

    Example::

        driver = PostgresDriver("postgresql://app:secret@db.internal:5432/jobs")
        rows, changes = driver.execute("SELECT count(*) FROM durably_runs WHERE status = ?", ("pending",))
    """

    name = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        idle_in_transaction_timeout: float = 10.0,
        application_name: str = "durably",
        prepare: bool = True,
        min_server_version: int = MIN_SERVER_VERSION,
        notify: bool = True,
    ) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StorageError(
                "PostgreSQL needs psycopg 3, which is not installed: pip install 'durably[postgres]'"
            ) from exc
        self._psycopg = psycopg
        params = _check_url(url)
        for label, value in (
            ("connect_timeout", connect_timeout),
            ("idle_in_transaction_timeout", idle_in_transaction_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 86400:
                raise ValidationError(f"{label} must be a number of seconds from 0 to 86400, got {value!r}")
        self.url = url
        self.where = describe_url(url)
        # UTF-8 whatever the server's default for the database or role (a client_encoding of
        # LATIN1 there would refuse, or fail to read back, any text outside it).
        self._connect_kwargs: dict[str, Any] = {"autocommit": True, "client_encoding": "UTF8"}
        if connect_timeout:
            self._connect_kwargs["connect_timeout"] = max(1, round(connect_timeout))
        if "application_name" not in params:
            self._connect_kwargs["application_name"] = application_name
        if not prepare:
            self._connect_kwargs["prepare_threshold"] = None
        self._idle_ms = int(idle_in_transaction_timeout * 1000)
        #: Whether the store sends and listens for wake-ups (``NOTIFY``); False leaves the
        #: workers to polling alone (``durably.dialect.for_driver``).
        self.notify = bool(notify)
        self._min_version = min_server_version
        self._lock = threading.RLock()
        self._conn: Any = None
        self._cur: Any = None
        self._lost_in_transaction = False
        self._closed = False
        self._sql: dict[str, str] = {}
        #: The server's major version (e.g. 15), known once connected.
        self.server_version: int | None = None
        self._connect()

    # -- connecting ---------------------------------------------------------------------------

    def _connect(self) -> None:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self.url, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise _connect_error(exc, self.where, self.url) from None
        try:
            version = conn.info.server_version // 10000
            if version < self._min_version:
                raise StorageError(
                    f"the PostgreSQL server at {self.where} is version {version}; durably needs "
                    f"{self._min_version} or newer. Upgrade the server (or point durably at a newer one).",
                    code=SERVER_TOO_OLD,
                )
            if self._idle_ms:
                conn.execute(f"SET idle_in_transaction_session_timeout = {self._idle_ms}")
            # durably's statements are written for ordered index scans (SQLite has nothing
            # else): the claim walks (status, id) in order and stops at the first row it may
            # take, marking the dead entries it passes so later claims skip them. On a table
            # without statistics yet (a new database, before autovacuum's first ANALYZE) the
            # planner picks a bitmap scan instead, which visits and sorts every entry of the
            # status, dead ones included, at every claim: O(runs claimed since the last vacuum).
            conn.execute("SET enable_bitmapscan = off")
        except psycopg.Error as exc:  # the new session ended at once (terminated, a restart)
            conn.close()
            text = _scrub(" ".join(str(exc).split()), self.url)
            raise _error(
                f"the connection to PostgreSQL at {self.where} was lost as it opened ({text}); "
                "the next call reconnects",
                getattr(exc, "sqlstate", None) or CONNECTION_LOST,
            ) from None
        except BaseException:
            conn.close()
            raise
        self.server_version = version
        self._conn = conn
        self._cur = conn.cursor()

    def _drop_connection(self) -> None:
        conn, self._conn, self._cur = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing a broken connection
                pass

    # -- the seam ---------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[tuple[Any, ...]], int]:
        """Run one statement; return ``(rows, changes)``. ``changes`` counts the rows an
        ``INSERT``/``UPDATE``/``DELETE`` wrote (0 for anything else, including a ``SELECT``
        over a data-modifying ``WITH``). Raise ``StorageError`` on failure."""
        with self._lock:
            if self._closed:
                raise _error("the PostgreSQL connection is closed", "08003")
            if self._lost_in_transaction:
                if _is_rollback(sql):
                    self._lost_in_transaction = False
                    return [], 0
                raise _error(
                    f"the connection to PostgreSQL at {self.where} was lost inside a transaction, "
                    "which the server rolled back; roll back and start again",
                    CONNECTION_LOST,
                )
            if self._conn is None:
                self._connect()
            query = self._sql.get(sql)
            if query is None:
                query = translate_placeholders(sql) if ("?" in sql or "%" in sql) else sql
                if len(self._sql) >= 512:
                    self._sql.clear()
                self._sql[sql] = query
            in_transaction = self._conn.info.transaction_status != 0  # 0: IDLE
            if not in_transaction and self._closed_while_idle():
                self._drop_connection()
                self._connect()
            cur = self._cur
            try:
                cur.execute(query, params)
                rows = cur.fetchall() if cur.description is not None else []
                status = cur.statusmessage or ""
            except self._psycopg.Error as exc:
                raise self._failed(exc, in_transaction, sql) from exc
            except (UnicodeError, OverflowError) as exc:  # a value psycopg cannot send
                raise StorageError(f"cannot store a value: {exc}", code=BAD_TEXT) from exc
            changes = cur.rowcount if status.startswith(("INSERT", "UPDATE", "DELETE", "MERGE")) else 0
            return rows, max(changes, 0)

    def _closed_while_idle(self) -> bool:
        """Did the server close this idle connection (a restart, an idle timeout)? Nothing
        is owed on an idle connection of the driver (it never listens on it), so anything
        readable is the server's goodbye (``57P01``) or the end of the stream. A select()
        per statement: about a microsecond."""
        try:
            readable, _, _ = select.select([self._conn.pgconn.socket], [], [], 0)
        except Exception:  # the socket is gone
            return True
        return bool(readable)

    def _failed(self, exc: Exception, in_transaction: bool, sql: str = "") -> StorageError:
        conn = self._conn
        code = getattr(exc, "sqlstate", None)
        text = " ".join(str(exc).split())
        if conn is None or conn.closed or conn.broken:
            self._drop_connection()
            self._lost_in_transaction = in_transaction
            return _error(
                f"the connection to PostgreSQL at {self.where} was lost ({text}); the next call reconnects",
                code or CONNECTION_LOST,
            )
        if code is None and isinstance(exc, self._psycopg.DataError) and "NUL" in text:
            code = BAD_TEXT  # psycopg refuses NUL in text before sending anything
        hint = _HINTS.get(code or "")
        if hint and (code != DUPLICATE_TABLE or sql.lstrip().upper().startswith("CREATE")):
            text = f"{text} ({hint.format(where=self.where)})"
        return _error(text, code)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()

    # -- waking ---------------------------------------------------------------------------------

    def listen(self, channel: str, callback: Callable[[str | None], Any]) -> Listener:
        """Call ``callback(payload)`` from a thread of its own for every ``NOTIFY`` on
        ``channel``, and ``callback(None)`` each time the listener has (re)connected, when
        notifications may have been missed. Returns the :class:`Listener`; ``close()`` it."""
        return Listener(self, channel, callback)


def _is_rollback(sql: str) -> bool:
    return sql.strip().rstrip(";").strip().upper() == "ROLLBACK"


class Listener:
    """``LISTEN channel`` on a connection of its own, read by a daemon thread.

    It reconnects by itself after the server restarts (waiting 0.1 s, doubling up to
    ``max_delay`` while the server stays away) and then calls ``callback(None)``. A callback
    that raises is logged and the listener goes on.
    """

    def __init__(
        self,
        driver: PostgresDriver,
        channel: str,
        callback: Callable[[str | None], Any],
        *,
        max_delay: float = 2.0,
        poll: float = 0.05,
    ) -> None:
        if not isinstance(channel, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", channel):
            raise ValidationError(f"a channel name is lower-case letters, digits and _, got {channel!r}")
        self._psycopg = driver._psycopg
        self._url = driver.url
        self._kwargs = dict(driver._connect_kwargs)
        self._where = driver.where
        self.channel = channel
        self._callback = callback
        self._max_delay = max_delay
        self._poll = poll
        self._stop = threading.Event()
        #: How many times it has connected (1 after the first connection).
        self.connections = 0
        self._thread = threading.Thread(target=self._run, name=f"durably-listen-{channel}", daemon=True)
        self._thread.start()

    def _notify(self, payload: str | None) -> None:
        try:
            self._callback(payload)
        except Exception:
            logger.exception("durably: a NOTIFY callback raised")

    def _run(self) -> None:
        psycopg = self._psycopg
        delay = 0.1
        while not self._stop.is_set():
            conn = None
            try:
                conn = psycopg.connect(self._url, **self._kwargs)
                if conn.info.server_version >= 140000:
                    # Idle is this session's whole job: a server that ends idle sessions
                    # (idle_session_timeout, PostgreSQL 14+) would cut it again and again.
                    conn.execute("SET idle_session_timeout = 0")
                conn.execute(f"LISTEN {self.channel}")
                self.connections += 1
                delay = 0.1
                self._notify(None)
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=self._poll):
                        self._notify(note.payload)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    logger.warning(
                        "durably: LISTEN %s at %s: %s; reconnecting in %.1f s",
                        self.channel,
                        self._where,
                        _scrub(" ".join(str(exc).split()), self._url),
                        delay,
                    )
                    self._stop.wait(delay)
                    delay = min(delay * 2, self._max_delay)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # pragma: no cover
                        pass

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and wait for the thread (at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
