"""``python -m bench [--quick] [--browser] [--postgres] [--rounds R] [--only a,b] [--workloads 1,5] [--scale-runs N] [--base-site DIR] [--out DIR]``"""

from __future__ import annotations

import argparse
import os
import sys

from bench import report, runner
from bench.contenders import BROWSER, BROWSER_LOAD, CPYTHON


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small cases, 1 round, floor + durably + dbos-wal (--only to change): a smoke run")
    p.add_argument("--rounds", type=int, help="rounds of alternation (default 1 quick, 3 full)")
    p.add_argument("--browser", action="store_true", help="also run the browser contenders in headless Chromium")
    p.add_argument("--postgres", action="store_true",
                   help="start a throwaway PostgreSQL server (fsync on) and add its contenders and workload 7 (worker processes)")
    p.add_argument("--only", help=f"comma-separated contenders out of {', '.join(dict.fromkeys([*CPYTHON, *BROWSER, *BROWSER_LOAD]))}")
    p.add_argument("--workloads", help="comma-separated workload numbers to run (default: all of the plan's)")
    p.add_argument("--scale-runs", type=int, help="runs in the scale workload (0 skips it)")
    p.add_argument("--scale-only", action="store_true", help="only workload 6 (durably); writes scale.* unless --stem is given")
    p.add_argument("--base-site", metavar="DIR",
                   help="another build of durably's test site (e.g. an older commit's .cache/test-site) "
                        "to measure beside this one as durably-browser-base, from a second origin")
    p.add_argument("--out", default=os.path.join(runner.ROOT, "results"), help="where latest.{json,md,html} go")
    p.add_argument("--stem", help="file name stem of the outputs (default latest, or scale with --scale-only)")
    a = p.parse_args(argv)
    only = [x.strip() for x in a.only.split(",")] if a.only else None
    unknown = [x for x in only or [] if x not in CPYTHON and x not in BROWSER and x not in BROWSER_LOAD]
    if unknown:
        p.error(f"unknown contender(s): {', '.join(unknown)}")
    if a.base_site:
        os.environ["DURABLY_BENCH_BASE_SITE"] = os.path.abspath(a.base_site)
    plan = runner.make_plan(a.quick, a.rounds, a.scale_runs, browser=a.browser, postgres=a.postgres)
    if a.workloads:
        keep = {int(x) for x in a.workloads.split(",")}
        plan.cases = [c for c in plan.cases if c.workload in keep]
        if 6 not in keep:
            plan.scale_runs = 0
    if a.scale_only:
        plan.cases, plan.rounds, only = [], 0, ["durably"]
    res = runner.run_plan(plan, only)
    paths = report.write(res, a.out, a.stem or ("scale" if a.scale_only else "latest"))
    print(report.markdown(res))
    print("wrote " + ", ".join(paths.values()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
