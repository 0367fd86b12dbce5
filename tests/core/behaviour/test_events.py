"""Events: one shape per type, in order, and listeners that fail.

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import pytest

from durably import ValidationError, job
from durably.events import EVENT_FIELDS

from .helpers import record


async def test_events_have_one_shape_each_and_rising_sequence(make_app):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)
        step.progress(1, 2)
        step.log.error("bad thing", {"k": 1})
        await step.run("t", lambda: 1 / 0)

    app = make_app([j], lease_renew_interval=0.01)
    events = record(app)
    run = app.trigger(j, {"x": 1}, labels={"team": "t"})
    app.trigger(j, None, concurrency_key="c")
    app.trigger(j, None, concurrency_key="c", coalesce="skip")
    await app.process_one()
    other = app.trigger(j, None)
    app.cancel(other.id)
    app.delete_run(other.id)

    types = {e.type for e in events}
    assert {
        "run:trigger",
        "run:coalesced",
        "run:leased",
        "run:progress",
        "step:start",
        "step:complete",
        "step:fail",
        "run:fail",
        "log:write",
        "run:cancel",
        "run:delete",
    } <= types
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)
    assert len({e.sequence for e in events}) == len(events)
    for event in events:
        assert set(event.data) == set(EVENT_FIELDS[event.type]), event.type
        assert event.timestamp.tzinfo is not None
        if event.run_id == run.id:
            assert event.job_name == "j" and event.labels == {"team": "t"}
        flat = event.to_dict()
        assert flat["type"] == event.type and isinstance(flat["timestamp"], str)


async def test_a_failing_listener_becomes_a_worker_error_after_its_event_and_the_worker_goes_on(make_app):
    @job("j")
    async def j(step, input):
        await step.run("s", lambda: 1)
        return "ok"

    app = make_app([j])
    seen = []
    app.on("*", lambda e: seen.append((e.type, e.sequence)))

    def broken(event):
        raise RuntimeError("listener bug")

    app.on("step:complete", broken)
    run = app.trigger(j, None)
    await app.process_one()
    assert app.get_run(run.id).output == "ok"
    types = [t for t, _ in seen]
    i = types.index("step:complete")
    assert types[i + 1] == "worker:error"
    assert types[-1] == "run:complete"
    errors = [e for e in seen if e[0] == "worker:error"]
    assert len(errors) == 1


async def test_listeners_see_events_in_order_even_when_a_listener_triggers(make_app):
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    first_listener, second_listener = [], []

    def chain(event):
        first_listener.append(event.sequence)
        if event.type == "run:trigger" and event.get("input") == 1:
            app.trigger(j, 2)  # emits while we are emitting

    app.on("*", chain)
    app.on("*", lambda e: second_listener.append(e.sequence))
    app.trigger(j, 1)
    assert first_listener == sorted(first_listener) == second_listener


async def test_unsubscribe_and_unknown_event_types(make_app):
    app = make_app()
    seen = []
    off = app.on("run:trigger", seen.append)
    app.trigger("anything", None)
    off()
    app.trigger("anything", None)
    assert len(seen) == 1
    with pytest.raises(ValidationError, match="unknown event type"):
        app.on("run:finished", print)
    for not_a_type in (["run:trigger"], {"run:trigger": 1}, None):  # a TypeError (unhashable) before
        with pytest.raises(ValidationError, match="unknown event type"):
            app.on(not_a_type, print)


async def test_events_read_their_common_fields_by_name_too(make_app):
    app = make_app()
    events = record(app)
    run = app.trigger("x", 1, labels={"a": "b"})
    event = events[0]
    assert event["run_id"] == run.id and event["labels"] == {"a": "b"} and event["input"] == 1
    assert event.get("nope") is None
    with pytest.raises(KeyError, match="run:trigger has no field 'nope'"):
        event["nope"]


async def test_a_listener_whose_error_cannot_be_printed_breaks_neither_trigger_nor_run(make_app):
    """A listener that raised an exception whose __str__ raises made trigger() raise after
    the run was committed, and failed a run whose steps had all succeeded."""

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text")

        def __repr__(self):
            raise RuntimeError("no repr")

    def listener(event):
        raise Unprintable()

    @job("j")
    async def j(step, input):
        return await step.run("s", lambda: 1)

    app = make_app([j])
    app.on("run:trigger", listener)
    app.on("step:complete", listener)
    errors = record(app, "worker:error")
    run = app.trigger(j, None)
    await app.process_one()
    assert app.get_run(run.id).status == "completed" and app.get_run(run.id).output == 1
    assert [e["context"] for e in errors] == ["listener for run:trigger", "listener for step:complete"]
    assert all(e["error"].startswith("Unprintable: <Unprintable whose message cannot be shown") for e in errors)
