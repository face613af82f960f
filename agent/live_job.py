"""Operators' commands meet a running job: ``checkpoints gc`` and ``delete`` look for a
live lease (:mod:`checkpoint.engine.lease`) first, and refuse while one is live, in one line,
unless forced. Forced, they announce themselves (a sweep) and wait a moment before they
delete, so that the agent checks what it commits next and uploads again what they took.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.lease import SWEEP_SETTLE_SECONDS, finish_sweep, live_leases, start_sweep

from .config import ConfigError


@contextmanager
def unless_live(
    job: JobStore, command: str, *, force: bool, dry_run: bool = False
) -> Iterator[str | None]:
    """Run the body of ``command`` (``gc``, ``delete``) on ``job``: at once when no agent
    of the job holds a live lease; refused (ConfigError) when one does, unless ``force``.
    Yields the key of the sweep announced (None: none was), which must not be deleted."""
    now = datetime.now(UTC)
    leases = live_leases(job, now) if not dry_run else []  # a dry run deletes nothing
    if not leases:
        yield None
        return
    who = "; ".join(lease.describe(now) for lease in leases)
    if not force:
        raise ConfigError(
            "--force",
            f"job {job.job_id} is running ({who}): {command} now could delete what its next "
            "checkpoint uses; stop the job first, or add --force",
        )
    print(
        f"spot-agent: warning: job {job.job_id} is running ({who}); {command} goes on "
        "(--force): the agent checks its next checkpoint and uploads again what it needs",
        file=sys.stderr,
    )
    sweep = start_sweep(job, command)
    time.sleep(SWEEP_SETTLE_SECONDS)  # a commit under way lands before we list
    try:
        yield sweep.key
    finally:
        finish_sweep(job, sweep)
