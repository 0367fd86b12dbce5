"""``python -m bench.chaos --host cpython --kills 300 [--workers 3 --runs 400 --seed N]``
``python -m bench.chaos --host cpython --db postgres --kills 300 --workers 4 [--restarts 2]``
``python -m bench.chaos --host browser --interruptions 30 [--followers 2 --runs N --seed N]``

Prints one summary line; exits 1 when a check fails (the failures go to stderr).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from .harness import Chaos, Options


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--host", choices=["cpython", "browser"], default="cpython",
                   help="cpython: worker processes killed; browser: reloads, closed tabs, terminated workers")
    p.add_argument("--interruptions", type=int, default=30,
                   help="browser: reloads, closed tabs and terminated workers, in equal shares")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite",
                   help="cpython: the workers share an SQLite file, or a PostgreSQL server the run starts "
                   "(and restarts mid-run)")
    p.add_argument("--restarts", type=int, help="--db postgres: server restarts, alternately fast and "
                   "immediate (default 2)")
    p.add_argument("--followers", type=int, default=0,
                   help="browser: follower tabs kept open; each interruption of the leader is then a hand-over")
    p.add_argument("--kills", type=int, default=300, help="SIGKILLs of workers (each restarted)")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--runs", type=int, help="cpython: runs (default 400); browser: at least this many "
                   "(default 0: runs are triggered as the interruptions need work in flight)")
    p.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
    p.add_argument("--stops", type=int, help="SIGSTOP/SIGCONT episodes (default kills/60, at least 1)")
    p.add_argument("--terms", type=int, help="SIGTERMs during steps (default kills/15, at least 1)")
    p.add_argument("--cancels", type=int, help="runs cancelled midway (default runs/12)")
    p.add_argument("--lease-duration", type=float, default=1.0)
    p.add_argument("--lease-renew-interval", type=float, default=0.2)
    p.add_argument("--keep", metavar="DIR", help="keep the database, ledger and worker outputs in DIR")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    # SIGTERM/SIGINT unwind through the harness's finally, which stops every worker it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = a.seed if a.seed is not None else int(time.time()) % 100000
    if a.host == "browser":
        return _browser(a, seed)
    a.runs = 400 if a.runs is None else a.runs
    opts = Options(kills=a.kills, workers=a.workers, runs=a.runs, seed=seed, stops=a.stops, terms=a.terms,
                   cancels=a.cancels, lease_duration=a.lease_duration,
                   lease_renew_interval=a.lease_renew_interval, verbose=a.verbose, db=a.db, restarts=a.restarts)
    if a.restarts and a.db != "postgres":
        p.error("--restarts needs --db postgres")
    if a.keep:
        Path(a.keep).mkdir(parents=True, exist_ok=True)
        rep = Chaos(opts, Path(a.keep)).run()
    else:
        with tempfile.TemporaryDirectory(prefix="durably-chaos-") as tmp:
            rep = Chaos(opts, Path(tmp)).run()
    for f in rep.failures[:50]:
        print(f"FAIL: {f}", file=sys.stderr)
    if len(rep.failures) > 50:
        print(f"... and {len(rep.failures) - 50} more", file=sys.stderr)
    print(f"{rep.line(a.host)} [seed {seed}, {a.workers} workers, {getattr(rep, 'elapsed', 0):.0f} s]")
    return 0 if rep.ok else 1


def _browser(a: argparse.Namespace, seed: int) -> int:
    from . import browser

    missing = browser.site_is_built()
    if missing:
        print(f"chaos browser: cannot run: {missing}", file=sys.stderr)
        return 2
    opts = browser.Options(interruptions=a.interruptions, runs=a.runs or 0, seed=seed, followers=a.followers,
                           verbose=a.verbose)
    result = browser.main(opts)
    rep = result.report
    for f in rep.failures[:50]:
        print(f"FAIL: {f}", file=sys.stderr)
    print(f"{result.line()} [seed {seed}, {result.elapsed:.0f} s]")
    print(result.timing_line())
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
