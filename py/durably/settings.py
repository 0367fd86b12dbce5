"""The options of a worker, in one table: each one's name, default, check and the names the
hosts give it (the page's camelCase in the browser's ``init``, the flag of ``durably
worker``). ``Durably``'s signature, the CLI and the browser host all read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from .errors import ValidationError
from .limits import MAX_CONCURRENT_RUNS, MAX_LEASE_DURATION, MAX_POLLING_INTERVAL
from .validation import count_option, parse_retention, seconds_option


def _option(page: str, cli: str | None, help: str) -> dict[str, Any]:
    return {"page": page, "cli": cli, "help": help}


@dataclass(frozen=True)
class Settings:
    """A worker's options, checked. Build one with :meth:`check`; a field's ``metadata``
    holds its name on the page (``page``), its CLI flag (``cli``, None when the CLI has
    none) and a line of help."""

    polling_interval: float = field(
        default=1.0,
        metadata=_option(
            "pollingInterval", "--polling-interval", "seconds between looks for runs other processes inserted"
        ),
    )
    lease_duration: float = field(
        default=30.0, metadata=_option("leaseDuration", "--lease-duration", "seconds a run's lease lasts unrenewed")
    )
    lease_renew_interval: float = field(
        default=5.0,
        metadata=_option("leaseRenewInterval", "--lease-renew-interval", "seconds between renewals of a lease"),
    )
    max_concurrent_runs: int = field(
        default=1, metadata=_option("maxConcurrentRuns", "--concurrency", "runs executed at once")
    )
    preserve_steps: bool = field(
        default=True,
        metadata=_option("preserveSteps", None, "keep a finished run's steps and logs (false: delete them)"),
    )
    #: Given as text ("30d", "12h", "15m"); held as the age it names.
    retain_runs: timedelta | None = field(
        default=None,
        metadata=_option(
            "retainRuns", "--retain-runs", "purge finished runs older than this: '30d', '12h' or '15m' (minutes)"
        ),
    )

    @classmethod
    def check(cls, **options: Any) -> Settings:
        """Check each option given by its Durably keyword (``ValidationError`` naming it and
        its limit), fill in the defaults of the others, and build the settings."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValidationError(
                f"unknown option(s) {', '.join(map(repr, unknown))}; the options are: {', '.join(OPTIONS)}"
            )
        given = {name: options.get(name, default) for name, (_, _, _, default) in OPTIONS.items()}
        polling = seconds_option(
            "polling_interval", given["polling_interval"], MAX_POLLING_INTERVAL, "MAX_POLLING_INTERVAL"
        )
        lease = seconds_option("lease_duration", given["lease_duration"], MAX_LEASE_DURATION, "MAX_LEASE_DURATION")
        renew = seconds_option(
            "lease_renew_interval", given["lease_renew_interval"], MAX_LEASE_DURATION, "MAX_LEASE_DURATION"
        )
        if renew >= lease:
            raise ValidationError(
                f"lease_renew_interval ({given['lease_renew_interval']}) must be shorter than lease_duration "
                f"({given['lease_duration']}), or leases expire before they are renewed"
            )
        concurrency = count_option(
            "max_concurrent_runs", given["max_concurrent_runs"], 1, MAX_CONCURRENT_RUNS, "MAX_CONCURRENT_RUNS"
        )
        preserve = given["preserve_steps"]
        if not isinstance(preserve, bool):
            raise ValidationError(f"preserve_steps must be True or False, got {preserve!r}")
        retain = given["retain_runs"]
        return cls(
            polling_interval=polling,
            lease_duration=lease,
            lease_renew_interval=renew,
            max_concurrent_runs=concurrency,
            preserve_steps=preserve,
            retain_runs=None if retain is None else parse_retention(retain),
        )


#: Each option: its Durably keyword -> (name on the page, CLI flag or None, help, default).
OPTIONS: dict[str, tuple[str, str | None, str, Any]] = {
    f.name: (f.metadata["page"], f.metadata["cli"], f.metadata["help"], f.default) for f in fields(Settings)
}
#: The page's option names (camelCase) -> Durably keywords.
PAGE_NAMES: dict[str, str] = {page: name for name, (page, _, _, _) in OPTIONS.items()}
