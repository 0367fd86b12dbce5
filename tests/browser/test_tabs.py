"""Every tab live: one leader runs the jobs, the other tabs follow it with the same page API,
and one of them takes over when the leader goes (web/tabs.js, docs/protocol.md "Tabs").

Three pages of one browser context, on a copy of the site with the chaos job module
(``chaos_jobs``: step bodies that write a ledger of every execution, bench/chaos/browser_jobs.py),
so a tab that takes over imports the job like any job module and resumes its runs.
"""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.browser

JOB = "chaos-steps"
OPTIONS = {"maxConcurrentRuns": 1}
LEDGER = "SELECT kind, run_id, step, worker, t FROM chaos_ledger ORDER BY seq"


def open_tab(context, url, durably, role=None):
    page = context.new_page()
    page.goto(url)
    durably.wait_until_ready(page)
    if role is not None:
        assert page.evaluate("window.durably.role") == role
    return page


def tabs(context, chaos_site_url, durably, n=3):
    url = durably.test_page(chaos_site_url, ["chaos_jobs"], options=OPTIONS)
    leader = open_tab(context, url, durably, "leader")
    followers = [open_tab(context, url, durably, "follower") for _ in range(n - 1)]
    return url, leader, followers


def wait_for_standby(page, timeout=120_000):
    """The standby keeps Python loaded; it says so with a role message once it is warm."""
    page.wait_for_function("window.durably.standby === true", timeout=timeout)


def role_of(page):
    return page.evaluate("window.durably.role")


def ledger(page):
    return page.evaluate("(sql) => window.durably.call('sql', {sql})", LEDGER)["rows"]


def test_the_first_tab_leads_the_others_follow_and_triggers_from_every_tab_run_once_with_events_in_every_tab(
    context, chaos_site_url, durably
):
    _, leader, followers = tabs(context, chaos_site_url, durably)
    assert leader.get_attribute("#status", "data-role") == "leader"
    assert leader.inner_text("#status") == "Ready (leader)."
    for page in followers:
        assert page.get_attribute("#status", "data-role") == "follower"
        assert page.inner_text("#status") == "Ready (follower)."
        # A follower loads no Python of its own: it asked the leader, which answered.
        timings = page.evaluate("window.durably.timings")
        assert "pyodide" not in timings and "leader" in timings
        ping = page.evaluate("window.durably.ping()")
        assert ping["worker_id"] == leader.evaluate("window.durably.ping()")["worker_id"]
        assert page.evaluate("window.durably.jobs()")[0]["name"] == JOB
    # One of the followers (the first in line) becomes the standby.
    wait_for_standby(followers[0])
    assert followers[1].evaluate("window.durably.standby") is False
    roles = [m for m in followers[0].evaluate("window.bootMessages") if m["type"] == "role"]
    assert roles[-1]["role"] == "follower" and roles[-1]["standby"] is True

    pages = [leader, *followers]
    for page in pages:
        page.evaluate("() => { window.seen = []; window.durably.on('run:complete', (e) => window.seen.push(e.run_id)); }")
    ids = []
    for i, page in enumerate(pages):
        for _ in range(2):
            run = page.evaluate("(i) => window.durably.trigger('chaos-steps', {steps: [30, 30]}, {labels: {tab: String(i)}})", i)
            assert run["status"] == "pending" and run["disposition"] == "created"
            ids.append(run["id"])
    assert len(set(ids)) == 6
    for run_id in ids:
        assert followers[1].evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", run_id)["status"] == "completed"
    for page in pages:
        page.wait_for_function("(n) => new Set(window.seen).size >= n", arg=6, timeout=30_000)
        assert sorted(set(page.evaluate("window.seen"))) == sorted(ids)
        assert len(page.evaluate("window.seen")) == 6, "an event reached a tab twice"
    # Each step body ran once, all in the leader.
    rows = ledger(followers[0])
    starts = [(run_id, step) for kind, run_id, step, _, _ in rows if kind == "start"]
    assert sorted(starts) == sorted((run_id, s) for run_id in ids for s in ("s0", "s1"))
    assert {worker for *_, worker, _ in rows} == {leader.evaluate("window.durably.evalPython('import chaos_jobs\\nchaos_jobs.WORKER')")}
    assert len(leader.evaluate("window.durably.getRuns({labels: {tab: '2'}})")) == 2


