"""Python from the site's memory snapshot: this page's own, and a normal boot when it cannot be.

The build makes the snapshot in Node (scripts/snapshot.mjs); the worker restores it
(web/snapshot.js). What the build machine froze into it (random's state, LANG, the time
zone, sys.executable) must be this browser's after the restore, and a snapshot that is
missing, corrupted, not a snapshot, or made from other inputs must never stop the page:
the snapshot phase says why it was not used, and Python starts from Pyodide's files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]

WITH_SNAPSHOT = ["lock", "sqlite", "pool", "open", "snapshot", "install", "import", "start"]
FALLEN_BACK = ["lock", "sqlite", "pool", "open", "snapshot", "pyodide", "install", "import", "start"]


def snapshot_messages(page) -> list[dict]:
    return page.evaluate("window.bootMessages.filter(m => m.type === 'boot' && m.phase === 'snapshot')")


def built_manifest(built_site) -> dict:
    return json.loads((built_site / "manifest.json").read_text())


def serve_manifest(context, change) -> None:
    """Serve the site's manifest.json as changed by ``change(manifest)``."""

    def handle(route):
        response = route.fetch()
        manifest = response.json()
        change(manifest)
        route.fulfill(response=response, json=manifest)

    context.route("**/manifest.json", handle)


# A schedule's time zone and cron expression, read in the worker (tzdata and cronsim).
ZONES = (
    "from datetime import datetime, timezone\nfrom durably.schedules import Schedule\n"
    "s = Schedule('0 9 * * *', 'Europe/Paris')\n"
    "s.next_after(datetime(2026, 7, 5, tzinfo=timezone.utc)).isoformat()"
)
ZONES_SEEN = "2026-07-05T07:00:00+00:00"


def test_python_comes_from_the_snapshot_with_this_browsers_time_zone_language_and_randomness(
    browser, site_url, durably
):
    context = browser.new_context(timezone_id="America/New_York", locale="de-DE")
    try:
        page = context.new_page()
        timings = durably.open(page, site_url, ["demo_jobs"])
        assert list(timings) == WITH_SNAPSHOT
        [start, done] = snapshot_messages(page)
        assert start["state"] == "start"
        assert done["state"] == "done"
        assert re.fullmatch(r"Python restored from snapshots/[0-9a-f]{16}\.gz \(\d+\.\d MB\)", done["detail"]), done
        assert f"snapshot: {timings['snapshot']} ms" in page.inner_text("#phases")

        seen = durably.eval(
            page,
            "import os, random, sys, time\n"
            "[os.environ['LANG'], list(time.tzname), time.timezone, time.altzone, time.daylight,\n"
            " time.strftime('%Z', time.localtime(1767225600)), time.strftime('%Z', time.localtime(1782864000)),\n"
            " sys.executable, os.environ['_'], len(sys.path) == len(set(sys.path)), sys._emscripten_info.runtime,\n"
            " random.getrandbits(64)]",
        )
        # As a Pyodide started in this browser computes them (Emscripten's tzset, CPython's
        # init_timezone), not as the build machine did: 1 January 2026 is EST, 1 July EDT.
        assert seen[:-1] == [
            "de_DE.UTF-8",
            ["UTC-0500", "UTC-0400"],
            5 * 3600,
            4 * 3600,
            1,
            "UTC-0500",
            "UTC-0400",
            "/home/pyodide/this.program",  # not the path of the build's script
            "./this.program",
            True,
            page.evaluate("navigator.userAgent"),  # not "Node.js v20..."
        ]
        # C calls go through this browser's call trampoline, not the build machine's, whose JS
        # frames overflowed the JS stack in deep C recursion and crashed Pyodide (no reply
        # ever came: hence the timeout here).
        deep = page.evaluate(
            """(code) => Promise.race([
                window.durably.evalPython(code),
                new Promise((resolve) => setTimeout(() => resolve("no answer within 30 s"), 30000)),
            ])""",
            "import json\nx = 1\nfor _ in range(5000):\n    x = [x]\nlen(json.dumps(x))",
        )
        assert deep == 5000 * 2 + 1
        # durably's dependencies (zip files on sys.path) work after a restore: time zones
        # from tzdata, cron expressions from cronsim.
        assert durably.eval(page, ZONES) == ZONES_SEEN

        # random is seeded again at every restore, not once on the build machine.
        reopen(context, page, site_url, durably)
        assert [m["state"] for m in snapshot_messages(page)] == ["start", "done"]
        assert durably.eval(page, "import random\nrandom.getrandbits(64)") != seen[-1]
    finally:
        context.close()


