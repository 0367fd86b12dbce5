"""Retries: ``Retry``, the policy a job (``@job(retries=...)``) or a step (``step.run(...,
retries=...)``) gives its failed attempts.

A retry is durable: the run gives its worker slot back and waits (status ``waiting``, its
due time in the run's row), and any worker claims it again when it is due; the steps it
committed are not run again. The delay before attempt ``n + 1`` is ``initial * backoff **
(n - 1)`` seconds, at most ``max_delay``; with ``jitter`` it is drawn between half of that
and all of it, so runs that failed together do not all come back at the same moment.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError
from .limits import MAX_ATTEMPTS, MAX_BACKOFF, MAX_WAIT
from .validation import count_option, seconds_option


@dataclass(frozen=True)
class Retry:
    """How often to try a failing step or job again, and how long to wait in between.

    ``max_attempts`` counts every attempt, the first included (``retries=3`` is
    ``Retry(max_attempts=3)``: two retries); ``retry_on`` the exceptions worth retrying
    (others fail at once).

    Example::

        @job("charge", retries=Retry(max_attempts=5, initial=1.0, backoff=2.0, retry_on=(IOError,)))
        async def charge(step, input): ...
    """

    max_attempts: int = 3
    initial: float = 1.0
    backoff: float = 2.0
    max_delay: float = 3600.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        count_option("Retry max_attempts", self.max_attempts, 1, MAX_ATTEMPTS, "MAX_ATTEMPTS")
        seconds_option("Retry initial", self.initial, MAX_WAIT, "MAX_WAIT", zero=True)
        seconds_option("Retry max_delay", self.max_delay, MAX_WAIT, "MAX_WAIT", zero=True)
        backoff = self.backoff
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 1 <= backoff <= MAX_BACKOFF:
            raise ValidationError(
                f"Retry backoff must be a number from 1 to {MAX_BACKOFF:g} (durably.limits.MAX_BACKOFF), "
                f"got {backoff!r}"
            )
        if not isinstance(self.jitter, bool):
            raise ValidationError(f"Retry jitter must be True or False, got {self.jitter!r}")
        retry_on: Any = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if (
            not isinstance(retry_on, tuple)
            or not retry_on
            or not all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on)
        ):
            raise ValidationError(
                f"Retry retry_on must be an exception class or a tuple of them, e.g. (IOError, TimeoutError); "
                f"got {self.retry_on!r}"
            )
        object.__setattr__(self, "retry_on", retry_on)

    def retries(self, exc: BaseException) -> bool:
        """Is ``exc`` worth another attempt (an instance of ``retry_on``)?"""
        return isinstance(exc, self.retry_on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1) before the next one."""
        base = float(self.max_delay)
        if self.initial < self.max_delay:
            exponent = attempt - 1
            # initial * backoff ** exponent, without overflowing for large exponents.
            if self.backoff == 1 or exponent * math.log(self.backoff) < math.log(
                self.max_delay / max(self.initial, 1e-9)
            ):
                base = min(self.max_delay, self.initial * self.backoff**exponent)
        return base * (0.5 + random.random() / 2) if self.jitter else base


def as_retry(value: Any, what: str) -> Retry | None:
    """``retries=`` as given: None (no retries), an int N (``Retry(max_attempts=N)``) or a
    ``Retry``."""
    if value is None or isinstance(value, Retry):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValidationError(
                f"{what}: retries={value} would allow no attempt at all; retries=N means N attempts in all "
                "(Retry(max_attempts=N)): pass 1, or None, for a single attempt"
            )
        return Retry(max_attempts=value)
    raise ValidationError(f"{what}: retries must be None, a number of attempts or a Retry(...), got {value!r}")
