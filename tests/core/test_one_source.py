"""Facts with one source: where a fact must also be written elsewhere (a shipped migration's
text, a signature's defaults, the CLI's flags, the page's option names), it is checked
against its source here."""

from __future__ import annotations

import inspect
import re
import sqlite3
from dataclasses import fields
from typing import get_args

from durably import Durably
from durably import migrations_postgres as pg
from durably.browser import BrowserHost
from durably.cli import build_parser
from durably.limits import MAX_MESSAGE_BYTES, as_dict
from durably.models import ACTIVE, FINISHED, RUN_STATUSES, RunStatus, StepStatus, WAITING_FOR, WaitingFor
from durably.settings import OPTIONS, PAGE_NAMES, Settings

CHECK = re.compile(r"(\w+)\s+TEXT[^,]*?CHECK \(status IN\s*\(([^)]*)\)\)")


def _checks(sql: str) -> set[str]:
    found = CHECK.search(sql)
    assert found, sql
    return {value.strip().strip("'") for value in found.group(2).split(",")}


def test_the_schemas_status_checks_allow_exactly_the_statuses_of_the_models(tmp_path):
    path = str(tmp_path / "jobs.db")
    Durably(path).migrate()
    conn = sqlite3.connect(path)
    tables = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    conn.close()
    assert _checks(tables["durably_runs"]) == set(RUN_STATUSES) == set(get_args(RunStatus))
    assert _checks(tables["durably_steps"]) == set(FINISHED) | {"waiting"} == set(get_args(StepStatus))
    waiting_for = re.search(r"waiting_for\s+TEXT CHECK \(waiting_for IN \(([^)]*)\)\)", tables["durably_runs"])
    assert waiting_for and {v.strip().strip("'") for v in waiting_for.group(1).split(",")} == set(WAITING_FOR)
    assert set(WAITING_FOR) == set(get_args(WaitingFor))
    # PostgreSQL: the last status check each table was given (migration 5 replaced the first).
    pg_statements = [sql for _, statements in pg.MIGRATIONS for sql in statements]
    last = {}
    for sql in pg_statements:
        for table in ("durably_runs", "durably_steps"):
            if re.search(rf"(CREATE|ALTER) TABLE {table}\b", sql) and "CHECK (status IN" in sql:
                last[table] = {v.strip().strip("'") for v in re.search(r"CHECK \(status IN\s*\(([^)]*)\)\)", sql).group(1).split(",")}
    assert last == {"durably_runs": set(RUN_STATUSES), "durably_steps": set(FINISHED) | {"waiting"}}
    assert set(ACTIVE) | set(FINISHED) == set(RUN_STATUSES) and not set(ACTIVE) & set(FINISHED)


def test_every_option_has_its_default_from_the_settings_in_the_api_the_cli_and_the_browser(tmp_path):
    defaults = {f.name: f.default for f in fields(Settings)}
    assert set(OPTIONS) == set(defaults)
    signature = inspect.signature(Durably).parameters
    for name, default in defaults.items():
        assert signature[name].default == default, name

    # The CLI passes only the flags given: the others are Durably's (the settings') defaults.
    args = build_parser().parse_args(["worker", "jobs.py", "--db", "x.db"])
    flags = {name: flag for name, (_, flag, _, _) in OPTIONS.items() if flag}
    assert all(getattr(args, name) is None for name in flags)
    help_text = build_parser()._subparsers._group_actions[0].choices["worker"].format_help()  # type: ignore[union-attr]
    for flag in flags.values():
        assert flag in help_text

    # The browser takes every option by its page name, and nothing else.
    assert set(PAGE_NAMES.values()) == set(defaults)
    host = BrowserHost(post_event=lambda text: None, driver=str(tmp_path / "b.db"))
    assert host.app.settings == Settings()
    host.app.close()


def test_the_message_size_limit_is_a_limit_in_bytes_the_page_can_read():
    assert as_dict()["max_message_bytes"] == MAX_MESSAGE_BYTES