# This browser's copy of the snapshot (web/snapshot.js: keepSnapshot): {file name: size}.
KEPT = """async () => {
    const out = {};
    try {
        const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("durably-snapshot");
        for await (const [name, handle] of dir.entries()) out[name] = (await handle.getFile()).size;
    } catch {}
    return out;
}"""


KEPT_LOG = "[durably] kept a copy of the Python snapshot"


def open_and_keep(page, site_url, durably) -> None:
    """Open the test page and wait until the worker has kept its copy of the snapshot."""
    with page.expect_console_message(lambda m: m.text.startswith(KEPT_LOG), timeout=60_000):
        durably.open(page, site_url, ["demo_jobs"])


def wait_until(page, predicate: str, arg=None, timeout: float = 60) -> None:
    """Wait until the async JS function ``predicate`` resolves to a true value.

    page.wait_for_function() cannot: it does not await a function's promise, and a promise
    is true, so an async predicate returns at once."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(predicate, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        page.wait_for_timeout(50)


def wait_for_kept(page, expected: dict) -> None:
    text = json.dumps(expected, separators=(",", ":"))  # as JSON.stringify writes it
    wait_until(page, f"async () => JSON.stringify(await ({KEPT})()) === {json.dumps(text)}")


def reopen(context, page, site_url, durably) -> None:
    """Leave the page, wait until its worker has let the database's lock go, and open it
    again: the tab leads at once and boots (a reload may first follow the closing worker,
    and then take over without a snapshot phase of its own)."""
    url = page.url
    page.goto("about:blank")
    probe = context.new_page()
    probe.goto(f"{site_url}manifest.json")
    wait_until(probe, "async () => !(await navigator.locks.query()).held.some((l) => l.name === 'durably-db')")
    probe.close()
    page.goto(url)
    durably.wait_until_ready(page)
    assert page.evaluate("window.durably.role") == "leader"


def test_a_later_boot_restores_this_browsers_copy_of_the_snapshot_without_downloading_it(
    context, built_site, site_url, durably
):
    entry = built_manifest(built_site)["snapshot"]
    # Another deploy's copy, left in this browser: removed when this one is kept.
    context.new_page().goto(f"{site_url}manifest.json")
    context.pages[0].evaluate(
        """async () => {
            const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("durably-snapshot", {create: true});
            const w = await (await dir.getFileHandle("0123456789abcdef.bin", {create: true})).createWritable();
            await w.write(new Uint8Array(1000));
            await w.close();
        }"""
    )
    page = context.new_page()
    open_and_keep(page, site_url, durably)
    [_, done] = snapshot_messages(page)
    assert done["detail"].startswith("Python restored from snapshots/"), done
    assert page.evaluate(KEPT) == {f"{entry['key']}.bin": entry["bytes"]}

    downloads = []
    context.on("request", lambda request: downloads.append(request.url) if "/snapshots/" in request.url else None)
    reopen(context, page, site_url, durably)
    timings = page.evaluate("window.durably.timings")
    assert list(timings) == WITH_SNAPSHOT
    [_, done] = snapshot_messages(page)
    assert done["state"] == "done"
    assert re.fullmatch(
        r"Python restored from this browser's copy of snapshots/[0-9a-f]{16}\.gz \(\d+\.\d MB\)", done["detail"]
    ), done
    assert downloads == []
    # Python works as after a download: the zips on sys.path (micropip, tzdata, cronsim), the
    # job modules, a run.
    assert durably.eval(page, "import micropip\nmicropip.__version__") == "0.11.1"
    assert durably.eval(page, ZONES) == ZONES_SEEN
    assert [j["name"] for j in durably.call(page, "jobs")] == ["approval", "crunch", "flaky", "import-csv", "slow"]
    run = durably.call(page, "trigger", {"job": "crunch", "input": {"n": 3}})
    done = page.evaluate("(id) => window.durably.waitForRun(id, {timeout: 30})", run["id"])
    assert done["status"] == "completed", done


def _zeroed(page, entry):
    # The right size, but not a snapshot: the restore refuses it.
    return entry["bytes"], "Snapshot has invalid magic number"


def _cut_short(page, entry):
    # Not the size the site's snapshot unzips to: never restored, downloaded instead.
    return entry["bytes"] // 2, None


@pytest.mark.parametrize("fault", [_zeroed, _cut_short], ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_copy_of_the_snapshot_is_never_used_and_a_whole_one_replaces_it(
    context, built_site, site_url, durably, fault
):
    entry = built_manifest(built_site)["snapshot"]
    kept = {f"{entry['key']}.bin": entry["bytes"]}
    page = context.new_page()
    open_and_keep(page, site_url, durably)
    assert page.evaluate(KEPT) == kept
    size, reason = fault(page, entry)
    page.evaluate(
        """async ([name, size]) => {
            const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle("durably-snapshot");
            const w = await (await dir.getFileHandle(name)).createWritable();
            await w.write(new Uint8Array(size));
            await w.close();
        }""",
        [f"{entry['key']}.bin", size],
    )

    reopen(context, page, site_url, durably)
    [_, first] = snapshot_messages(page)
    if reason:
        # Python starts without the snapshot this once, and the copy is removed...
        assert first["state"] == "fallback" and reason in first["detail"], first
        assert list(page.evaluate("window.durably.timings")) == FALLEN_BACK
        wait_for_kept(page, {})
        assert durably.eval(page, ZONES) == ZONES_SEEN
        # ...so the next boot downloads the snapshot again, and keeps a whole copy.
        reopen(context, page, site_url, durably)
        [_, first] = snapshot_messages(page)
    assert first["state"] == "done"
    assert first["detail"].startswith("Python restored from snapshots/"), first
    wait_for_kept(page, kept)
    assert durably.eval(page, ZONES) == ZONES_SEEN


def _corrupted(context, built_site):
    context.route(
        "**/snapshots/*.gz", lambda route: route.fulfill(status=200, body=b"\x1f\x8b" + b"not the snapshot" * 64)
    )
    return "is not the snapshot this site was built with (SHA-256"


def _missing(context, built_site):
    context.route("**/snapshots/*.gz", lambda route: route.fulfill(status=404, body="gone"))
    return "HTTP 404"


def _not_a_snapshot(context, built_site):
    # Right size, right checksum in the manifest, valid gzip: only Pyodide's own check is left.
    entry = built_manifest(built_site)["snapshot"]
    body = gzip.compress(bytes(entry["bytes"]))
    context.route("**/snapshots/*.gz", lambda route: route.fulfill(status=200, body=body))
    serve_manifest(context, lambda m: m["snapshot"].update(sha256=hashlib.sha256(body).hexdigest()))
    return "Snapshot has invalid magic number"


def _made_from_other_inputs(context, built_site):
    # A snapshot of another build of the site: it restores, but its key is not this manifest's.
    serve_manifest(context, lambda m: m["versions"].update(pyodide=m["versions"]["pyodide"] + "-other"))
    return "it was made from other wheels, job modules or Pyodide than this site lists"


@pytest.mark.parametrize(
    "fault", [_corrupted, _missing, _not_a_snapshot, _made_from_other_inputs], ids=lambda f: f.__name__.strip("_")
)
def test_a_snapshot_that_cannot_be_used_falls_back_to_a_normal_boot_and_says_why(
    context, built_site, site_url, durably, fault
):
    reason = fault(context, built_site)
    page = context.new_page()
    timings = durably.open(page, site_url, ["demo_jobs"])
    assert list(timings) == FALLEN_BACK
    [_, fallback] = snapshot_messages(page)
    assert fallback["state"] == "fallback"
    assert fallback["ms"] == timings["snapshot"]
    assert fallback["detail"].startswith("The memory snapshot could not be used (")
    assert fallback["detail"].endswith("); starting Python without it.")
    assert reason in fallback["detail"]
    shown = page.inner_text('#phases li[data-phase="snapshot"]')
    assert shown.startswith(f"snapshot: not used ({timings['snapshot']} ms): The memory snapshot could not be used")
    # and the page works as after any boot
    assert [j["name"] for j in durably.call(page, "jobs")] == ["approval", "crunch", "flaky", "import-csv", "slow"]
    assert durably.eval(page, "import micropip\nmicropip.__version__") == "0.11.1"
    assert durably.eval(page, ZONES) == ZONES_SEEN


def test_a_site_without_a_snapshot_boots_without_the_phase(context, site_url, durably):
    serve_manifest(context, lambda m: m.pop("snapshot"))
    page = context.new_page()
    timings = durably.open(page, site_url, ["demo_jobs"])
    assert list(timings) == ["lock", "sqlite", "pool", "open", "pyodide", "install", "import", "start"]
    assert snapshot_messages(page) == []


# -- the build's side (scripts/snapshot.mjs, in Node) ----------------------------------------


def run_node(script: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["node", "--input-type=module", "-e", script], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_snapshot_key_changes_with_each_input_it_is_made_from():
    script = """
    import { snapshotKey } from "./web/snapshot.js";
    const base = () => ({
      versions: { pyodide: "314.0.7" },
      wheels: [{ sha256: "a".repeat(64) }],
      jobModules: [{ module: "jobs_a", sha256: "b".repeat(64) }, { module: "jobs_b", sha256: "c".repeat(64) }],
    });
    const variants = {
      same: (m) => m,
      pyodide: (m) => { m.versions.pyodide = "314.0.8"; },
      wheel: (m) => { m.wheels[0].sha256 = "d".repeat(64); },
      requirement: (m) => { m.wheels.push({ sha256: "e".repeat(64) }); },
      module: (m) => { m.jobModules[0].sha256 = "f".repeat(64); },
    };
    const keys = {};
    for (const [name, change] of Object.entries(variants)) {
      const m = base(); change(m);
      keys[name] = await snapshotKey(m, ["jobs_a"]);
    }
    keys.again = await snapshotKey(base(), ["jobs_a"]);
    keys.moreModules = await snapshotKey(base(), ["jobs_a", "jobs_b"]);
    // a module the snapshot does not hold may change freely
    const m = base(); m.jobModules[1].sha256 = "0".repeat(64);
    keys.otherModule = await snapshotKey(m, ["jobs_a"]);
    console.log(JSON.stringify(keys));
    """
    done = run_node(script, ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = json.loads(done.stdout)
    assert keys["again"] == keys["same"] == keys["otherModule"]
    distinct = [keys[k] for k in ("same", "pyodide", "wheel", "requirement", "module", "moreModules")]
    assert len(set(distinct)) == len(distinct)
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in distinct)


@pytest.mark.parametrize(
    ("job_module", "warning"),
    [
        ("import durably\nraise RuntimeError('broken at import')\n", "RuntimeError: broken at import"),
        # memory past the 30 MiB a restored Pyodide starts with (pyodide/pyodide#6254)
        ("BIG = bytearray(16 * 2**20)\n", "a restored Pyodide starts with 30 MiB and cannot hold it"),
    ],
    ids=["import-error", "memory-too-big"],
)
def test_a_snapshot_that_cannot_be_made_leaves_the_site_without_one_and_says_why(
    built_site, tmp_path, job_module, warning
):
    site = tmp_path / "site"
    shutil.copytree(built_site, site, ignore=shutil.ignore_patterns("snapshots"))
    (site / "jobs" / "demo_jobs.py").write_text(job_module)
    manifest = built_manifest(built_site)
    manifest.pop("snapshot")
    manifest["jobModules"][0]["sha256"] = hashlib.sha256(job_module.encode()).hexdigest()
    root = tmp_path / "root"  # its own .cache/snapshots
    root.mkdir()
    (root / "node_modules").symlink_to(ROOT / "node_modules")
    script = f"""
    import {{ buildSnapshot }} from {json.dumps(str(ROOT / "scripts" / "snapshot.mjs"))};
    const entry = await buildSnapshot({{ root: {json.dumps(str(root))}, site: {json.dumps(str(site))}, manifest: {json.dumps(manifest)} }});
    console.log(JSON.stringify({{ entry }}));
    """
    done = run_node(script, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"entry": None}
    assert done.stderr.startswith(
        "warning: no Python snapshot (the site boots without one, ~1 s slower):\n  cannot make the snapshot: "
    )
    assert warning in done.stderr
    assert not (site / "snapshots").exists()
