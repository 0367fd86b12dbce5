"""A throwaway PostgreSQL cluster for tests, benchmarks and the chaos suite.

``initdb`` into a temporary folder, ``pg_ctl`` on a free port of 127.0.0.1, stopped and
removed afterwards. Run as root, every server program runs as the ``postgres`` user (the
server refuses to run as root) and the temporary folder is given to that user.

    with PgCluster() as pg:                  # tests: fsync off, fast
        url = pg.create_database("jobs")     # postgresql://postgres:...@127.0.0.1:PORT/jobs
        pg.restart()                         # the "server restarted" case
    with PgCluster(durable=True) as pg: ...  # benchmarks: the server's durable defaults

``python -m bench.pg_cluster`` starts one and prints its URL until Ctrl-C, for trying
things by hand.

Only the server's own programs are used (from ``/usr/lib/postgresql/*/bin``, the newest
major version there, or ``$DURABLY_PG_BIN``); SQL goes through psycopg, imported when a
method needs it.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

SUPERUSER = "postgres"
# Settings for a cluster whose data may be lost: a test's database dies with the test.
# A crash of the machine could corrupt it; a crash of the server (pg_ctl stop -m immediate)
# or a killed client cannot.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PgClusterError(RuntimeError):
    """The cluster could not be created, started or stopped; the message says which step."""


def find_bin_dir() -> str | None:
    """The folder of ``initdb``/``pg_ctl``: ``$DURABLY_PG_BIN`` if set, else the newest
    ``/usr/lib/postgresql/<major>/bin`` (Debian's layout), else the folder of an ``initdb``
    on ``PATH``. None when there is none."""
    env = os.environ.get("DURABLY_PG_BIN")
    if env:
        return env if os.path.isfile(os.path.join(env, "initdb")) else None
    found = []
    for path in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        match = re.search(r"/postgresql/(\d+)/bin/initdb$", path)
        if match:
            found.append((int(match.group(1)), os.path.dirname(path)))
    if found:
        return max(found)[1]
    on_path = shutil.which("initdb")
    return os.path.dirname(on_path) if on_path else None


def missing() -> str | None:
    """Why a cluster cannot be made here, or None if it can."""
    if find_bin_dir() is None:
        return (
            "PostgreSQL's server programs (initdb, pg_ctl) were not found in /usr/lib/postgresql/*/bin "
            "or on PATH: install Debian's 'postgresql' package (apt-get install postgresql), "
            "or point DURABLY_PG_BIN at the folder that holds initdb"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return "running as root, but there is no 'postgres' user to run the server as"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One PostgreSQL server on 127.0.0.1 with its data in a temporary folder.

    ``durable=False`` (tests) turns fsync off; ``durable=True`` (benchmarks) keeps the
    server's defaults (fsync, synchronous_commit on). ``settings`` adds or overrides
    ``postgresql.conf`` settings. The superuser is ``postgres`` with a random password;
    TCP connections need it (scram-sha-256), so a wrong password fails as on a real server.
    """

    def __init__(self, *, durable: bool = False, settings: dict[str, Any] | None = None,
                 bin_dir: str | None = None, start: bool = True) -> None:
        why = missing() if bin_dir is None else None
        if why:
            raise PgClusterError(why)
        self.bin_dir = bin_dir or find_bin_dir() or ""
        self.password = secrets.token_hex(12)
        self.port = 0
        self.settings = {} if durable else dict(FAST_SETTINGS)
        self.settings.update(settings or {})
        self._as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="durably-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._running = False
        try:
            if self._as_postgres:
                user = pwd.getpwnam(SUPERUSER)
                os.chown(self.root, user.pw_uid, user.pw_gid)
            self._initdb()
            if start:
                self.start()
        except BaseException:
            self.destroy()
            raise

    # -- the server's programs ------------------------------------------------------------

    def _run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [os.path.join(self.bin_dir, program), *args]
        kwargs: dict[str, Any] = {}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
               "HOME": str(self.root), "TZ": "UTC"}
        if self._as_postgres:
            kwargs.update(user=SUPERUSER, group=SUPERUSER, extra_groups=[])
        proc = subprocess.run(cmd, cwd=self.root, env=env, capture_output=True, text=True,
                              timeout=timeout, **kwargs)
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PgClusterError(
                f"{program} {' '.join(args)} failed with exit {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}" + (f"\nserver log:\n{tail}" if tail else "")
            )
        return proc

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        os.chmod(pwfile, 0o600)
        try:
            self._run(
                "initdb", "-D", str(self.data), "--username", SUPERUSER, "--pwfile", str(pwfile),
                "--auth-local", "trust", "--auth-host", "scram-sha-256",
                "--encoding", "UTF8", "--locale", "C.UTF-8", "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            # No Unix socket: nothing outside the temporary folder, no clash with a system server.
            "unix_socket_directories": "''",
            "logging_collector": "off",
            "log_min_messages": "warning",
            **{k: _conf_value(v) for k, v in self.settings.items()},
        }
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# durably's throwaway cluster\n")
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (on a free port the first time, on the same port afterwards)."""
        if self._running:
            return
        attempts = 1 if self.port else 3
        for attempt in range(attempts):
            port = self.port or free_port()
            try:
                self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                          "-o", f"-p {port}")
            except PgClusterError:
                if attempt + 1 == attempts:
                    raise
                continue  # another process took the port between free_port() and the bind
            self.port = port
            self._running = True
            return

    def stop(self, mode: str = "fast") -> None:
        """Stop the server. ``mode``: ``smart`` (wait for clients), ``fast`` (disconnect
        them, as systemd does) or ``immediate`` (no shutdown checkpoint: a crash)."""
        if not self._running:
            return
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")
        self._running = False

    def restart(self, mode: str = "fast") -> None:
        """Stop and start on the same port: every open connection is cut."""
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        return self._running

    def destroy(self) -> None:
        """Stop the server and delete its folder. Safe to call twice."""
        try:
            if self._running:
                self.stop("immediate")
        except PgClusterError as exc:  # pragma: no cover - a server that will not stop
            print(f"pg_cluster: {exc}", file=sys.stderr)
        finally:
            self._running = False
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PgCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.destroy()

    # -- connecting -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres", *, user: str = SUPERUSER, password: str | None = None,
            **params: str) -> str:
        """A ``postgresql://`` URL for ``dbname`` on this server (the superuser by default)."""
        secret = self.password if password is None and user == SUPERUSER else password
        auth = quote(user, safe="") + (f":{quote(secret, safe='')}" if secret else "")
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")

    def execute(self, sql: str, params: Any = None, *, dbname: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser in autocommit mode; return its rows."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str, *, owner: str | None = None) -> str:
        """Create an empty database (dropped first if it exists) and return its URL."""
        from psycopg import sql as q

        self.execute(q.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(q.Identifier(name)).as_string(None))
        stmt = q.SQL("CREATE DATABASE {} TEMPLATE template0").format(q.Identifier(name))
        if owner:
            stmt = q.SQL("{} OWNER {}").format(stmt, q.Identifier(owner))
        self.execute(stmt.as_string(None))
        return self.url(name)

    def create_role(self, name: str, password: str, *, login: bool = True) -> None:
        from psycopg import sql as q

        self.execute(
            q.SQL("CREATE ROLE {} WITH {} PASSWORD {}").format(
                q.Identifier(name), q.SQL("LOGIN" if login else "NOLOGIN"), q.Literal(password)
            ).as_string(None)
        )

    def server_log(self, last: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-last:] if self.log.exists() else ""


def _conf_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    return text if re.fullmatch(r"[A-Za-z0-9_.]+", text) else "'" + text.replace("'", "''") + "'"


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.pg_cluster", description="Start a throwaway PostgreSQL "
                                "server on 127.0.0.1, print its URL, remove it on Ctrl-C.")
    p.add_argument("--durable", action="store_true", help="keep fsync on (for benchmarks)")
    p.add_argument("--database", default="durably", help="a database to create (default durably)")
    a = p.parse_args()
    with PgCluster(durable=a.durable) as pg:
        print(pg.create_database(a.database), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
