"""The browser message protocol, property-based, straight against ``BrowserHost.handle`` on
CPython (the browser version, through the real worker, is tests/browser/test_protocol_fuzz.py).

Unknown and non-text methods, params that are not JSON text, not JSON, not an object, that
carry an unknown parameter, lack a required one or hold a value of a wrong type, and
oversized requests: each gets one JSON reply ``{"error": {"name", "message"}}`` naming a
durably error (no traceback: that is the host's "this is a bug" path), the host keeps
serving, and no row of any table changes.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.chaos.messages import METHODS, bad_call, json_data
from durably import job
from durably.browser import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, BrowserHost

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ERROR_NAMES = {"ValidationError", "NotFoundError", "ConflictError", "TimeoutError"}


@job("chaos-seed")
async def chaos_seed(step, input):
    return await step.run("only", lambda: input)


@pytest.fixture(scope="module")
def host():
    loop = asyncio.new_event_loop()
    h = BrowserHost(post_event=lambda text: None, jobs=[chaos_seed], driver=":memory:")
    app = h.app
    app.trigger("chaos-seed", {"a": 1}, labels={"team": "a"}, idempotency_key="seed-1")
    app.trigger("chaos-seed", None, concurrency_key="k1")
    app.cancel(app.trigger("chaos-seed", 3).id)
    h.loop = loop
    yield h
    app.close()
    loop.close()


def snapshot(host: BrowserHost) -> dict[str, list]:
    driver = host.app._store.driver
    tables = [r[0] for r in driver.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")[0]]
    return {t: sorted(map(repr, driver.execute(f"SELECT * FROM {t}")[0])) for t in tables}


def ask(host: BrowserHost, method, params_json) -> dict:
    text = host.loop.run_until_complete(asyncio.wait_for(host.handle(method, params_json), 10))
    assert isinstance(text, str)
    return json.loads(text)


def assert_refused(host: BrowserHost, method, params_json, why: str = "") -> dict:
    before = snapshot(host)
    reply = ask(host, method, params_json)
    assert set(reply) == {"error"}, f"{why}: {method!r} {params_json!r:.200} was accepted: {reply!r:.300}"
    error = reply["error"]
    assert error["name"] in ERROR_NAMES, f"{why}: {method!r} {params_json!r:.200} -> {error!r:.600}"
    assert isinstance(error["message"], str) and error["message"].strip()
    assert "traceback" not in error
    assert snapshot(host) == before, f"{why}: a refused request changed the database"
    assert ask(host, "ping", "{}")["ok"]["protocol"] == PROTOCOL_VERSION, "the host stopped serving"
    return error


@SETTINGS
@given(bad_call())
def test_every_bad_request_gets_one_clear_error_and_changes_nothing(host, call):
    method, params, why = call
    assert_refused(host, method, json.dumps(params), why)


@SETTINGS
@given(st.sampled_from(sorted(METHODS)), st.one_of(
    st.integers(), st.floats(allow_nan=False), st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2), st.binary(max_size=4)))
def test_params_that_are_not_json_text_are_refused(host, method, params):
    assert_refused(host, method, params, "not text")


@SETTINGS
@given(st.sampled_from(sorted(METHODS)), st.one_of(
    st.text(max_size=30).filter(lambda s: s.strip() != "" and not _is_json(s)),
    json_data.filter(lambda v: not isinstance(v, dict) and v is not None).map(json.dumps)))
def test_params_that_are_not_a_json_object_are_refused(host, method, params_json):
    assert_refused(host, method, params_json, "not an object")


def test_an_oversized_request_is_refused_before_it_is_parsed(host):
    big = json.dumps({"job": "chaos-seed", "input": "x" * MAX_MESSAGE_BYTES})
    error = assert_refused(host, "trigger", big, "oversized")
    assert "limit" in error["message"]


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
        return True
    except ValueError:
        return False
