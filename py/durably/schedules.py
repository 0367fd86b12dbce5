"""Schedules: ``@job(schedule="*/5 * * * *", timezone="Europe/Paris", catch_up="latest")``.

A started worker registers the schedules of its jobs in the database (``durably_schedules``)
and, whenever a slot falls due, creates one run per due slot with the idempotency key
``schedule:<slot in UTC>``: a worker creates a slot's runs only by moving the schedule's
next slot on from the one it read, so any number of workers never create a slot twice. A
scheduled run's input is ``{"scheduled_for": "<slot, ISO-8601 UTC>"}``.

After downtime ``catch_up`` decides what the missed slots get: ``"latest"`` one run, for
the latest of them; ``"all"`` a run each, the latest ``limits.MAX_CATCH_UP`` at most;
``"none"`` nothing (a slot gets a run only when a worker sees it within ``ON_TIME``
seconds of its time).

Cron expressions are read by ``cronsim`` (pure Python, no dependencies; Debian cron's
syntax and DST rules, plus ``L``, ``#`` and an optional seconds field), imported only when
a job has a schedule. Time zones come from ``zoneinfo``: where the system has no time zone
database (Windows, Pyodide) it needs the ``tzdata`` package, which the browser site ships.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from .errors import ValidationError
from .limits import MAX_CATCH_UP
from .models import CATCH_UP, CatchUp

#: ``catch_up="none"``: a slot older than this (seconds) when a worker first sees it is missed.
ON_TIME = 60.0
_TICK = timedelta(microseconds=1)
_UTC_NAMES = ("UTC", "Etc/UTC", "Z")


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError:  # pragma: no cover - a normal dependency; a broken install only
        raise ValidationError(
            "schedules need the cronsim package (a dependency of durably): pip install cronsim"
        ) from None
    return cronsim


def zone(name: str) -> tzinfo:
    """The time zone ``name`` (``"UTC"`` needs no time zone database)."""
    if name in _UTC_NAMES:
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            f"unknown time zone {name!r} ({type(exc).__name__}); use an IANA name such as 'Europe/Paris' or 'UTC' "
            "(where the system has no time zone database, install the tzdata package)"
        ) from None


@dataclass(frozen=True)
class Schedule:
    """A job's schedule: a cron expression read in ``timezone``, and what missed slots get."""

    cron: str
    timezone: str = "UTC"
    catch_up: CatchUp = "latest"

    @classmethod
    def check(cls, cron: Any, timezone: Any, catch_up: Any, what: str, now: datetime) -> Schedule:
        """A schedule from ``@job``'s options, checked (``ValidationError`` saying what is wrong)."""
        if not isinstance(cron, str) or not cron.strip() or len(cron) > 200:
            raise ValidationError(f"{what}: schedule must be a cron expression such as '*/5 * * * *', got {cron!r}")
        timezone = "UTC" if timezone is None else timezone
        if not isinstance(timezone, str):
            raise ValidationError(f"{what}: timezone must be a time zone name such as 'Europe/Paris', got {timezone!r}")
        catch_up = "latest" if catch_up is None else catch_up
        if catch_up not in CATCH_UP:
            raise ValidationError(f"{what}: catch_up must be one of {', '.join(map(repr, CATCH_UP))}, got {catch_up!r}")
        schedule = cls(" ".join(cron.split()), timezone, catch_up)
        zone(timezone)
        cronsim = _cronsim()
        try:
            cronsim.CronSim(schedule.cron, now.astimezone(zone(timezone)))
        except cronsim.CronSimError as exc:
            raise ValidationError(f"{what}: schedule {cron!r} is not a cron expression durably reads: {exc}") from None
        if schedule.next_after(now) is None:
            raise ValidationError(f"{what}: schedule {cron!r} never falls due (no time matches it in 50 years)")
        return schedule

    def _times(self, start: datetime, reverse: bool = False) -> Iterator[datetime]:
        it = _cronsim().CronSim(self.cron, start.astimezone(zone(self.timezone)), reverse=reverse)
        while True:
            try:
                found = next(it)
            except StopIteration:
                return
            yield found.astimezone(UTC)

    def next_after(self, when: datetime) -> datetime | None:
        """The first slot strictly after ``when`` (aware, UTC); None if there is none."""
        return next(self._times(when), None)

    def due(self, next_at: datetime, now: datetime) -> list[datetime]:
        """The slots that get a run now, oldest first, when the first slot not yet handled is
        ``next_at``: the slots from ``next_at`` to ``now`` as ``catch_up`` decides."""
        if now < next_at:
            return []
        slots: list[datetime] = []
        limit = MAX_CATCH_UP if self.catch_up == "all" else 1
        for slot in self._times(now + _TICK, reverse=True):  # the latest slot at or before now first
            if slot < next_at or len(slots) >= limit:
                break
            slots.append(slot)
        if self.catch_up == "none" and slots and (now - slots[0]).total_seconds() > ON_TIME:
            return []
        slots.reverse()
        return slots
