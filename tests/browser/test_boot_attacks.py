"""The boot from the snapshot under faults: this browser's copy of the snapshot damaged, in
the way, or written by several tabs at once; a storage quota too small for it; a failed
compile of pyodide.asm.wasm ahead of the restore. Whatever happens to the copy, every tab
reaches ready on a Python that works, and a copy that is not whole is never restored.
"""

from __future__ import annotations

import json
import time

import pytest

from test_offline import serve, sw_context  # noqa: F401 (fixtures of test_offline.py, used here)
from test_snapshot import (
    KEPT,
    KEPT_LOG,
    ZONES,
    ZONES_SEEN,
    built_manifest,
    open_and_keep,
    reopen,
    serve_manifest,
    snapshot_messages,
    wait_for_kept,
    wait_until,
)

pytestmark = pytest.mark.browser

JOBS = ["approval", "crunch", "flaky", "import-csv", "slow"]


def works(page, durably) -> None:
    """Python and the runtime work: the zips on sys.path, the job modules, a run."""
    assert durably.eval(page, ZONES) == ZONES_SEEN
    assert [j["name"] for j in durably.call(page, "jobs")] == JOBS
    run = durably.call(page, "trigger", {"job": "crunch", "input": {"n": 3}})
    done = page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 60})", run["id"])
    assert done["status"] == "completed", done


def write_opfs(page, js_body: str, arg=None):
    """Run ``js_body`` (with ``root``, the origin's OPFS root, and ``arg``) in the page."""
    return page.evaluate(f"async (arg) => {{ const root = await navigator.storage.getDirectory(); {js_body} }}", arg)


def test_a_copy_whose_header_is_whole_but_whose_body_is_garbage_never_breaks_the_boot(
    context, built_site, site_url, durably
):
    entry = built_manifest(built_site)["snapshot"]
    page = context.new_page()
    open_and_keep(page, site_url, durably)
    # Same size, Pyodide's header (magic number, build id, the JS objects) intact, every byte
    # after the first MiB replaced: only a check of the whole copy can tell.
    write_opfs(
        page,
        """
        const dir = await root.getDirectoryHandle("durably-snapshot");
        const h = await dir.getFileHandle(arg.name);
        const w = await h.createWritable({keepExistingData: true});
        const junk = new Uint8Array(arg.size - 2 ** 20);
        for (let i = 0; i < junk.length; i++) junk[i] = (i * 2654435761) >>> 24;
        await w.write({type: "write", position: 2 ** 20, data: junk});
        await w.close();
        """,
        {"name": f"{entry['key']}.bin", "size": entry["bytes"]},
    )
    assert page.evaluate(KEPT) == {f"{entry['key']}.bin": entry["bytes"]}
    reopen(context, page, site_url, durably)
    [_, done] = snapshot_messages(page)
    print("snapshot phase after a garbage body:", done)
    works(page, durably)


