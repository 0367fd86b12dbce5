"""Bad input, property-based: whatever a caller passes to trigger (inputs, labels, keys,
job names, coalesce) or to the run lookups, a bad value gets a DurablyError subclass with a
message, never a bare TypeError/KeyError/UnicodeEncodeError, and nothing committed changes;
a good trigger round-trips exactly through get_run.

Each example runs on a fresh in-memory database seeded with a few runs, so the snapshot
compares every row of every table before and after.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durably import Durably, DurablyError, NotFoundError, ValidationError, job
from durably.models import RUN_STATUSES

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -------------------------------------------------------------------------------

# Text SQLite can store: no lone surrogates (they have no UTF-8 form).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
good_name = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda s: s.strip() != "")
json_data = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
# Label values are stored as text, which on PostgreSQL cannot hold NUL: refused everywhere.
label_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
good_labels = st.none() | st.dictionaries(good_name, label_text, max_size=5)

not_json_leaf = st.one_of(
    st.binary(max_size=4), st.sets(st.integers(), min_size=1, max_size=2), st.just(float("nan")),
    st.just(float("inf")), st.just(float("-inf")), st.complex_numbers(allow_nan=False),
    st.builds(object), st.just(json), st.just(lambda: 1), st.frozensets(st.integers(), min_size=1, max_size=2),
)
bad_input = st.recursive(not_json_leaf, lambda inner: st.lists(inner, min_size=1, max_size=3).map(
    lambda xs: xs + [1]) | st.dictionaries(text, inner, min_size=1, max_size=2), max_leaves=4)
non_str = st.one_of(st.integers(), st.floats(), st.binary(max_size=3), st.lists(st.integers(), max_size=2),
                    st.builds(object), st.booleans(), st.tuples(st.integers()))
bad_name = st.one_of(
    non_str,
    st.just(""), st.text(" \t", min_size=1, max_size=3),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=201, max_size=210),
    st.tuples(good_name, st.sampled_from("\x00\x01\n\x1f\x7f"), good_name).map("".join),
)
bad_labels = st.one_of(
    non_str.filter(lambda v: v is not None),
    st.lists(st.tuples(good_name, text), min_size=1, max_size=2),
    st.dictionaries(bad_name.filter(lambda k: _hashable(k)), text, min_size=1, max_size=2),
    st.dictionaries(good_name, non_str, min_size=1, max_size=2),
    st.dictionaries(good_name, st.tuples(label_text, label_text).map("\x00".join), min_size=1, max_size=2),
    st.dictionaries(good_name, st.text(min_size=1001, max_size=1005), min_size=1, max_size=1),
    st.dictionaries(st.from_regex(r"k[0-9]{3}", fullmatch=True), text, min_size=33, max_size=36),
)
bad_coalesce = st.one_of(non_str.filter(lambda v: v is not None), good_name.filter(lambda s: s != "skip"))


def _hashable(value) -> bool:
    try:
        hash(value)
        return True
    except TypeError:
        return False


# -- the database, before and after -------------------------------------------------------------


def seeded() -> Durably:
    app = Durably(":memory:")
    app.trigger("seed", {"a": [1, 2]}, labels={"team": "a"}, idempotency_key="seed-1")
    app.trigger("seed", None, concurrency_key="k1")
    done = app.trigger("seed", 3)
    app.cancel(done.id)
    app.trigger("other", 4)
    return app


def snapshot(app: Durably) -> dict[str, list]:
    driver = app._store.driver
    tables = [r[0] for r in driver.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")[0]]
    return {t: sorted(map(repr, driver.execute(f"SELECT * FROM {t}")[0])) for t in tables}


def refused(app: Durably, call) -> DurablyError:
    before = snapshot(app)
    with pytest.raises(DurablyError) as err:
        call()
    assert str(err.value), "an error without a message"
    assert snapshot(app) == before, "a refused call changed the database"
    return err.value


# -- good triggers round-trip ---------------------------------------------------------------------


@SETTINGS
@given(name=good_name, data=json_data, labels=good_labels, idem=st.none() | good_name, key=st.none() | good_name)
def test_a_good_trigger_round_trips_exactly_through_get_run(name, data, labels, idem, key):
    app = seeded()
    try:
        run = app.trigger(name, data, labels=labels, idempotency_key=idem, concurrency_key=key)
        assert run.disposition in ("created", "idempotent")
        got = app.get_run(run.id)
        # Created or found by its idempotency key, the run is there and pending (the seeded
        # run with an idempotency key is pending too), and it is what trigger returned.
        assert got is not None, "trigger returned a run that get_run does not find"
        assert got.status == "pending"
        assert (got.id, got.job_name, got.input, got.labels) == (run.id, run.job_name, run.input, run.labels)
        if run.disposition == "created":
            assert (got.job_name, got.input, got.labels) == (name, data, labels or {})
            assert (got.idempotency_key, got.concurrency_key) == (idem, key)
            assert json.dumps(got.input, sort_keys=True) == json.dumps(data, sort_keys=True)
            assert got.to_dict()["input"] == data
            assert run.id in [r.id for r in app.get_runs(labels=labels or None)]
    finally:
        app.close()


# -- bad triggers are refused with a DurablyError, and change nothing -----------------------------


@SETTINGS
@given(data=bad_input)
def test_an_input_that_is_not_json_data_is_refused(data):
    app = seeded()
    try:
        err = refused(app, lambda: app.trigger("seed", data))
        assert isinstance(err, ValidationError) and "JSON" in str(err)
        refused(app, lambda: app.trigger_many("seed", [1, data, 2]))  # all or nothing
    finally:
        app.close()


@SETTINGS
@given(which=st.sampled_from(["job", "labels", "idempotency_key", "concurrency_key", "coalesce"]),
       bad=st.data())
def test_a_bad_name_key_label_or_coalesce_is_refused(which, bad):
    app = seeded()
    try:
        kwargs = {}
        name = "seed"
        if which == "job":
            name = bad.draw(bad_name)
        elif which == "labels":
            kwargs["labels"] = bad.draw(bad_labels)
        elif which == "coalesce":
            kwargs.update(coalesce=bad.draw(bad_coalesce), concurrency_key="k9")
        else:
            kwargs[which] = bad.draw(bad_name.filter(lambda v: v is not None))
        err = refused(app, lambda: app.trigger(name, {"x": 1}, **kwargs))
        assert isinstance(err, ValidationError)
    finally:
        app.close()


@SETTINGS
@given(name=good_name.filter(lambda n: n not in ("typed", "seed")), data=json_data)
def test_an_app_with_jobs_refuses_unknown_names_and_checks_typed_input(name, data):
    @dataclasses.dataclass
    class Order:
        id: int
        sku: str

    @job("typed", input=Order)
    async def typed(step, input):
        return input.id

    app = seeded()
    app.register(typed)
    try:
        assert isinstance(refused(app, lambda: app.trigger(name, data)), NotFoundError)
        if not (isinstance(data, dict) and set(data) == {"id", "sku"}):
            assert isinstance(refused(app, lambda: app.trigger("typed", data)), ValidationError)
        run = app.trigger("typed", {"id": 7, "sku": "x"})
        assert app.get_run(run.id).input == {"id": 7, "sku": "x"}
    finally:
        app.close()


@SETTINGS
@given(value=st.one_of(non_str, st.just(""), st.none(), good_name))
def test_run_lookups_and_operations_on_bad_or_unknown_ids_raise_durably_errors(value):
    app = seeded()
    try:
        for call in (app.get_steps, app.get_logs, app.cancel, app.retrigger, app.delete_run):
            refused(app, lambda call=call: call(value))
        if isinstance(value, str) and value:
            assert app.get_run(value) is None
        else:
            refused(app, lambda: app.get_run(value))
    finally:
        app.close()


@SETTINGS
@given(status=st.one_of(st.none(), non_str, text, st.lists(text, max_size=2)),
       job_name=st.one_of(st.none(), non_str, good_name), limit=st.one_of(st.none(), non_str),
       offset=st.one_of(st.integers(-3, 3), non_str))
def test_get_runs_with_any_filters_returns_runs_or_raises_a_durably_error(status, job_name, limit, offset):
    app = seeded()
    try:
        try:
            runs = app.get_runs(status=status, job_name=job_name, limit=limit, offset=offset)
        except DurablyError as err:
            assert str(err)
        else:
            assert isinstance(runs, list)
    finally:
        app.close()


statuses = st.sampled_from(RUN_STATUSES)
job_names = st.sampled_from(["seed", "other", "none"])


@SETTINGS
@given(status=st.one_of(st.none(), statuses, st.lists(statuses, max_size=3)),
       job_name=st.one_of(st.none(), job_names, st.lists(job_names, max_size=2)),
       labels=st.sampled_from([None, {"team": "a"}, {"team": "b"}]),
       limit=st.one_of(st.none(), st.integers(0, 5)), offset=st.integers(0, 5))
def test_get_runs_returns_exactly_the_runs_its_filters_select_newest_first(status, job_name, labels, limit, offset):
    app = seeded()
    try:
        runs = app.get_runs(status=status, job_name=job_name, labels=labels, limit=limit, offset=offset)
        everything = app.get_runs()
        assert [run.id for run in everything] == sorted((run.id for run in everything), reverse=True)
        wanted_status = [status] if isinstance(status, str) else status
        wanted_job = [job_name] if isinstance(job_name, str) else job_name
        matching = [
            run for run in everything
            if (not wanted_status or run.status in wanted_status)
            and (not wanted_job or run.job_name in wanted_job)
            and all(run.labels.get(k) == v for k, v in (labels or {}).items())
        ]
        end = None if limit is None else offset + limit
        assert [run.id for run in runs] == [run.id for run in matching[offset:end]]
    finally:
        app.close()


# -- findings: kept visible until the core decides ----------------------------------------------


@pytest.mark.parametrize("where", ["labels", "idempotency_key", "concurrency_key", "job"])
def test_a_lone_surrogate_in_a_name_or_label_is_a_validation_error(where):
    """Found by hypothesis: '\\ud800' passed check_name/check_labels, then sqlite3 could not
    encode it and raised a bare UnicodeEncodeError from inside the store."""
    app = seeded()
    try:
        s = "a\ud800"
        kwargs = {"labels": {"k": s}} if where == "labels" else {} if where == "job" else {where: s}
        name = s if where == "job" else "seed"
        refused(app, lambda: app.trigger(name, 1, **kwargs))
    finally:
        app.close()


def test_an_input_with_keys_that_collide_as_json_text_is_refused():
    """Found by hypothesis: {1: 'a', '1': 'b'} was accepted and stored as {"1": "b"}:
    JSON turns the int key into a string and the two keys collapse, losing a value."""
    app = seeded()
    try:
        refused(app, lambda: app.trigger("seed", {1: "a", "1": "b"}))
    finally:
        app.close()


# -- whatever trigger accepts runs to the end; whatever it refuses leaves nothing (issue 9) ------

from durably import limits  # noqa: E402
from durably.browser import BrowserHost  # noqa: E402


@job("echo")
async def echo(step, input):
    """Stores its input as a step result, in a log line and as its output."""
    same = await step.run("same", lambda: input)
    step.log.info("got it", same)
    step.progress(1, 1, "done")
    return same


def deep(depth: int, leaf) -> object:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


# Mostly ordinary data; some of it nested near the depth limit (either side), large near the
# size limit (either side, in ASCII and in 6-byte escapes), or not JSON data at all.
edge_input = st.one_of(
    json_data,
    st.builds(deep, st.integers(limits.MAX_DEPTH - 2, limits.MAX_DEPTH + 2), json_data),
    st.builds(deep, st.integers(limits.MAX_DEPTH + 3, 3000), st.just(1)),
    st.builds(lambda n, ch: ch * n, st.integers(limits.MAX_INPUT_BYTES - 4, limits.MAX_INPUT_BYTES),
              st.just("x")),
    st.builds(lambda n: "\u00e9" * n, st.integers(limits.MAX_INPUT_BYTES // 6 - 2, limits.MAX_INPUT_BYTES // 6 + 2)),
    st.builds(lambda depth, bad: deep(depth, bad), st.integers(0, 5), not_json_leaf),
    st.dictionaries(st.integers(), json_data, min_size=1, max_size=2),
)


def run_to_the_end(app: Durably, run_id: str) -> None:
    """Claimed, run, listed and shown: every record of the run encodes as the page gets it."""
    assert asyncio.run(app.process_until_idle()) == 1
    done = app.get_run(run_id)
    assert done.status == "completed" and done.decode_error is None, done.error
    assert done.output == done.input
    assert [r.id for r in app.get_runs()] == [run_id]
    steps, logs = app.get_steps(run_id), app.get_logs(run_id)
    assert [(s.name, s.output) for s in steps] == [("same", done.input)]
    assert [log.message for log in logs][0].startswith("got it")
    json.dumps({**done.to_dict(), "steps": [s.to_dict() for s in steps], "logs": [log.to_dict() for log in logs]},
               default=str)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=edge_input)
def test_every_input_trigger_accepts_runs_to_the_end_and_every_one_it_refuses_leaves_nothing(value):
    app = Durably(":memory:", jobs=[echo])
    try:
        before = snapshot(app)
        try:
            run = app.trigger(echo, value)
        except DurablyError as err:
            assert isinstance(err, ValidationError), repr(err)
            assert snapshot(app) == before, "a refused trigger left something behind"
            return
        run_to_the_end(app, run.id)
    finally:
        app.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=edge_input.filter(lambda v: _json_text(v) is not None))
def test_the_same_holds_for_the_browser_hosts_trigger(value):
    host = BrowserHost(post_event=lambda text: None, jobs=[echo], driver=":memory:")
    app = host.app
    try:
        before = snapshot(app)
        reply = json.loads(host.handle_now("trigger", '{"job": "echo", "input": ' + _json_text(value) + "}"))
        if "error" in reply:
            assert reply["error"]["name"] == "ValidationError" and "traceback" not in reply["error"], reply
            assert snapshot(app) == before, "a refused trigger left something behind"
            return
        run_to_the_end(app, reply["ok"]["id"])
        listed = json.loads(host.handle_now("getRuns", "{}"))["ok"]
        assert [r["status"] for r in listed] == ["completed"]
    finally:
        app.close()


def _json_text(value) -> str | None:
    """The JSON text the page would send for ``value``, if JSON can express it."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
