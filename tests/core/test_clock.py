"""Ids and timestamps (durably.clock) on CPython, where a program may trigger from threads."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone

from durably import Durably
from durably.clock import UlidFactory


def test_two_threads_making_an_id_in_the_same_millisecond_get_different_rising_ids(monkeypatch):
    # Both threads are made to ask for their random part at the same moment: before the
    # lock, both then wrote the same "last id" and returned the same id.
    meet = threading.Barrier(2, timeout=0.5)

    def urandom(n: int) -> bytes:
        try:
            meet.wait()
        except threading.BrokenBarrierError:
            pass  # the other thread could not come: it waits for the lock we hold
        return bytes(n)

    monkeypatch.setattr(os, "urandom", urandom)
    ids = UlidFactory()
    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    made: list[str] = []
    threads = [threading.Thread(target=lambda: made.append(ids.new(now))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()
    assert len(made) == 2 and made[0] != made[1]
    assert ids.new(now) > max(made)  # and the next one still rises past both


def test_runs_triggered_from_many_threads_at_once_all_get_their_own_id(tmp_path):
    app = Durably(str(tmp_path / "jobs.db"))
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def trigger() -> None:
        start.wait()
        try:
            for i in range(50):
                app.trigger("job", i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    runs = app.get_runs()
    assert len(runs) == len({run.id for run in runs}) == 400
    app.close()


def test_the_fast_system_time_text_reads_as_the_system_clock_formatted(monkeypatch):
    # system_now_iso builds the text up to the second once per second: across a second's
    # boundary and within one it must give what iso(datetime) gives for the same instant.
    import time

    from durably.clock import iso, parse_iso, system_now_iso

    for ns in (1_796_000_000_000_000_000, 1_796_000_000_999_999_000, 1_796_000_001_000_001_000, 5_000):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        text = system_now_iso()
        expected = iso(datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc).replace(microsecond=(ns // 1000) % 10**6))
        assert text == expected
        assert len(text) == len("2026-11-25T18:49:08.123456Z") and parse_iso(text) is not None
