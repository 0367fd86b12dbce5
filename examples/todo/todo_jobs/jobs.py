from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

import humanize

from durably import ValidationError, job


@dataclass
class Todo:
    title: str
    tasks: list[str] = field(default_factory=list)
    seconds_per_task: float = 0.0

    def __post_init__(self) -> None:
        if not self.title.strip():
            raise ValidationError("the input of job 'plan': title must not be empty")
        if len(self.tasks) > 100:
            raise ValidationError(f"the input of job 'plan': at most 100 tasks, got {len(self.tasks)}")
        if not 0 <= self.seconds_per_task <= 60:
            raise ValidationError("the input of job 'plan': seconds_per_task must be between 0 and 60")


@job("plan", input=Todo)
async def plan(step, input: Todo) -> dict:
    """Works through a to-do list, one durable step per task."""
    made = await step.run("made", lambda: datetime.now(UTC).isoformat())
    done = []
    for i, task in enumerate(input.tasks):

        async def finish(task: str = task) -> str:
            await asyncio.sleep(input.seconds_per_task)
            return task

        done.append(await step.run(f"task-{i + 1}", finish))
        step.progress(i + 1, len(input.tasks), task)
    age = datetime.now(UTC) - datetime.fromisoformat(made)
    return {
        "title": input.title,
        "done": done,
        "tasks": humanize.apnumber(len(done)),
        "took": humanize.naturaldelta(age),
    }


@job("summary")
async def summary(step, input: dict) -> str:
    """Says how many things are left, in words (humanize)."""
    left = int(input.get("left", 0))
    return await step.run("say", lambda: f"{humanize.apnumber(left)} thing{'s' if left != 1 else ''} left")
