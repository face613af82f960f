"""A Batch continuation: the variables a continuation job carries, and the options that
move a job to a fallback queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .parsers import ConfigError

#: Set in a continuation job of an array child: the index the original child had. Batch
#: reserves the AWS_BATCH_ prefix, so the continuation cannot set AWS_BATCH_JOB_ARRAY_INDEX
#: itself; the agent gives it back to the job.
ARRAY_INDEX_CARRIED = "SPOT_AGENT_ARRAY_INDEX"
#: Set in a continuation's environment: the Batch job id it continues, and why it was
#: submitted (``last-attempt`` or ``interruption-budget``).
CONTINUES_FROM = "SPOT_AGENT_CONTINUES_FROM"
CONTINUED_BECAUSE = "SPOT_AGENT_CONTINUED_BECAUSE"
BECAUSE_LAST_ATTEMPT = "last-attempt"
BECAUSE_BUDGET = "interruption-budget"


def fallback_after(values: Mapping[str, Any]) -> int | None:
    """--fallback-after and --fallback-queue go together; N counts interruptions (>= 1)."""
    after, queue = values["fallback_after"], values["fallback_queue"]
    if after is not None and after < 1:
        raise ConfigError("--fallback-after (SPOT_AGENT_FALLBACK_AFTER)", "must be at least 1")
    if (after is None) != (queue is None):
        given, missing = (
            ("--fallback-after", "--fallback-queue (SPOT_AGENT_FALLBACK_QUEUE)")
            if queue is None
            else ("--fallback-queue", "--fallback-after (SPOT_AGENT_FALLBACK_AFTER)")
        )
        raise ConfigError(missing, f"needed with {given}: give both or neither")
    return int(after) if after is not None else None


def child_environ(environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    carried = environ.get(ARRAY_INDEX_CARRIED)
    if carried and "AWS_BATCH_JOB_ARRAY_INDEX" not in environ:
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = carried
    return env
