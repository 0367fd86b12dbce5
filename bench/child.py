"""One measurement in a fresh process: ``python -m bench.child MODULE FUNC KWARGS_JSON OUT``.

A fresh process per measurement keeps one contender's threads, imports and caches out of the
next one's timing (DBOS, for one, is a process-wide singleton with its own thread pool).
The result goes to a file, not stdout, because libraries print to stdout.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback


def main(argv: list[str]) -> int:
    module_name, func_name, kwargs_json, out_path = argv
    try:
        module = importlib.import_module(module_name)
        result = {"ok": getattr(module, func_name)(**json.loads(kwargs_json))}
    except BaseException as exc:  # reported to the runner, which records it and goes on
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0 if "ok" in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