def test_closing_the_leader_mid_run_hands_over_and_no_committed_step_runs_again(context, chaos_site_url, durably):
    _, leader, (standby, follower) = tabs(context, chaos_site_url, durably)
    wait_for_standby(standby)
    # Subscriptions made in both followers before the hand-over.
    for page in (standby, follower):
        page.evaluate("() => { window.steps = []; window.durably.on('step:complete', (e) => window.steps.push(e.step_name)); }")
    run = follower.evaluate("window.durably.trigger('chaos-steps', {steps: Array(12).fill(150)})")
    follower.wait_for_function("window.steps.length >= 3", timeout=60_000)
    committed = {s["name"] for s in follower.evaluate("(id) => window.durably.getSteps(id)", run["id"])}
    old_worker = leader.evaluate("window.durably.evalPython('import chaos_jobs\\nchaos_jobs.WORKER')")

    leader.close(run_before_unload=True)
    standby.wait_for_function("window.durably.role === 'leader'", timeout=30_000)
    assert standby.get_attribute("#status", "data-role") == "leader"
    done = follower.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", run["id"])
    assert done["status"] == "completed" and done["output"] == {"total": 12 * 150}

    rows = ledger(follower)
    new_worker = standby.evaluate("window.durably.evalPython('import chaos_jobs\\nchaos_jobs.WORKER')")
    assert new_worker != old_worker
    assert {r[3] for r in rows} == {old_worker, new_worker}
    starts: dict[str, int] = {}
    for kind, _, step, _, _ in rows:
        if kind == "start":
            starts[step] = starts.get(step, 0) + 1
    assert sorted(starts) == sorted(f"s{i}" for i in range(12))
    for step in committed:
        assert starts[step] == 1, f"{step} was committed before the hand-over and ran again"
    # At most the one body in flight at the close ran twice.
    assert sum(n - 1 for n in starts.values()) <= 1
    # Both followers kept their subscriptions: the resumed steps' events reached them.
    for page in (standby, follower):
        page.wait_for_function("window.steps.length >= 12", timeout=30_000)
        assert sorted(set(page.evaluate("window.steps"))) == sorted(f"s{i}" for i in range(12))
    # The remaining follower follows the new leader, and says so.
    roles = [m for m in follower.evaluate("window.bootMessages") if m["type"] == "role"]
    assert roles and roles[-1]["role"] == "follower"
    assert follower.evaluate("window.durably.ping()")["worker_id"] == standby.evaluate("window.durably.ping()")["worker_id"]


def test_calls_in_flight_across_a_hand_over_are_answered_exactly_once(context, chaos_site_url, durably):
    _, leader, (standby, follower) = tabs(context, chaos_site_url, durably)
    wait_for_standby(standby)
    slow = follower.evaluate("window.durably.trigger('chaos-steps', {steps: Array(8).fill(150)})")
    # A wait and a stream of triggers in flight while the leader closes.
    follower.evaluate(
        """(id) => {
            const d = window.durably;
            window.waited = d.waitForRun(id, {timeout: 60}).then((r) => r.status, (e) => e.name);
            window.answers = [];
            window.calls = [];
            window.stop = false;
            (async () => {
                for (let i = 0; !window.stop; i++) {
                    const p = d.trigger('chaos-steps', {steps: [1]}, {labels: {burst: 'x', n: String(i)}})
                        .then((r) => window.answers.push({i, id: r.id}), (e) => window.answers.push({i, error: e.name}));
                    window.calls.push(p);
                    await new Promise((r) => setTimeout(r, 5));
                }
            })();
        }""",
        slow["id"],
    )
    time.sleep(0.5)
    leader.close(run_before_unload=True)
    standby.wait_for_function("window.durably.role === 'leader'", timeout=30_000)
    time.sleep(0.3)
    follower.evaluate("window.stop = true")
    follower.evaluate("Promise.all(window.calls)")
    answers = follower.evaluate("window.answers")
    assert follower.evaluate("window.waited") == "completed"
    assert len(answers) == len({a["i"] for a in answers}), "a call was answered twice"
    assert len(answers) > 20
    assert [a for a in answers if "error" in a] == []
    runs = follower.evaluate("window.durably.getRuns({labels: {burst: 'x'}, limit: 1000})")
    # One run per answered trigger, no more: a trigger sent again after the hand-over was
    # answered from the new leader's record, not run a second time.
    assert sorted(r["id"] for r in runs) == sorted(a["id"] for a in answers)
    assert len({r["labels"]["n"] for r in runs}) == len(runs)


# A stand-in for a follower, in the page itself (a BroadcastChannel of the same origin):
# it sends calls with request ids of its choosing, as a follower's worker does.
FAKE_FOLLOWER = """async ({rid, params, timeoutMs}) => {
    const ch = new BroadcastChannel("durably-tabs");
    const leader = await new Promise((resolve) => {
        ch.onmessage = ({data}) => { if (data.kind === "leader" && data.state === "ready") resolve(data.from); };
        ch.postMessage({kind: "hello", from: "fake", protocol: window.durably.protocol});
    });
    const reply = await new Promise((resolve, reject) => {
        ch.onmessage = ({data}) => { if (data.kind === "reply" && data.to === "fake" && data.rid === rid) resolve(data.body); };
        ch.postMessage({kind: "call", from: "fake", to: leader, rid, method: "trigger", params});
        setTimeout(() => reject(new Error("no reply")), timeoutMs);
    });
    ch.close();
    return {leader, reply};
}"""


