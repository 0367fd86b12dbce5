"""Huey's ``SqliteHuey``: a plain task queue, as a reference for what a queue without steps
costs. Huey has no steps, so a "job of N steps" is a chain of N tasks where each task enqueues
the next one (sequential, like a job's steps): per hop one enqueue INSERT, one dequeue DELETE
and one result INSERT, each its own commit.

Settings: as shipped (WAL; synchronous left at SQLite's default, FULL). The consumer runs in
this process with one worker thread, like durably's default of one run at a time. Its polling
is tightened to 10 ms (the default starts at 100 ms and backs off to 10 s when idle) so that
the figures show Huey's storage cost rather than its sleeps.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from bench.common import SliceClock, latency_result, now, runs_result, steps_result

NAME = "huey"
SETTINGS = "WAL, synchronous=FULL (SQLite default, as shipped); 1 worker thread, 10 ms polling"


def available() -> str | None:
    try:
        import huey  # noqa: F401
    except ImportError:
        return "huey is not installed: pip install -e '.[bench]'"
    return None


def _huey(db_path: str) -> Any:
    from huey import SqliteHuey

    logging.getLogger("huey").setLevel(logging.WARNING)
    return SqliteHuey("bench", filename=db_path)


def _consumer(huey: Any) -> Any:
    consumer = huey.create_consumer(
        workers=1, periodic=False, initial_delay=0.01, backoff=1.0, max_delay=0.01,
        check_worker_health=False,
    )
    consumer.start()
    return consumer


def steps(n: int, db_path: str, slices: int = 20) -> dict:
    huey = _huey(db_path)
    clock = SliceClock(n, slices)
    done = threading.Event()

    @huey.task()
    def hop(i: int) -> int:
        clock.tick(i)
        if i + 1 < n:
            hop(i + 1)
        else:
            done.set()
        return i  # stored as the task's result, like a step's output

    consumer = _consumer(huey)
    try:
        t0 = now()
        hop(0)
        if not done.wait(timeout=3600):
            raise TimeoutError("huey chain did not finish")
        clock.end()
        seconds = now() - t0
    finally:
        consumer.stop(graceful=True)
    return steps_result(n, seconds, clock, settings=SETTINGS, shape="chain of N tasks")


def runs(k: int, db_path: str) -> dict:
    huey = _huey(db_path)
    lock = threading.Lock()
    count = [0]
    done = threading.Event()

    @huey.task()
    def one(key: int) -> int:
        with lock:
            count[0] += 1
            if count[0] == k:
                done.set()
        return 0

    consumer = _consumer(huey)
    try:
        t0 = now()
        for i in range(k):
            one(i)
        if not done.wait(timeout=600):
            raise TimeoutError("huey tasks did not finish")
        seconds = now() - t0
    finally:
        consumer.stop(graceful=True)
    return runs_result(k, seconds, settings=SETTINGS)


def trigger_latency(k: int, db_path: str) -> dict:
    huey = _huey(db_path)
    started: dict = {}
    events = [threading.Event() for _ in range(k)]

    @huey.task()
    def one(key: int) -> int:
        started[key] = now()
        events[key].set()
        return 0

    consumer = _consumer(huey)
    trig, start = [], []
    try:
        for i in range(k):
            t0 = now()
            one(i)
            t1 = now()
            if not events[i].wait(timeout=60):
                raise TimeoutError("huey task did not start")
            trig.append(t1 - t0)
            start.append(started[i] - t0)
    finally:
        consumer.stop(graceful=True)
    return latency_result(trig, start, settings=SETTINGS)
