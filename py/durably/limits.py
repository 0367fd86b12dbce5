"""Every limit durably enforces, in one place: the README's "Limits" table lists these.

Data limits keep one bad input from breaking the database for everyone: a value nested
too deep to read back, a row too large to list, a run that writes without end. Option
limits keep every duration and count finite, so no arithmetic on them can overflow.

Sizes are in UTF-8 bytes. A JSON value (input, output, step result, log data) is measured
as the JSON text durably stores, in which every non-ASCII character is written as a
``\\uXXXX`` escape (6 bytes; 12 outside the Basic Multilingual Plane). Plain text (a log
message, a progress message, an error) is measured as its UTF-8 encoding.

A value over a data limit is refused with ``ValidationError`` naming the limit, before
anything is written; the exceptions are log and progress text, which is cut to its limit
(a run that logs too much must not fail for it), and log lines past ``MAX_LOGS_PER_RUN``,
which are dropped after one line that says so.
"""

from __future__ import annotations

from typing import Any

KIB = 1024
MIB = 1024 * KIB

# -- data ------------------------------------------------------------------------------------

#: Containers (lists, objects) nested inside one another, at most: ``[[1]]`` is 2 deep.
#: Applies to inputs, outputs, step results, progress and log data.
MAX_DEPTH = 64
#: A run's input as stored JSON. Inputs are listed with every run (``get_runs``), so they
#: stay small: store large data elsewhere and pass a reference.
MAX_INPUT_BYTES = 1 * MIB
#: A run's output as stored JSON (listed with every run, like the input).
MAX_OUTPUT_BYTES = 1 * MIB
#: One step's result as stored JSON (read one run at a time, so it may be larger).
MAX_STEP_RESULT_BYTES = 4 * MIB
#: Names: job names, step names, idempotency and concurrency keys, label keys, worker and
#: run ids, in characters.
MAX_NAME_LENGTH = 200
#: Labels per run, and the length of a label's value in characters.
MAX_LABELS = 32
MAX_LABEL_VALUE = 1000
#: The error text stored with a failed run or step; a longer one is cut to this size.
MAX_ERROR_BYTES = 16 * KIB
#: One ``step.log`` message; a longer one is cut to this size, with a note saying so.
MAX_LOG_MESSAGE_BYTES = 8 * KIB
#: One ``step.log`` line's data as JSON; larger data is dropped, with a note in the message.
MAX_LOG_DATA_BYTES = 64 * KIB
#: Log lines one run stores. The next line is replaced by one ``warn`` line saying the
#: limit was reached; later lines are neither stored nor emitted as ``log:write``.
MAX_LOGS_PER_RUN = 10_000
#: A ``step.progress`` message; a longer one is cut to this size.
MAX_PROGRESS_MESSAGE_BYTES = 1 * KIB
#: One request from the page to the browser's worker: its parameters as JSON text. A job's
#: input belongs in the database, not in a message of many megabytes.
MAX_MESSAGE_BYTES = 4 * MIB

# -- the largest integers and list sizes a caller may pass ---------------------------------

#: ``limit`` of ``get_runs`` and ``get_logs``, ``last`` of ``get_logs``.
MAX_PAGE = 1_000_000
#: ``offset`` of ``get_runs`` and ``after_id`` of ``get_logs``: the largest integer a
#: JavaScript number holds exactly.
MAX_OFFSET = 2**53 - 1
#: Values in one ``status`` or ``job_name`` filter of ``get_runs``.
MAX_FILTER_VALUES = 100
#: Inputs in one ``trigger_many`` (the page's ``triggerMany``): runs created in one
#: transaction, returned in one reply. Call it again for more.
MAX_TRIGGER_MANY = 10_000

# -- options: every duration and count is finite, with these maxima -----------------------

#: ``polling_interval``, in seconds (it must also be above 0).
MAX_POLLING_INTERVAL = 3600.0
#: ``lease_duration``, in seconds; ``lease_renew_interval`` must be shorter than it.
MAX_LEASE_DURATION = 86400.0
#: ``max_concurrent_runs`` (and the CLI's ``--concurrency``).
MAX_CONCURRENT_RUNS = 1000
#: ``retain_runs``, and the age ``older_than`` of ``purge_runs``: 100 years, in seconds.
MAX_RETENTION = 36500 * 86400.0
#: Timeouts: ``wait_for_run``, ``stop``, ``trigger_and_wait``, the CLI's ``--wait`` and
#: ``--stop-timeout``: a year, in seconds (``None`` waits without end).
MAX_TIMEOUT = 365 * 86400.0
#: ``limit`` of ``purge_runs``: runs deleted in one transaction.
MAX_PURGE_LIMIT = 10_000

# -- runs that wait: retries, sleeps, signals, timeouts, schedules ---------------------------

#: ``Retry(max_attempts=...)`` (and ``retries=N``): attempts of a step or a job in all.
MAX_ATTEMPTS = 1000
#: ``Retry(backoff=...)``: the factor between two delays.
MAX_BACKOFF = 100.0
#: Durations of waits, in seconds: ``step.sleep``, the timeouts of ``step.wait_for_signal``,
#: ``step.run`` and ``@job``, a ``Retry``'s ``initial`` and ``max_delay``: a year
#: (``step.sleep_until`` takes any date).
MAX_WAIT = 365 * 86400.0
#: One signal's payload as stored JSON (``Durably.signal``; it becomes the step's result).
MAX_SIGNAL_BYTES = 1 * MIB
#: Runs one schedule creates when it catches up with ``catch_up="all"``: the latest slots
#: missed, at most this many (the older ones get none).
MAX_CATCH_UP = 1000


# -- the worker registry (durably_workers, durably status) ---------------------------------

#: A started worker writes its heartbeat this often, in seconds (a timer on its event loop).
HEARTBEAT_INTERVAL = 10.0
#: A worker whose last heartbeat is older than this, in seconds, counts as dead.
WORKER_STALE_AFTER = 60.0
#: A dead worker's row is deleted once its heartbeat is this old, in seconds (a day).
WORKER_FORGET_AFTER = 86400.0
#: A trigger-only ``Durably`` warns when no worker registering the job has had a heartbeat
#: within this many seconds (ten minutes).
JOB_SEEN_WINDOW = 600.0


def as_dict() -> dict[str, Any]:
    """The limits as plain data (lower-case names), for the browser's ``ping``."""
    return {name.lower(): value for name, value in globals().items() if name.isupper() and name not in ("KIB", "MIB")}