def test_a_leader_reloaded_mid_call_hands_over_a_repeated_request_runs_once_and_an_unsafe_call_fails(
    context, chaos_site_url, durably
):
    _, leader, (standby, follower) = tabs(context, chaos_site_url, durably)
    wait_for_standby(standby)
    params = {"job": JOB, "input": {"steps": [1]}, "labels": {"once": "yes"}}
    first = follower.evaluate(FAKE_FOLLOWER, {"rid": "fake:1", "params": params, "timeoutMs": 10_000})
    # A call that is not safe to repeat, in flight when the leader goes.
    follower.evaluate(
        "() => { window.evaluated = window.durably.evalPython('import asyncio\\nawait asyncio.sleep(30)').then(() => null, (e) => ({name: e.name, message: e.message})); }"
    )
    time.sleep(0.3)
    leader.reload()
    error = follower.evaluate("window.evaluated")
    assert error["name"] == "HandoverError"
    assert "may or may not have run" in error["message"] and "retry" in error["message"]
    standby.wait_for_function("window.durably.role === 'leader'", timeout=30_000)

    # The trigger ran and was answered; suppose that answer was lost with the old leader:
    # sent again with its request id, it gets the same answer and makes no second run.
    again = follower.evaluate(FAKE_FOLLOWER, {"rid": "fake:1", "params": params, "timeoutMs": 10_000})
    assert again["leader"] != first["leader"]
    assert again["reply"] == first["reply"] and first["reply"]["ok"]["disposition"] == "created"
    other = follower.evaluate(FAKE_FOLLOWER, {"rid": "fake:2", "params": params, "timeoutMs": 10_000})
    assert other["reply"]["ok"]["id"] != first["reply"]["ok"]["id"]
    runs = follower.evaluate("window.durably.getRuns({labels: {once: 'yes'}})")
    assert sorted(r["id"] for r in runs) == sorted([first["reply"]["ok"]["id"], other["reply"]["ok"]["id"]])

    # The reloaded tab comes back as a follower of the tab that took over.
    durably.wait_until_ready(leader)
    assert role_of(leader) == "follower" and role_of(standby) == "leader"
    assert follower.evaluate("window.durably.ping()")["worker_id"] == standby.evaluate("window.durably.ping()")["worker_id"]
    run = leader.evaluate("window.durably.trigger('chaos-steps', {steps: [10]})")
    assert follower.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", run["id"])["status"] == "completed"


# A stand-in for the tab holding the database, in a page of its own: it takes the Web Lock
# and answers hellos as a leader of another protocol version would (or not at all).
FAKE_LEADER = """({protocol}) => new Promise((held) => {
    navigator.locks.request("durably-db", () => {
        const ch = new BroadcastChannel("durably-tabs");
        window.notices = [];
        ch.onmessage = ({data}) => {
            if (data.kind === "hello" && protocol !== null) ch.postMessage({kind: "leader", from: "old", protocol, state: "ready", jobs: []});
            if (data.kind === "outdated") window.notices.push(data);
        };
        held(true);
        return new Promise(() => {});
    });
})"""


@pytest.mark.parametrize("leader_protocol", ["older", "newer", "silent"])
def test_tabs_of_two_versions_of_the_site_say_which_one_to_reload(context, chaos_site_url, durably, leader_protocol):
    holder = context.new_page()
    holder.goto(chaos_site_url + "manifest.json")  # a page of the origin that boots no worker
    own = holder.evaluate("fetch('manifest.json').then((r) => r.json()).then((m) => m.protocol)")
    protocol = {"older": own - 1, "newer": own + 1, "silent": None}[leader_protocol]
    assert holder.evaluate(FAKE_LEADER, {"protocol": protocol}) is True

    page = context.new_page()
    page.goto(durably.test_page(chaos_site_url, ["chaos_jobs"]))
    if leader_protocol == "newer":
        page.wait_for_function("window.connectError", timeout=30_000)
        error = page.evaluate("window.connectError")
        assert (error["name"], error["phase"]) == ("BootError", "leader")
        assert "This tab runs an older version of the site than another open tab" in error["message"]
        assert error["message"].endswith("reload this tab.")
        return
    page.wait_for_function("document.getElementById('status').dataset.state === 'waiting'", timeout=30_000)
    status = page.inner_text("#status")
    if leader_protocol == "older":
        assert "Another tab of this site runs an older version of it" in status and "reload or close that tab" in status
        holder.wait_for_function("window.notices.length > 0")
        assert holder.evaluate("window.notices[0].protocol") == own
    else:
        assert "does not answer" in status and "Reload or close that tab" in status
    # The tab holding the database goes: this one takes over and is ready as the leader.
    holder.close()
    durably.wait_until_ready(page)
    assert role_of(page) == "leader"
    run = page.evaluate("window.durably.trigger('chaos-steps', {steps: [1]})")
    assert page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", run["id"])["status"] == "completed"


