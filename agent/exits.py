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

#: the codes a Batch retry strategy retries: the job was interrupted and can resume (78 is
#: not among them: groups run on Kubernetes, where docs/groups.md's podFailurePolicy has it)
RETRYABLE = (INTERRUPTED, INTERRUPTED_UNSAVED)


def killed_by(sig: int) -> int:
    """The shell's status for a death by ``sig`` (130 for SIGINT)."""
    return 128 + int(sig)


#: Ctrl-C before the job started: the agent stops, as the job would have
STOPPED_BY_SIGINT = killed_by(signal.SIGINT)
