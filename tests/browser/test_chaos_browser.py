"""A small browser chaos run in the normal suite: one reload, one closed tab and one
terminated worker during slow multi-step jobs, then the CPython chaos checks over the
ledger the step bodies wrote and the runs and steps read back through the page's API.
The large runs are on demand: ``python -m bench.chaos --host browser --interruptions 30``, and
with two follower tabs open, where each interruption is a hand-over, ``... --followers 2``."""

from __future__ import annotations

import pytest

from bench.chaos import browser as chaos

pytestmark = pytest.mark.browser


def test_reloads_closed_tabs_and_terminated_workers_lose_nothing_and_rerun_no_committed_step(context, chaos_site_url):
    result = chaos.BrowserChaos(chaos.Options(interruptions=3, seed=7, pause=(0.3, 0.8))).run(context, chaos_site_url)
    rep = result.report
    print(result.line())
    print(result.timing_line())
    assert rep.ok, "\n".join(rep.failures)
    assert result.kinds == {"reload": 1, "close-tab": 1, "terminate": 1}
    assert rep.runs >= 2 and rep.lost == 0 and rep.duplicates == 0 and rep.half_written == 0
    assert rep.overlaps == 0 and rep.integrity == "ok"
    assert rep.reexecuted <= 3
    # Every new page load's worker went on with the pending runs: its first step started.
    assert len(result.to_next_step) == 3


def test_leader_interruptions_with_followers_open_hand_over_and_lose_nothing(context, chaos_site_url):
    opts = chaos.Options(interruptions=3, seed=11, pause=(0.3, 0.8), steps=(4, 6), followers=2)
    result = chaos.BrowserChaos(opts).run(context, chaos_site_url)
    rep = result.report
    print(result.line())
    print(result.timing_line())
    assert rep.ok, "\n".join(rep.failures)
    assert result.kinds == {"reload": 1, "close-tab": 1, "terminate": 1} and result.handovers == 3
    assert rep.lost == 0 and rep.duplicates == 0 and rep.half_written == 0 and rep.overlaps == 0
    assert rep.integrity == "ok" and rep.reexecuted <= 3
    # Each new leader was a follower that took over and went on with the pending runs.
    assert len(result.to_next_step) == 3


def test_the_browser_ledger_pairs_bodies_per_page_load_and_the_api_records_feed_the_checks():
    rows = [
        ["start", "r1", "s0", "browser:a", 10.0], ["end", "r1", "s0", "browser:a", 10.1],
        ["start", "r1", "s1", "browser:a", 10.2],  # the tab closed: no end
        ["start", "r1", "s1", "browser:b", 20.0], ["end", "r1", "s1", "browser:b", 20.1],
    ]
    ledger = chaos.ledger_executions(rows, ["browser:a", "browser:b"])
    assert [(e.step, e.pid, e.outcome) for e in ledger] == [("s0", 1, "end"), ("s1", 1, "running"), ("s1", 2, "end")]
    iso = "1970-01-01T00:00:%06.3fZ"
    runs = [{"id": "r1", "status": "completed", "concurrency_key": None, "output": {"total": 2},
             "completed_steps": 2, "completed_at": iso % 20.2}]
    steps = {"r1": [{"name": "s0", "status": "completed", "started_at": iso % 10.0, "completed_at": iso % 10.1},
                    {"name": "s1", "status": "completed", "started_at": iso % 20.0, "completed_at": iso % 20.1}]}
    db = chaos.db_state(runs, steps, "ok")
    tl = chaos.checks.Timeline(kills=[(1, 10.3)], exits={1: 15.0}, expected={"r1": "completed"})
    assert chaos.checks.check(ledger, db, tl).ok
    # Without the interruption, the second execution of s1 is a failure: the checks can fail.
    rep = chaos.checks.check(ledger, db, chaos.checks.Timeline(expected={"r1": "completed"}))
    assert not rep.ok and any("ran again" in f for f in rep.failures)
