"""The to-do example's jobs: a to-do list whose items are finished by durable steps.

``plan`` turns a to-do (a title and a list of tasks) into one durable step per task, so a
closed tab resumes at the first unfinished task; each step's result says how long ago the
list was made in words, with ``humanize`` (a PyPI package the site ships as a wheel).
"""

from __future__ import annotations

from .jobs import plan, summary

__all__ = ["plan", "summary"]
