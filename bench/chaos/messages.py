"""Bad requests of the browser message protocol, as hypothesis strategies.

Shared by tests/chaos/test_protocol_properties.py (directly against ``BrowserHost.handle``
on CPython) and tests/browser/test_protocol_fuzz.py (posted raw to the real worker). Each
example is ``(method, params)`` that must get an error reply and change nothing: ``params``
is a Python value the worker turns into JSON text (``BAD_JSON`` markers stand for text
that is not valid JSON, which only the CPython test can send as such).
"""

from __future__ import annotations

from hypothesis import strategies as st

# Methods the host serves, with the parameter each one requires (None: none required).
METHODS = {
    "ping": None, "jobs": None, "trigger": "job", "triggerMany": "job", "getRun": "id", "getRuns": None,
    "getSteps": "id", "getLogs": "id", "cancel": "id", "retrigger": "id", "deleteRun": "id",
    "purgeRuns": "olderThan", "waitForRun": "id", "subscribe": "types", "unsubscribe": "types",
    "getStatus": None, "signal": "id",
}
DEBUG_METHODS = ("evalPython", "sql")
EXTRA_KEY = "zzUnknownParameter"

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
json_data = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
non_text = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                     st.lists(st.integers(), max_size=2), st.dictionaries(text, st.integers(), max_size=2))
non_object = st.one_of(st.none(), st.booleans(), st.integers(), text, st.lists(json_data, max_size=3))
# Ids no run has (ULIDs are 26 characters of Crockford base32).
missing_id = st.one_of(text, st.from_regex(r"[0-9A-HJKMNP-TV-Z]{26}", fullmatch=True))


@st.composite
def bad_call(draw, methods=tuple(METHODS), unknown_ok: bool = True) -> tuple[object, object, str]:
    """``(method, params, why)``: a request that must be refused."""
    kind = draw(st.sampled_from(["unknown-method", "non-text-method", "non-object-params", "extra-param",
                                 "missing-param", "wrong-type"] if unknown_ok else
                                ["non-object-params", "extra-param", "missing-param", "wrong-type"]))
    if kind == "unknown-method":
        name = draw(text.filter(lambda s: s not in METHODS and s not in DEBUG_METHODS and s != "exportDatabase"))
        return name, draw(st.dictionaries(text, json_data, max_size=3)), kind
    if kind == "non-text-method":
        return draw(non_text), {}, kind
    method = draw(st.sampled_from(methods))
    if kind == "non-object-params":
        return method, draw(non_object.filter(lambda v: v is not None)), kind
    if kind == "extra-param":
        params = draw(st.dictionaries(text, json_data, max_size=3))
        params[EXTRA_KEY] = draw(json_data)
        return method, params, kind
    required = METHODS.get(method)
    if kind == "missing-param" and required is not None:
        return method, {}, kind
    # wrong-type: a value of the right name that can never be accepted
    if method in ("trigger", "triggerMany"):
        params = {"job": draw(st.one_of(non_text.filter(lambda v: v is not None),
                                        text.filter(lambda s: s.strip() and not s.startswith("chaos"))))}
        if method == "triggerMany":
            params["inputs"] = draw(st.lists(json_data, max_size=2))
        return method, params, f"{kind}:job"
    if method in ("cancel", "retrigger", "waitForRun", "signal"):
        return method, {"id": draw(st.one_of(missing_id, non_text.filter(lambda v: v is not None)))}, f"{kind}:id"
    if method in ("subscribe", "unsubscribe"):
        bad = st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=2),
                        text.filter(lambda s: s != "*" and ":" not in s))
        return method, {"types": draw(bad)}, f"{kind}:types"
    if method == "purgeRuns":
        bad = st.one_of(st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(text, st.integers(), max_size=1),
                        text.filter(lambda s: not _isoish(s)))
        return method, {"olderThan": draw(bad)}, f"{kind}:olderThan"
    # Methods whose parameters cannot be of a wrong type (ping, jobs, reads): an extra one.
    return method, {EXTRA_KEY: draw(json_data)}, "extra-param"


def _isoish(s: str) -> bool:
    from datetime import datetime

    try:
        datetime.fromisoformat(s.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False
