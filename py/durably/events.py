"""Events: a closed set of types, each with one payload shape, all documented here.

Every event has ``type``, ``timestamp`` (aware UTC datetime), a ``sequence`` that rises by
one per event within a ``Durably`` instance, and ``run_id``, ``job_name``, ``labels``
(``None``/``{}`` for ``worker:error`` that concerns no run). The type-specific fields are
in ``data`` and can be read as ``event["output"]``. Durations are in seconds.

=====================  ============================================================
type                   data
=====================  ============================================================
run:trigger            input
run:coalesced          input (the input of the trigger that was folded into the run)
run:leased             worker_id, lease_generation, lease_expires_at, resumed_steps
run:lease-renewed      worker_id, lease_generation, lease_expires_at
run:progress           progress ({"current", "total", "message"})
run:complete           output, duration
run:fail               error, failed_step
run:retry              attempt, delay, error, failed_step (the job raised; attempt is the one that failed)
run:wait               waiting_for ("retry" | "sleep" | "signal"), wait_step, wake_at (None: a signal)
run:signal             name, signal_id, disposition ("delivered" | "stored")
run:cancel             (nothing)
run:delete             (nothing)
step:start             step_name, step_index
step:complete          step_name, step_index, output, duration
step:fail              step_name, step_index, error
step:retry             step_name, step_index, attempt, delay, error (the attempt that failed)
step:cancel            step_name, step_index
log:write              step_name, level, message, data
worker:error           error, context
=====================  ============================================================

Listeners are called synchronously, in sequence order, each event fully delivered before
the next one starts (an event emitted by a listener is queued behind the current one). A
listener that raises never breaks the worker: its error becomes a ``worker:error`` event
and a log line. An ``async def`` listener is scheduled as a task.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clock import Clock, iso
from .errors import ValidationError
from .validation import describe

logger = logging.getLogger("durably")

EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "run:trigger": ("input",),
    "run:coalesced": ("input",),
    "run:leased": ("worker_id", "lease_generation", "lease_expires_at", "resumed_steps"),
    "run:lease-renewed": ("worker_id", "lease_generation", "lease_expires_at"),
    "run:progress": ("progress",),
    "run:complete": ("output", "duration"),
    "run:fail": ("error", "failed_step"),
    "run:retry": ("attempt", "delay", "error", "failed_step"),
    "run:wait": ("waiting_for", "wait_step", "wake_at"),
    "run:signal": ("name", "signal_id", "disposition"),
    "run:cancel": (),
    "run:delete": (),
    "step:start": ("step_name", "step_index"),
    "step:complete": ("step_name", "step_index", "output", "duration"),
    "step:fail": ("step_name", "step_index", "error"),
    "step:retry": ("step_name", "step_index", "attempt", "delay", "error"),
    "step:cancel": ("step_name", "step_index"),
    "log:write": ("step_name", "level", "message", "data"),
    "worker:error": ("error", "context"),
}
EVENT_TYPES = frozenset(EVENT_FIELDS)
_COMMON = ("type", "timestamp", "sequence", "run_id", "job_name", "labels")


@dataclass(frozen=True)
class Event:
    type: str
    timestamp: datetime
    sequence: int
    run_id: str | None
    job_name: str | None
    labels: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """A payload field (``event["output"]``) or a common one (``event["run_id"]``)."""
        try:
            return self.data[key]
        except KeyError:
            if key in _COMMON:
                return getattr(self, key)
            raise KeyError(f"{self.type} has no field {key!r}; it has: {', '.join((*_COMMON, *self.data))}") from None

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def to_dict(self) -> dict[str, Any]:
        """Flat plain data: the common fields plus the payload, timestamps as text."""
        out: dict[str, Any] = {
            "type": self.type,
            "timestamp": iso(self.timestamp),
            "sequence": self.sequence,
            "run_id": self.run_id,
            "job_name": self.job_name,
            "labels": self.labels,
        }
        for key, value in self.data.items():
            out[key] = iso(value) if isinstance(value, datetime) else value
        return out


Listener = Callable[[Event], Any]


class EventBus:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sequence = 0
        self._listeners: dict[str, list[Listener]] = {}
        self._queue: deque[Event] = deque()
        self._dispatching = False
        self._tasks: set[asyncio.Task[None]] = set()

    def on(self, event_type: str, handler: Listener) -> Callable[[], None]:
        if not isinstance(event_type, str) or (event_type != "*" and event_type not in EVENT_TYPES):
            raise ValidationError(
                f"unknown event type {event_type!r}; use '*' or one of: {', '.join(sorted(EVENT_TYPES))}"
            )
        if not callable(handler):
            raise ValidationError(f"the handler for {event_type!r} must be callable, got {handler!r}")
        self._listeners.setdefault(event_type, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._listeners.get(event_type, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe

    def wants(self, event_type: str) -> bool:
        return bool(self._listeners.get(event_type) or self._listeners.get("*"))

    def emit(
        self,
        event_type: str,
        run_id: str | None,
        job_name: str | None,
        labels: dict[str, str] | None,
        **data: Any,
    ) -> None:
        if not self.wants(event_type):
            return  # nobody listens: build nothing, the hot path stays cheap
        self._sequence += 1
        self._queue.append(Event(event_type, self._clock(), self._sequence, run_id, job_name, labels or {}, data))
        if self._dispatching:
            return  # the outer emit delivers it, in order
        self._dispatching = True
        try:
            while self._queue:
                self._deliver(self._queue.popleft())
        finally:
            self._dispatching = False

    def _deliver(self, event: Event) -> None:
        for handler in (*self._listeners.get(event.type, ()), *self._listeners.get("*", ())):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    self._schedule(result, event)
            except Exception as exc:  # a listener's bug must not stop the worker
                self._listener_failed(event, exc)

    def _schedule(self, awaitable: Any, event: Event) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception as exc:
                self._listener_failed(event, exc)

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _listener_failed(self, event: Event, exc: Exception) -> None:
        # describe: the listener's exception may be one whose __str__ raises as well.
        error = describe(exc)
        logger.error("durably: a listener for %s failed: %s", event.type, error, exc_info=exc)
        if event.type == "worker:error":
            return  # do not loop: a failing worker:error listener is only logged
        self.emit(
            "worker:error",
            event.run_id,
            event.job_name,
            event.labels,
            error=error,
            context=f"listener for {event.type}",
        )
