"""Jobs: the ``@job`` decorator, and the registry of the jobs a ``Durably`` runs."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, overload

from .clock import iso, system_clock
from .errors import NotFoundError, ValidationError
from .limits import MAX_WAIT
from .retries import Retry, as_retry
from .schedules import Schedule
from .schemas import CallableSchema, Schema, make_schema
from .validation import check_name, seconds_option


@dataclass(frozen=True)
class Job:
    """A registered job: its name, its ``async`` function, its input/output schemas, and its
    retry policy, timeout (seconds from the run's first start) and schedule, if any."""

    name: str
    fn: Callable[..., Awaitable[Any]]
    input_schema: Schema = field(default_factory=Schema, repr=False)
    output_schema: Schema = field(default_factory=Schema, repr=False)
    retries: Retry | None = None
    timeout: float | None = None
    schedule: Schedule | None = None

    def __repr__(self) -> str:
        return f"<durably job {self.name!r}>"


@overload
def job(name: Callable[..., Awaitable[Any]]) -> Job: ...
@overload
def job(
    name: str | None = None,
    *,
    input: Any = None,
    output: Any = None,
    retries: Retry | int | None = None,
    timeout: float | None = None,
    schedule: str | None = None,
    timezone: str | None = None,
    catch_up: str | None = None,
) -> Callable[[Callable[..., Awaitable[Any]]], Job]: ...


def job(
    name: Any = None,
    *,
    input: Any = None,
    output: Any = None,
    retries: Any = None,
    timeout: Any = None,
    schedule: Any = None,
    timezone: Any = None,
    catch_up: Any = None,
) -> Any:
    """Declare a job: an ``async def fn(step, input)`` made of named steps.

    ``input``/``output`` may be a dataclass (checked field by field against its
    annotations), a pydantic model, or a callable validator. Usable bare (``@job``) or
    with a name (``@job("sync-users")``); the name defaults to the function's name.

    ``retries`` (a ``Retry``, or N for ``Retry(max_attempts=N)``): a run whose job raises is
    tried again after a durable wait, from its first unfinished step. ``timeout``: seconds
    from the run's first start after which it fails with ``RunTimeoutError``. ``schedule``:
    a cron expression; the workers create a run per slot (``timezone``, default UTC;
    ``catch_up``: ``"latest"`` (default), ``"all"`` or ``"none"``; see ``durably.schedules``).

    Example::

        @job("sync-users", retries=3, timeout=600, schedule="0 * * * *")
        async def sync_users(step, input):
            users = await step.run("fetch", lambda: fetch(input["org"]))
            return {"count": len(users)}
    """
    if callable(name) and not isinstance(name, str):
        return _make(name, None, None, None)
    if name is not None:
        check_name(name, "a job name")
    what = f"job {name!r}" if name else "@job"
    policy = as_retry(retries, what)
    limit = None if timeout is None else seconds_option(f"{what}: timeout", timeout, MAX_WAIT, "MAX_WAIT")
    if schedule is None and (timezone is not None or catch_up is not None):
        raise ValidationError(f"{what}: timezone and catch_up apply to a schedule; pass schedule='* * * * *' too")
    plan = None if schedule is None else Schedule.check(schedule, timezone, catch_up, what, system_clock())

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Job:
        return _make(fn, name, input, output, policy, limit, plan)

    return decorate


def _make(
    fn: Any,
    name: str | None,
    input: Any,
    output: Any,
    retries: Retry | None = None,
    timeout: float | None = None,
    schedule: Schedule | None = None,
) -> Job:
    if isinstance(fn, Job):
        raise ValidationError(f"{fn!r} is already a job; apply @job once")
    if not inspect.iscoroutinefunction(fn):
        raise ValidationError(
            f"@job needs an 'async def' function taking (step, input); "
            f"{getattr(fn, '__name__', fn)!r} is not a coroutine function"
        )
    job_name = check_name(name or fn.__name__, "a job name")
    input_schema = make_schema(input, f"the input schema of job {job_name!r}")
    if schedule is not None and not isinstance(input_schema, CallableSchema):  # a validator may do anything
        try:
            input_schema.load({"scheduled_for": iso(system_clock())}, "the input of a scheduled run")
        except ValidationError as exc:
            raise ValidationError(
                f"job {job_name!r} has a schedule, whose runs get the input "
                f'{{"scheduled_for": "<slot, ISO-8601 UTC>"}}, and its input schema refuses that: {exc}. '
                "Give the schema a field scheduled_for: str"
            ) from None
    return Job(
        name=job_name,
        fn=fn,
        input_schema=input_schema,
        output_schema=make_schema(output, f"the output schema of job {job_name!r}"),
        retries=retries,
        timeout=timeout,
        schedule=schedule,
    )


class JobRegistry:
    """The jobs one ``Durably`` runs, by name. A process with none only triggers."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        #: The registered names, oldest first: what a claim asks for.
        self.names: tuple[str, ...] = ()

    def register(self, *jobs: Job) -> None:
        """Register jobs (made with ``@job``). Registering the same job twice is harmless;
        two different jobs with one name is an error."""
        for item in jobs:
            if not isinstance(item, Job):
                raise ValidationError(
                    f"register() takes jobs made with @job, got {item!r}; decorate the function with @job"
                )
            existing = self._jobs.get(item.name)
            if existing is not None and existing is not item and existing.fn is not item.fn:
                raise ValidationError(f"two different jobs are named {item.name!r}; give one of them another name")
            self._jobs[item.name] = item
        self.names = tuple(self._jobs)

    def get(self, name: str) -> Job | None:
        return self._jobs.get(name)

    def __getitem__(self, name: str) -> Job:
        return self._jobs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def as_dict(self) -> dict[str, Job]:
        """The registered jobs by name (a copy)."""
        return dict(self._jobs)

    def for_trigger(self, job: Job | str) -> tuple[str, Job | None]:
        """The job a trigger names (a job, registered now if it is not, or a job's name),
        and its definition: None in a process with no jobs, which only triggers (the
        worker that runs the job checks the input when it starts the run)."""
        if isinstance(job, Job):
            if job.name not in self._jobs:
                self.register(job)
            return job.name, job
        name = check_name(job, "a job name")
        found = self._jobs.get(name)
        if found is None and self._jobs:
            raise NotFoundError(f"unknown job {name!r}; registered jobs: {', '.join(sorted(self._jobs))}")
        return name, found