# -- the demo page: roles and storage, as a visitor sees them ------------------------------


def open_demo(context, site_url, durably, init_script=None):
    page = context.new_page()
    if init_script:
        page.add_init_script(init_script)
    page.goto(site_url)
    durably.wait_until_ready(page)
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_selector("#job-select option", state="attached")
    return page


def test_the_demo_says_which_role_each_tab_has_and_a_followers_run_shows_in_every_tab(context, site_url, durably):
    first = open_demo(context, site_url, durably)
    second = open_demo(context, site_url, durably)
    assert first.get_attribute("#role", "data-role") == "leader"
    assert first.inner_text("#role") == "This tab runs the jobs (leader). Other tabs of this site use it."
    assert second.get_attribute("#role", "data-role") == "follower"
    assert second.inner_text("#role").startswith("Jobs run in another tab of this site (this tab follows it)")
    # A visitor triggers a job in the follower: it runs in the leader and shows in both tabs.
    second.select_option("#job-select", "slow")
    second.fill("#job-input", json.dumps({"steps": 2, "seconds": 0.1}))
    second.click("#trigger-btn")
    second.wait_for_selector('#runs tbody tr[data-status="completed"]', timeout=60_000)
    first.wait_for_selector('#runs tbody tr[data-status="completed"]', timeout=60_000)
    first.close(run_before_unload=True)
    second.wait_for_selector('#role[data-role="leader"]', timeout=60_000)
    assert second.inner_text("#role").startswith("This tab runs the jobs (leader)")


COUNT_PERSIST = """
window.persistCalls = 0;
const persist = navigator.storage.persist.bind(navigator.storage);
navigator.storage.persist = () => { window.persistCalls += 1; return persist(); };
"""


def test_persistent_storage_is_asked_for_when_a_job_is_first_triggered_and_usage_is_shown(context, site_url, durably):
    page = open_demo(context, site_url, durably, COUNT_PERSIST)
    page.wait_for_selector("#storage:not([hidden])")
    assert page.inner_text("#storage").startswith("Storage: ") and " used of " in page.inner_text("#storage")
    assert page.evaluate("window.persistCalls") == 0  # not before the visitor does anything
    for _ in range(2):
        page.select_option("#job-select", "slow")
        page.fill("#job-input", json.dumps({"steps": 1, "seconds": 0}))
        page.click("#trigger-btn")
        page.wait_for_function("window.persistCalls >= 1")
    assert page.evaluate("window.persistCalls") == 1  # once, on the first trigger
    report = page.evaluate("window.durably.storage()")
    assert report["type"] == "storage" and report["quota"] > 0 and report["usage"] >= 0
    assert isinstance(report["persisted"], bool) and report["warning"] is None
    assert page.is_hidden("#notice")


# Chromium's DevTools quota override (Storage.overrideQuotaForOrigin) limits writes but does
# not change what navigator.storage.estimate() reports, so the test sets what it reports.
FAKE_ESTIMATE = """
window.fakeEstimate = null;
const estimate = navigator.storage.estimate.bind(navigator.storage);
navigator.storage.estimate = () => (window.fakeEstimate ? Promise.resolve(window.fakeEstimate) : estimate());
"""


def test_a_warning_is_shown_when_storage_use_passes_80_percent_of_the_quota(context, site_url, durably):
    page = open_demo(context, site_url, durably, FAKE_ESTIMATE)
    page.evaluate("window.fakeEstimate = {usage: 790_000_000, quota: 1_000_000_000}")
    assert page.evaluate("window.durably.storage()")["warning"] is None
    assert page.inner_text("#storage").startswith("Storage: 790.0 MB used of 1.0 GB")
    page.evaluate("window.fakeEstimate = {usage: 850_000_000, quota: 1_000_000_000}")
    report = page.evaluate("window.durably.storage()")
    assert report["warning"] == (
        "This site's storage is 85% full (850.0 MB of 1.0 GB): delete old runs (purgeRuns) or free disk space, "
        "or new steps may fail to be stored."
    )
    page.wait_for_selector("#notice:not([hidden])")
    assert page.inner_text("#notice") == report["warning"]
    assert page.get_attribute("#notice", "data-source") == "storage"
    # Room again (old runs purged): the warning goes.
    page.evaluate("window.fakeEstimate = {usage: 100_000_000, quota: 1_000_000_000}")
    assert page.evaluate("window.durably.storage()")["warning"] is None
    page.wait_for_selector("#notice", state="hidden")