def test_a_part_file_and_another_deploys_copy_are_removed_when_the_copy_is_kept(context, built_site, site_url, durably):
    entry = built_manifest(built_site)["snapshot"]
    probe = context.new_page()
    probe.goto(f"{site_url}manifest.json")
    write_opfs(
        probe,
        """
        const dir = await root.getDirectoryHandle("durably-snapshot", {create: true});
        for (const [name, size] of arg) {
            const w = await (await dir.getFileHandle(name, {create: true})).createWritable();
            await w.write(new Uint8Array(size));
            await w.close();
        }
        """,
        [[f"{entry['key']}.bin.part", entry["bytes"] // 2], ["0123456789abcdef.bin.part", 10]],
    )
    page = context.new_page()
    open_and_keep(page, site_url, durably)
    assert page.evaluate(KEPT) == {f"{entry['key']}.bin": entry["bytes"]}
    reopen(context, page, site_url, durably)
    [_, done] = snapshot_messages(page)
    assert done["detail"].startswith("Python restored from this browser's copy"), done


def test_a_file_where_the_copys_folder_goes_does_not_stop_the_boot_and_the_copy_is_kept(
    context, built_site, site_url, durably
):
    entry = built_manifest(built_site)["snapshot"]
    probe = context.new_page()
    probe.goto(f"{site_url}manifest.json")
    write_opfs(
        probe,
        """
        const w = await (await root.getFileHandle("durably-snapshot", {create: true})).createWritable();
        await w.write(new Uint8Array(100));
        await w.close();
        """,
    )
    page = context.new_page()
    open_and_keep(page, site_url, durably)
    works(page, durably)
    assert page.evaluate(KEPT) == {f"{entry['key']}.bin": entry["bytes"]}


def test_three_tabs_opened_together_on_a_first_visit_all_boot_and_leave_one_whole_copy(
    context, built_site, site_url, durably
):
    entry = built_manifest(built_site)["snapshot"]
    url = durably.test_page(site_url, ["demo_jobs"])
    pages = [context.new_page() for _ in range(3)]
    for page in pages:
        page.goto(url, wait_until="commit")
    for page in pages:
        durably.wait_until_ready(page)
    assert sorted(p.evaluate("window.durably.role") for p in pages) == ["follower", "follower", "leader"]
    wait_for_kept(pages[0], {f"{entry['key']}.bin": entry["bytes"]})
    leader = next(p for p in pages if p.evaluate("window.durably.role") == "leader")
    works(leader, durably)
    for page in pages[1:]:
        page.close()
    reopen(context, pages[0], site_url, durably)
    [_, done] = snapshot_messages(pages[0])
    assert done["detail"].startswith("Python restored from this browser's copy"), done


def test_every_tab_reloaded_while_the_copy_is_written_boots_again_and_never_restores_half_a_copy(
    context, built_site, site_url, durably
):
    entry = built_manifest(built_site)["snapshot"]
    url = durably.test_page(site_url, ["demo_jobs"])
    pages = [context.new_page() for _ in range(2)]
    for page in pages:
        page.goto(url, wait_until="commit")
    # As soon as the leader's restore is done (the download worker is writing its copy then):
    # only the tab that leads reports a snapshot phase.
    restored = "(window.bootMessages || []).some(m => m.phase === 'snapshot' && m.state !== 'start')"
    deadline = time.monotonic() + 120
    while not any(page.evaluate(restored) for page in pages):
        assert time.monotonic() < deadline, "no tab restored Python within 120 s"
        pages[0].wait_for_timeout(20)
    for page in pages:
        page.reload(wait_until="commit")
    for page in pages:
        durably.wait_until_ready(page)
    kept = pages[0].evaluate(KEPT)
    assert kept in ({}, {f"{entry['key']}.bin": entry["bytes"]}) or all(n.endswith(".part") for n in kept), kept
    for page in pages:
        for message in snapshot_messages(page):
            assert message["state"] in ("start", "done"), message
    leader = next(p for p in pages if p.evaluate("window.durably.role") == "leader")
    works(leader, durably)


def test_a_storage_quota_too_small_for_the_copy_leaves_the_boot_and_the_database_working(
    context, built_site, site_url, durably
):
    probe = context.new_page()
    probe.goto(f"{site_url}manifest.json")
    cdp = context.new_cdp_session(probe)
    origin = site_url.rstrip("/")
    # Room for the database, not for the 31.5 MB copy.
    cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": 12 * 2**20})
    seen = probe.evaluate("navigator.storage.estimate()")
    print("estimate under the override:", seen)
    logs = []
    context.on("console", lambda m: logs.append(m.text))
    page = context.new_page()
    page.on("console", lambda m: logs.append(m.text))
    page.on("worker", lambda w: w.on("console", lambda m: logs.append(m.text)))
    durably.open(page, site_url, ["demo_jobs"])
    works(page, durably)
    for _ in range(5):
        works(page, durably)
    print("kept under the override:", page.evaluate(KEPT))
    print("logs:", [line for line in logs if "snapshot" in line])
    reopen(context, page, site_url, durably)
    print("boot messages after the reopen:", page.evaluate("window.bootMessages"))
    [_, done] = snapshot_messages(page)
    assert done["state"] == "done", done
    works(page, durably)


def test_a_failed_compile_of_pyodide_asm_wasm_ahead_of_the_restore_leaves_it_to_pyodide(context, site_url, durably):
    seen = []

    def first_get_truncated(route):
        if route.request.method != "GET":
            route.continue_()
            return
        seen.append(route.request.url)
        if len(seen) == 1:
            response = route.fetch()
            route.fulfill(response=response, body=response.body()[:100_000])
        else:
            route.continue_()

    context.route("**/pyodide.asm.wasm", first_get_truncated)
    page = context.new_page()
    durably.open(page, site_url, ["demo_jobs"])
    [_, done] = snapshot_messages(page)
    assert done["state"] == "done", done
    assert len(seen) == 2, seen
    works(page, durably)


def test_a_tab_of_another_deploys_snapshot_key_follows_and_the_leader_keeps_working(
    context, built_site, site_url, durably
):
    entry = built_manifest(built_site)["snapshot"]
    page = context.new_page()
    open_and_keep(page, site_url, durably)
    other = "f" * 64
    serve_manifest(context, lambda m: m["snapshot"].update(key=other))
    second = context.new_page()
    durably.open(second, site_url, ["demo_jobs"])
    assert second.evaluate("window.durably.role") == "follower"
    second.wait_for_function("window.durably.standby === true", timeout=120_000)
    wait_for_kept(page, {f"{other}.bin": entry["bytes"]})
    works(page, durably)
    works(second, durably)
    print(json.dumps(snapshot_messages(second)))


DISCARDED_LOG = "[durably] no copy of the Python snapshot is kept"


def test_a_downloaded_snapshot_that_does_not_restore_is_not_kept_as_this_browsers_copy(
    context, built_site, site_url, durably
):
    entry = built_manifest(built_site)["snapshot"]
    # A snapshot that downloads, checks and unzips, but is not this site's: its key differs.
    serve_manifest(context, lambda m: m["versions"].update(pyodide=m["versions"]["pyodide"] + "-other"))
    page = context.new_page()
    with page.expect_console_message(
        lambda m: m.text.startswith(KEPT_LOG) or m.text.startswith(DISCARDED_LOG), timeout=120_000
    ) as message:
        durably.open(page, site_url, ["demo_jobs"])
    [_, fallback] = snapshot_messages(page)
    assert fallback["state"] == "fallback", fallback
    # Never kept: the next boot would restore it only to fall back again.
    assert message.value.text.startswith(DISCARDED_LOG), message.value.text
    assert page.evaluate(KEPT) == {}
    works(page, durably)
    assert entry["bytes"] > 0


def test_offline_without_this_browsers_copy_the_service_worker_still_serves_the_snapshot(
    production_site,
    serve,  # noqa: F811
    sw_context,  # noqa: F811
):
    from test_offline import wait_offline_ready, wait_ready

    server = serve(production_site)
    page = sw_context.new_page()
    page.goto(server.url)
    wait_ready(page)
    wait_offline_ready(page)
    entry = json.loads((production_site / "manifest.json").read_text())["snapshot"]
    wait_for_kept(page, {f"{entry['key']}.bin": entry["bytes"]})
    server.stop()
    sw_context.set_offline(True)
    # With the copy, then without it (removed while offline): both boot from the snapshot.
    for remove in (False, True):
        if remove:
            page.evaluate(
                """async () => (await navigator.storage.getDirectory()).removeEntry("durably-snapshot", {recursive: true})"""
            )
        # Reopened once the old worker let the lock go, so that this tab leads and boots
        # (a reload may follow the closing worker and take over without a snapshot phase).
        page.goto("about:blank")
        probe = sw_context.new_page()
        probe.goto(f"{server.url}manifest.json")
        wait_until(probe, "async () => !(await navigator.locks.query()).held.some((l) => l.name === 'durably-db')")
        probe.close()
        page.goto(server.url)
        wait_ready(page)
        assert page.inner_text("#status").endswith("; Python from its memory snapshot)."), page.inner_text("#status")


@pytest.mark.parametrize("phase", ["sqlite", "snapshot", "install", "pool", "open", "import", "start"])
def test_a_reload_at_any_boot_phase_loses_no_committed_step_of_a_run_in_progress(context, site_url, durably, phase):
    page = context.new_page()
    durably.open(page, site_url, ["demo_jobs"])
    run = durably.call(page, "trigger", {"job": "slow", "input": {"steps": 3, "seconds": 1}})
    wait_until(
        page,
        "async (id) => (await window.durably.getSteps(id)).some((s) => s.name === 'step-1' && s.status === 'completed')",
        run["id"],
    )
    # Leave mid-run, come back as the leader, and reload again when the boot reaches `phase`.
    page.goto("about:blank")
    probe = context.new_page()
    probe.goto(f"{site_url}manifest.json")
    wait_until(probe, "async () => !(await navigator.locks.query()).held.some((l) => l.name === 'durably-db')")
    probe.close()
    page.goto(durably.test_page(site_url, ["demo_jobs"]), wait_until="commit")
    page.wait_for_function(
        "(phase) => (window.bootMessages || []).some((m) => m.type === 'boot' && m.phase === phase && m.state === 'start')",
        arg=phase,
        timeout=120_000,
    )
    page.reload()
    durably.wait_until_ready(page)
    done = page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 90})", run["id"])
    assert done["status"] == "completed", done
    full = page.evaluate("(id) => window.durably.getLogs(id)", run["id"])
    logs = [entry["message"] for entry in full]
    assert logs.count("step-1 executing") == 1, logs
    assert [s["name"] for s in page.evaluate("(id) => window.durably.getSteps(id)", run["id"])] == [
        "step-1",
        "step-2",
        "step-3",
    ]
