"""Reading runs and their logs.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import pytest

from durably import ValidationError, job


async def test_get_runs_filters_newest_first(make_app):
    @job("a")
    async def a(step, input):
        return 1

    @job("b")
    async def b(step, input):
        raise ValueError("x")

    app = make_app([a, b])
    r1 = app.trigger(a, 1, labels={"env": "prod", "team": "x"})
    r2 = app.trigger(b, 2, labels={"env": "prod"})
    r3 = app.trigger(a, 3, labels={"env": "dev"})
    await app.process_until_idle(max_runs=2)
    assert [r.id for r in app.get_runs()] == [r3.id, r2.id, r1.id]
    assert [r.id for r in app.get_runs(status="completed")] == [r1.id]
    assert [r.id for r in app.get_runs(status=["failed", "pending"])] == [r3.id, r2.id]
    assert [r.id for r in app.get_runs(job_name="a")] == [r3.id, r1.id]
    assert [r.id for r in app.get_runs(job_name=["a", "b"], limit=2)] == [r3.id, r2.id]
    assert [r.id for r in app.get_runs(limit=2, offset=1)] == [r2.id, r1.id]
    assert [r.id for r in app.get_runs(labels={"env": "prod"})] == [r2.id, r1.id]
    assert [r.id for r in app.get_runs(labels={"env": "prod", "team": "x"})] == [r1.id]
    assert app.get_runs(labels={"env": "none"}) == []
    with pytest.raises(ValidationError, match="unknown status"):
        app.get_runs(status="done")
    with pytest.raises(ValidationError, match="limit"):
        app.get_runs(limit=-1)


async def test_get_logs_pages_forward_and_gives_the_last_lines_in_order(make_app):
    """Guards defect 8: get_logs could only return every line of a run at once."""

    @job("j")
    async def j(step, input):
        for i in range(25):
            step.log.info(f"line {i}")

    app = make_app([j])
    run = app.trigger(j, None)
    await app.process_one()
    every = app.get_logs(run.id)
    assert [log.message for log in every] == [f"line {i}" for i in range(25)]
    pages, after = [], None
    while True:
        page = app.get_logs(run.id, after_id=after, limit=10)
        if not page:
            break
        pages.append([log.message for log in page])
        after = page[-1].id
    assert [len(p) for p in pages] == [10, 10, 5] and sum(pages, []) == [log.message for log in every]
    assert [log.message for log in app.get_logs(run.id, last=3)] == ["line 22", "line 23", "line 24"]
    assert app.get_logs(run.id, limit=0) == [] and app.get_logs(run.id, last=0) == []
    assert app.get_logs(run.id, after_id=every[-1].id) == []
    assert len(app.get_logs(run.id, last=1000)) == 25
