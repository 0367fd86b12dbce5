"""The message protocol of the real worker, fuzzed: raw messages posted to the page's Worker.

Batches of bad calls (bench/chaos/messages.py: unknown and non-text methods, params that are
not an object, unknown or missing parameters, values of a wrong type), sent at once with
out-of-order and duplicate ids, mixed with messages that cannot be answered (not objects, no
usable id, unknown types): every call with a usable id gets exactly one error reply with a
name and a message, the worker keeps serving, and no row of any table changes. The same
property runs on CPython, faster and with more examples: tests/chaos/test_protocol_properties.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from durably.browser import PROTOCOL_VERSION
from hypothesis import strategies as st

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.chaos.messages import DEBUG_METHODS, METHODS, bad_call  # noqa: E402

pytestmark = pytest.mark.browser

ERROR_NAMES = {"ValidationError", "NotFoundError", "ConflictError", "TimeoutError"}
SEED_JOBS = '''
from durably import job

@job("chaos-seed")
async def chaos_seed(step, input):
    return await step.run("only", lambda: input)

app.register(chaos_seed)
a = app.trigger("chaos-seed", {"a": 1}, labels={"team": "a"})
app.cancel(app.trigger("chaos-seed", 2, concurrency_key="k").id)
(await app.wait_for_run(a.id, timeout=30)).status
'''

# Post raw messages to the worker and collect every reply to the ids sent, until each id
# has as many replies as calls were sent with it, then a little longer to catch extras.
POST = """async ({messages, settleMs}) => {
    const w = window.durably.worker;
    const want = new Map();
    // The ids the worker can answer (worker.js isId), on any message but init and close.
    const usable = (id) => (typeof id === "number" && Number.isFinite(id)) || (typeof id === "string" && id.length > 0 && id.length <= 200);
    for (const m of messages) {
        if (m && typeof m === "object" && !Array.isArray(m) && m.type !== "init" && m.type !== "close" && usable(m.id)) {
            want.set(m.id, (want.get(m.id) ?? 0) + 1);
        }
    }
    const replies = [];
    let resolveAll;
    const all = new Promise((r) => (resolveAll = r));
    const count = () => [...want].every(([id, n]) => replies.filter((r) => r.id === id).length >= n);
    const on = ({data}) => {
        if (data && data.type === "reply" && want.has(data.id)) { replies.push(data); if (count()) resolveAll(); }
    };
    w.addEventListener("message", on);
    for (const m of messages) w.postMessage(m);
    if (!count()) await Promise.race([all, new Promise((r) => setTimeout(r, 15000))]);
    await new Promise((r) => setTimeout(r, settleMs));
    w.removeEventListener("message", on);
    return replies;
}"""

SNAPSHOT = """async () => {
    const d = window.durably;
    const tables = (await d.call("sql", {sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"})).rows.map((r) => r[0]);
    const out = {};
    for (const t of tables) out[t] = (await d.call("sql", {sql: `SELECT * FROM "${t}" ORDER BY 1`})).rows;
    const runs = await d.getRuns();
    const steps = {};
    for (const r of runs) steps[r.id] = await d.getSteps(r.id);
    return {tables: out, runs, steps};
}"""

unanswerable = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
    st.fixed_dictionaries({"type": st.text(max_size=8).filter(lambda s: s not in ("init", "close", "call"))}),
    st.fixed_dictionaries({"type": st.just("call"), "method": st.just("ping")}),  # no id
    st.fixed_dictionaries({"type": st.just("call"), "id": st.one_of(st.just(""), st.text(min_size=201, max_size=205),
                                                                    st.lists(st.integers(), max_size=1)),
                           "method": st.just("ping")}),
)
BROWSER_METHODS = (*METHODS, *DEBUG_METHODS, "exportDatabase")


@st.composite
def batch(draw):
    calls = draw(st.lists(bad_call(methods=BROWSER_METHODS), min_size=1, max_size=4))
    # Ids a client never uses (it counts from 1): big numbers and strings, some repeated,
    # sent in a shuffled order.
    pool = draw(st.lists(st.one_of(st.integers(10**9, 10**9 + 5), st.sampled_from(["fz-a", "fz-b", "fz-c"])),
                         min_size=1, max_size=len(calls)))
    messages = [{"type": "call", "id": draw(st.sampled_from(pool)), "method": m, "params": p} for m, p, _ in calls]
    messages += draw(st.lists(unanswerable, max_size=2))
    return draw(st.permutations(messages))


def boot(page, site_url, durably) -> dict:
    durably.open(page, site_url)
    assert durably.eval(page, SEED_JOBS) == "completed"
    return page.evaluate(SNAPSHOT)


def check_replies(messages: list, replies: list[dict]) -> None:
    sent: dict = {}
    for m in messages:
        if isinstance(m, dict) and m.get("type") != "init" and (isinstance(m.get("id"), int) or str(m.get("id", "")).startswith("fz-")):
            sent[m["id"]] = sent.get(m["id"], 0) + 1
    got: dict = {}
    for r in replies:
        got[r["id"]] = got.get(r["id"], 0) + 1
        assert "ok" not in r, f"a bad call was accepted: {r!r:.300}"
        error = r["error"]
        assert error["name"] in ERROR_NAMES, f"{error!r:.600} for {messages!r:.600}"
        assert isinstance(error["message"], str) and error["message"].strip()
        assert "traceback" not in error
    assert got == sent, f"replies per id {got} for calls per id {sent}"


def test_bad_messages_in_any_order_each_get_one_error_reply_and_change_nothing(page, site_url, durably):
    before = boot(page, site_url, durably)

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch())
    def property_(messages):
        replies = page.evaluate(POST, {"messages": messages, "settleMs": 50})
        check_replies(messages, replies)
        assert durably.call(page, "ping")["protocol"] == PROTOCOL_VERSION

    property_()
    assert page.evaluate(SNAPSHOT) == before, "bad messages changed the database"


def test_an_oversized_call_and_duplicate_ids_get_one_error_reply_each(page, site_url, durably):
    before = boot(page, site_url, durably)
    replies = page.evaluate(
        """async (POST) => {
            const post = eval(POST);
            const big = {job: "chaos-seed", input: "x".repeat(4.5 * 1024 * 1024)};
            return post({settleMs: 300, messages: [
                {type: "call", id: "fz-big", method: "trigger", params: big},
                {type: "call", id: "fz-dup", method: "cancel", params: {id: "nope"}},
                {type: "call", id: "fz-dup", method: "trigger", params: {job: "nope"}},
                {type: "call", id: "fz-dup", method: "nope", params: {}},
                {type: "cal", id: "fz-typo", method: "ping", params: {}},
            ]});
        }""",
        POST,
    )
    assert sorted(r["id"] for r in replies) == ["fz-big", "fz-dup", "fz-dup", "fz-dup", "fz-typo"]
    (typo,) = [r["error"] for r in replies if r["id"] == "fz-typo"]
    assert typo["name"] == "ValidationError" and "unknown message type" in typo["message"]
    (big,) = [r["error"] for r in replies if r["id"] == "fz-big"]
    assert big["name"] == "ValidationError" and "limit" in big["message"]
    assert {r["error"]["name"] for r in replies if r["id"] == "fz-dup"} == {"NotFoundError"}  # no such run, job, method
    assert durably.call(page, "ping")["protocol"] == PROTOCOL_VERSION
    assert page.evaluate(SNAPSHOT) == before
