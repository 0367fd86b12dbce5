"""Triggers and their inputs: schemas, validators, and what a refused trigger leaves (nothing).

Part of the core's behavioural suite (see helpers.py): host-independent, run on
CPython here and inside Pyodide by tests/browser/test_core_in_pyodide.py.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import pytest

from durably import NotFoundError, ValidationError, job


@dataclasses.dataclass
class Address:
    city: str
    zip: Optional[str] = None


@dataclasses.dataclass
class Signup:
    email: str
    age: int
    tags: list[str]
    address: Address
    score: float = 0.0


@dataclasses.dataclass
class Result:
    ok: bool
    city: str


async def test_dataclass_input_is_checked_field_by_field_and_the_job_receives_an_instance(make_app):
    received = []

    @job("signup", input=Signup, output=Result)
    async def signup(step, input: Signup):
        received.append(input)
        return Result(ok=True, city=input.address.city)

    app = make_app([signup])
    good = {"email": "a@b.c", "age": 3, "tags": ["x"], "address": {"city": "Oslo"}}
    run = app.trigger(signup, good)
    await app.process_one()
    assert isinstance(received[0], Signup) and isinstance(received[0].address, Address)
    assert app.get_run(run.id).output == {"ok": True, "city": "Oslo"}
    instance = app.trigger(signup, Signup("e@f.g", 1, [], Address("Rome")))
    assert instance.input["address"] == {"city": "Rome", "zip": None}

    cases = [
        ({"age": 3, "tags": [], "address": {"city": "x"}}, "missing the required field 'email'"),
        ({**good, "extra": 1}, "unknown field(s) 'extra'"),
        ({**good, "age": "3"}, "age must be int, got str"),
        ({**good, "age": True}, "age must be int, got bool"),
        ({**good, "tags": ["a", 2]}, "tags[1] must be str"),
        ({**good, "address": {"city": 5}}, "address.city must be str"),
        ("not an object", "must be an object"),
    ]
    before = len(app.get_runs())
    for bad, message in cases:
        with pytest.raises(ValidationError) as caught:
            app.trigger(signup, bad)
        assert message in str(caught.value), (message, str(caught.value))
    assert len(app.get_runs()) == before


async def test_a_callable_validator_checks_the_input(make_app):
    def positive(value):
        if not isinstance(value, int) or value <= 0:
            raise ValueError("must be a positive integer")
        return value

    @job("count", input=positive)
    async def count(step, input):
        return input

    app = make_app([count])
    with pytest.raises(ValidationError, match="positive integer"):
        app.trigger(count, -1)
    app.trigger(count, 3)
    assert await app.process_until_idle() == 1


async def test_a_pydantic_model_checks_the_input_and_the_job_receives_an_instance(make_app):
    # pydantic is optional: the site does not ship it to the browser, so this one is
    # skipped there (and on a CPython without pydantic).
    pydantic = pytest.importorskip("pydantic")
    app = make_app()

    class Item(pydantic.BaseModel):
        name: str
        qty: int

    @job("item", input=Item)
    async def item(step, input):
        assert isinstance(input, Item)
        return input.qty

    app.register(item)
    with pytest.raises(ValidationError, match="qty"):
        app.trigger(item, {"name": "x", "qty": "many"})
    run = app.trigger(item, {"name": "x", "qty": 2})
    await app.process_one()
    assert app.get_run(run.id).output == 2


async def test_an_output_that_does_not_match_fails_the_run(make_app):
    @job("out", output=Result)
    async def out(step, input):
        return {"ok": "yes", "city": "x"}

    app = make_app([out])
    run = app.trigger(out, None)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.status == "failed" and "ok must be bool" in failed.error


async def test_bad_trigger_input_creates_no_run(make_app):
    @job("j")
    async def j(step, input):
        return 1

    app = make_app([j])
    bad_calls = [
        (lambda: app.trigger("nope", None), NotFoundError, "unknown job 'nope'"),
        (lambda: app.trigger(j, {"x": {1, 2}}), ValidationError, "JSON"),
        (lambda: app.trigger(j, float("nan")), ValidationError, "JSON"),
        (lambda: app.trigger(j, None, labels={"a": 1}), ValidationError, "string value"),
        (lambda: app.trigger(j, None, labels=["a"]), ValidationError, "labels"),
        (lambda: app.trigger(j, None, idempotency_key=""), ValidationError, "idempotency_key"),
        (lambda: app.trigger(j, None, concurrency_key=5), ValidationError, "concurrency_key"),
        (lambda: app.trigger(j, None, coalesce="merge"), ValidationError, "coalesce"),
        (lambda: app.trigger(j, None, coalesce="skip"), ValidationError, "concurrency_key"),
        (lambda: app.trigger_many(j, [1, {2}]), ValidationError, "JSON"),
    ]
    for call, error, message in bad_calls:
        with pytest.raises(error, match=message):
            call()
    assert app.get_runs() == []


async def test_trigger_many_is_all_or_nothing(make_app):
    @job("j")
    async def j(step, input):
        return input

    app = make_app([j])
    app.trigger(j, 0, concurrency_key="taken")
    runs = app.trigger_many(j, [1, 2, 3], labels={"batch": "b1"})
    assert [r.input for r in runs] == [1, 2, 3]
    assert len(app.get_runs(labels={"batch": "b1"})) == 3
    app.cancel(runs[0].id)
    assert len(app.get_runs()) == 4


async def test_trigger_many_checks_the_job_even_with_no_inputs(make_app):
    app = make_app()
    with pytest.raises(ValidationError, match="job name"):
        app.trigger_many(False, [])
    assert app.trigger_many("anything", []) == []


async def test_a_key_or_validator_error_that_cannot_be_printed_is_still_a_validation_error(make_app):
    """A dict key whose __repr__ raises, or a validator raising an exception whose __str__
    raises, escaped the checks as a RuntimeError instead of a ValidationError."""

    class Opaque:
        def __repr__(self):
            raise RuntimeError("no repr")

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    def validator(value):
        raise Unprintable()

    @job("checked", input=validator)
    async def checked(step, input):
        return input

    @job("odd-result")
    async def odd_result(step, input):
        await step.run("keys", lambda: {Opaque(): 1})

    app = make_app([checked, odd_result])
    with pytest.raises(ValidationError, match="object keys must be strings.*Opaque"):
        app.trigger(odd_result, {Opaque(): 1})
    with pytest.raises(ValidationError, match="rejected by its validator: Unprintable"):
        app.trigger(checked, 1)
    run = app.trigger(odd_result)
    await app.process_one()
    failed = app.get_run(run.id)
    assert failed.failed_step == "keys" and "object keys must be strings" in failed.error
    assert [r.id for r in app.get_runs()] == [run.id]
