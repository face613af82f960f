"""Every exit status of ``spot-agent``, in one place: the CLI, the run loop and the Batch
retry strategy read them from here.

Besides these, ``run`` exits with the job's own code when the job exits by itself (128+N
when it was killed by signal N, 127 when the command does not exist, 126 when it cannot be
executed). The numbers of sysexits(3) are used where one fits.
"""

from __future__ import annotations

import signal

#: a usage or configuration error: one line names the setting and what is wrong
USAGE = 2
#: EX_UNAVAILABLE: the checkpoint store cannot be reached or read at start
STORE_UNAVAILABLE = 69
#: EX_CANTCREAT: the checkpoint could not be restored into the local dir (disk full, ...)
CANT_WRITE = 73
#: EX_IOERR: the job exited 0, but its final checkpoint could not be committed
CHECKPOINT_FAILED = 74
#: EX_TEMPFAIL: interrupted, and the final checkpoint is committed (or nothing had changed
#: since the last commit): retry the job to resume it
INTERRUPTED = 75
#: a newer attempt of the same job has taken over; this one stopped without committing
SUPERSEDED = 76
#: interrupted, but the final checkpoint could not be committed before the deadline: a
#: retry resumes from the last committed checkpoint (older than the job's last state).
#: Outside sysexits' range so that it means only this; Batch retries it like 75.
INTERRUPTED_UNSAVED = 79
#: a node of a group (docs/groups.md), interrupted: its own part of the last save point is
#: committed, but not every node's was by the deadline (a node never came back), so that
#: save point is no group checkpoint; a retry resumes every node from the last complete one
GROUP_INCOMPLETE = 78

#: interrupted once too often (``--fallback-after``): the job goes on as a new Batch job on
#: ``--fallback-queue``, resuming from the last committed checkpoint. Batch must NOT retry
#: this attempt (that would start a spot attempt as well); the retry strategy's catch-all
#: exits on it. Outside sysexits' range, next to 79.
MOVED_TO_FALLBACK = 80

#: the store kept failing in ways that may pass (throttling, 5xx, resets, timeouts) for
#: all of --startup-timeout: the job did not start, nothing was changed; a retry later (on
#: another host, maybe) will likely find it well. Outside sysexits' range, like 79.
STORE_NOT_READY = 81

#: the codes a retry strategy retries: the job was interrupted and can resume, or it could
#: not start yet (78 is not among them: groups run on Kubernetes, where docs/groups.md's
#: podFailurePolicy has it)
RETRYABLE = (INTERRUPTED, INTERRUPTED_UNSAVED, STORE_NOT_READY)


def killed_by(sig: int) -> int:
    """The shell's status for a death by ``sig`` (130 for SIGINT)."""
    return 128 + int(sig)


#: Ctrl-C before the job started: the agent stops, as the job would have
STOPPED_BY_SIGINT = killed_by(signal.SIGINT)
#: a command other than ``run`` whose stdout reader left (``| head``): as if SIGPIPE had
#: ended it, the status ``ls`` or ``git log`` give there (see ``agent/closed_pipe.py``)
CLOSED_PIPE = killed_by(signal.SIGPIPE)
