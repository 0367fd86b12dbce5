"""Offline reload against online reload of durably's demo page, side by side.

    python -m bench.offline [--reloads 5] [--json PATH]

Builds a private production site (``node scripts/build.mjs --out ...``), serves it with
scripts/serve.py on 127.0.0.1, and drives Debian's headless Chromium with profiles on disk
(real HTTP cache and OPFS). Ready = navigation start to ``window.durably`` being set (the
page sets it once ``connect()`` resolved), as in workload 4. It reports:

- ``online, no service worker``: warm reloads with the service worker blocked: the HTTP
  cache, revalidated with the server (what the page got before it had one).
- ``online, service worker``: warm reloads served by the service worker's cache.
- ``offline``: the same profile with the server stopped and the browser offline.
- the first visit: load to ready, to "works offline", and the bytes the server sent, against
  the size of the precache list (every file of the site).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.browser import CHROMIUM, CHROMIUM_ARGS, HOOK_READY

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_MS = 120_000


def build(out: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["node", "scripts/build.mjs", "--out", str(out)], cwd=ROOT, check=True, env=env, stdout=subprocess.DEVNULL)


def precache_bytes(site: Path) -> tuple[int, int]:
    entries = json.loads(re.search(r"addToCacheList\((\[.*?\])\)", (site / "sw.js").read_text()).group(1))
    return len(entries), sum((site / e["url"]).stat().st_size for e in entries)


class CountingServer:
    """scripts/serve.py, counting the body bytes of the files it sends (200 responses)."""

    def __init__(self, site: Path) -> None:
        sys.path.insert(0, str(ROOT / "scripts"))
        from serve import make_server

        self.server = make_server(site, 0, quiet=True)
        self.sent = 0
        handler = self.server.RequestHandlerClass
        counter = self

        class Counting(handler):  # type: ignore[misc, valid-type]
            def copyfile(self, source, outputfile):  # type: ignore[no-untyped-def]
                counter.sent += os.fstat(source.fileno()).st_size
                return super().copyfile(source, outputfile)

        self.server.RequestHandlerClass = Counting
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ready_ms(page) -> float:
    page.wait_for_function("window.__readyAt !== undefined", timeout=TIMEOUT_MS)
    return page.evaluate("window.__readyAt")


def reloads(page, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        page.reload()
        samples.append(ready_ms(page))
    return samples


def summary(samples: list[float]) -> str:
    return f"{statistics.median(samples):7.0f} ms  (min {min(samples):.0f}, max {max(samples):.0f}, n={len(samples)})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.offline", description=__doc__.splitlines()[0])
    p.add_argument("--reloads", type=int, default=5, help="warm reloads per setting (default 5)")
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="durably-offline-bench-"))
    try:
        site = tmp / "site"
        build(site)
        files, size = precache_bytes(site)
        server = CountingServer(site)
        result: dict = {"precache": {"files": files, "bytes": size}}
        with sync_playwright() as pw:
            launch = {"executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}

            # Baseline: the service worker blocked, warm reloads revalidate with the server.
            ctx = pw.chromium.launch_persistent_context(tmp / "profile-plain", service_workers="block", **launch)
            ctx.add_init_script(HOOK_READY)
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            page.goto(server.url)
            ready_ms(page)
            result["online_no_sw_ms"] = reloads(page, a.reloads)
            ctx.close()

            # The first visit, then warm reloads online and offline, with the service worker.
            ctx = pw.chromium.launch_persistent_context(tmp / "profile-sw", service_workers="allow", **launch)
            ctx.add_init_script(HOOK_READY)
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            server.sent = 0
            page.goto(server.url)
            first = ready_ms(page)
            page.wait_for_selector('#offline[data-state="ready"]', timeout=TIMEOUT_MS)
            offline_at = page.evaluate("performance.now()")
            result["first_visit"] = {"ready_ms": first, "offline_ready_ms": offline_at, "bytes_sent": server.sent}
            result["online_sw_ms"] = reloads(page, a.reloads)
            server.stop()
            ctx.set_offline(True)
            result["offline_ms"] = reloads(page, a.reloads)
            ctx.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    fv = result["first_visit"]
    ratio = statistics.median(result["offline_ms"]) / statistics.median(result["online_no_sw_ms"])
    print(f"precache: {files} files, {size / 1e6:.2f} MB")
    print(f"first visit: ready {fv['ready_ms']:.0f} ms, works offline at {fv['offline_ready_ms']:.0f} ms, {fv['bytes_sent'] / 1e6:.2f} MB sent by the server")
    print("reload -> ready (median):")
    print(f"  online, no service worker  {summary(result['online_no_sw_ms'])}")
    print(f"  online, service worker     {summary(result['online_sw_ms'])}")
    print(f"  offline (server stopped)   {summary(result['offline_ms'])}")
    print(f"offline / online without a service worker: {ratio:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
