"""Smoke test of the bench harness: the quick CPython bench (one round; the floor, durably
and one peer) runs end to end and writes the JSON, Markdown and HTML reports with the
expected shape. No timing is asserted: these machines are shared and noisy, and speed is the
bench's own report, not a test verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_quick_bench_writes_json_markdown_and_chart_with_every_workload(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scale-runs", "300", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "latest.json").read_text())

    assert {"mode", "rounds", "host", "versions", "command"} <= res["meta"].keys()
    assert res["meta"]["mode"] == "quick" and res["meta"]["rounds"] == 1
    assert {"floor", "durably"} <= res["contenders"].keys()
    assert {c["workload"] for c in res["cases"]} == {1, 2, 3}
    # The floor needs only the stdlib, so it is always there to compare against.
    assert res["contenders"]["floor"]["available"]
    for case in res["cases"]:
        floor = case["summary"]["floor"]
        head = {"steps": "steps_per_s", "runs": "runs_per_s", "trigger": "start_ms_p50"}[case["kind"]]
        assert floor[head]["median"] > 0
        assert {"median", "min", "max"} <= floor[head].keys()
        assert len(case["raw"]["floor"]) == 1 and "error" not in case["raw"]["floor"][0]
        live = [n for n, s in res["contenders"].items() if s["available"]]
        assert len(case["ratios"]) == len(live) * (len(live) - 1) // 2
    steps = next(c for c in res["cases"] if c["kind"] == "steps")
    assert len(steps["raw"]["floor"][0]["slice_us_per_step"]) == steps["params"]["slices"]

    # durably is this repository's own package: unavailable means the bench measured nothing
    # of it, which must fail here rather than pass with its figures left out.
    assert res["contenders"]["durably"]["available"], res["contenders"]["durably"]
    assert {"bytes_per_step", "purge_runs_per_s", "get_runs_label_tenant_limit50_ms"} <= res["scale"].keys()

    md = (tmp_path / "latest.md").read_text()
    for title in ("Workload 1", "Workload 2", "Workload 3", "Workload 6", "| floor |", "Ratios"):
        assert title in md
    page = (tmp_path / "latest.html").read_text()
    assert "<svg" in page and "<script" not in page


@pytest.mark.browser
@pytest.mark.slow
def test_quick_browser_bench_measures_the_opfs_floor_in_chromium(tmp_path):
    sys.path.insert(0, ROOT)
    from bench import browser

    reason = browser.available()
    if reason:
        # make test and CI install everything this needs (.ci/run, Makefile deps): there a
        # missing piece is a failure, not a skip that would pass unseen.
        if os.environ.get("CI", "").lower() in ("true", "1", "yes") or os.environ.get("DURABLY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser bench cannot run: {reason}")
        pytest.skip(reason)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--browser", "--only", "browser-floor",
         "--scale-runs", "0", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "latest.json").read_text())
    assert "chromium" in res["meta"]["versions"]
    measured = [c for c in res["cases"] if c["kind"] not in ("load", "resume")]  # 4 and 5 are not the floor's
    assert {c["workload"] for c in measured} == {1, 2, 3}
    for case in measured:
        raw = case["raw"]["browser-floor"]
        assert len(raw) == 1 and "error" not in raw[0], raw


@pytest.mark.browser
@pytest.mark.slow
def test_offline_bench_reports_offline_and_online_reloads_side_by_side(tmp_path):
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium is missing: apt-get install -y chromium")
    out = tmp_path / "offline.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.offline", "--reloads", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("precache:", "first visit:", "online, no service worker", "online, service worker", "offline (server stopped)"):
        assert line in proc.stdout, proc.stdout
    res = json.loads(out.read_text())
    assert res["precache"]["bytes"] > 10_000_000  # Pyodide's runtime is in it
    assert len(res["offline_ms"]) == len(res["online_no_sw_ms"]) == 1


@pytest.mark.browser
@pytest.mark.slow
def test_another_build_of_the_site_is_measured_beside_this_one(tmp_path):
    sys.path.insert(0, ROOT)
    from bench import browser

    reason = browser.available("site/index.html")
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes") or os.environ.get("DURABLY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser bench cannot run: {reason}")
        pytest.skip(reason)
    command = [sys.executable, "-m", "bench", "--quick", "--browser", "--only", "durably-browser-base",
               "--workloads", "2", "--scale-runs", "0", "--out", str(tmp_path)]
    # Without --base-site the contender says what it needs instead of failing the run.
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((tmp_path / "latest.json").read_text())["contenders"]["durably-browser-base"]
    assert not status["available"] and "--base-site" in status["reason"]

    # This repository's own test build as the "other" one: served from a second origin.
    proc = subprocess.run(command + ["--base-site", browser.SITE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "latest.json").read_text())
    assert res["meta"]["versions"]["base_site"] == browser.SITE
    assert res["meta"]["versions"]["base_commit"]
    (case,) = res["cases"]
    (raw,) = case["raw"]["durably-browser-base"]
    assert "error" not in raw and raw["runs_per_s"] > 0, raw
