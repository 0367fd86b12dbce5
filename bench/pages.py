"""WAL pages a step, a run and a trigger write in the browser worker: ``python -m bench.pages``.

Time per commit on OPFS grows with the pages it writes, and unlike a time the count does not
move with the machine's load, so it shows what a change to the store saves even on a busy
machine. Each figure is the WAL frames (pages) SQLite wrote for K operations, divided by K,
in durably's own worker on its database (the bench's copy of the test site, as ``python -m
bench --browser`` serves it), with automatic checkpoints held off while counting:

- ``step``: one run of N steps (the claim and the end included, spread over the steps);
- ``run (worker)``: K one-step runs executed by the started worker, back to back (claim,
  step and completion; the triggers are not counted);
- ``trigger``: K triggers as the worker's host answers them (``BrowserHost.handle_now``),
  without and with a request id (a page's calls that change runs carry one, and the host
  records the reply in the transaction).

Needs the test site (``npm run build:test``) and Chromium, as ``python -m bench --browser``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from .browser import DURABLY_PAGE, BrowserSession, available

# Run inside the worker through evalPython (debug builds): ``host`` and ``app`` are given.
CODE = """
import json
import durably_bridge

K, N = {k}, {n}

def q(sql):
    r = durably_bridge.exec(sql, None)
    return r.to_py() if hasattr(r, "to_py") else r

def clear():
    for table in ("durably_steps", "durably_runs", "durably_requests"):
        q(f"DELETE FROM {{table}}")

def start_counting():
    q("PRAGMA wal_checkpoint(TRUNCATE)")
    q("PRAGMA wal_autocheckpoint = 0")

def pages():
    frames = q("PRAGMA wal_checkpoint(PASSIVE)")["rows"][0][1]
    q("PRAGMA wal_autocheckpoint = 1000")
    return frames

out = {{}}
await app.stop()
clear()
run = app.trigger("bench-steps", {{"n": N, "slices": 1}})
start_counting()
await app.start()
await app.wait_for_run(run.id, timeout=600)
out["step"] = pages() / N
await app.stop()
clear()
runs = [app.trigger("bench-one", {{"i": i}}) for i in range(K)]
start_counting()
await app.start()
for r in runs:
    await app.wait_for_run(r.id, timeout=600)
out["run (worker)"] = pages() / K
await app.stop()
for label, recorded in (("trigger", False), ("trigger, recorded", True)):
    clear()
    start_counting()
    for i in range(K):
        host.handle_now("trigger", json.dumps({{"job": "bench-one", "input": {{"i": i}}}}), None,
                        f"bench-pages:{{i}}" if recorded else None)
    out[label] = pages() / K
clear()
await app.start()
json.dumps(out)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="K: runs and triggers counted (default 100)")
    parser.add_argument("--steps", type=int, default=200, help="N: steps of the one long run (default 200)")
    args = parser.parse_args(argv)
    why = available("site")
    if why:
        print(why, file=sys.stderr)
        return 2
    root = tempfile.mkdtemp(prefix="bench-pages-")
    session = BrowserSession(os.path.join(root, "profile"))
    try:
        page = session.context.new_page()
        page.goto(f"{session.base}/{DURABLY_PAGE}")
        session._durably_ready(page)
        page.set_default_timeout(600_000)
        text = page.evaluate("(code) => window.durably.evalPython(code)", CODE.format(k=args.runs, n=args.steps))
        page.close()
    finally:
        session.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"WAL pages written, browser worker (N={args.steps} steps, K={args.runs}):\n")
    print("| operation | pages |\n|---|---:|")
    for label, value in json.loads(text).items():
        print(f"| {label} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
