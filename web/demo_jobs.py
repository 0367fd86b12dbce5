"""The demo page's jobs (phase 2 fills this in with real jobs).

The worker imports this module after installing durably, so an import error here is shown
on the page with its traceback.
"""

import durably  # noqa: F401  - proves the installed wheel imports alongside the jobs
