"""The running agent's lease on its job (:mod:`checkpoint.engine.lease`): written once the attempt
is claimed, rewritten every minute by a thread of its own, deleted when the run ends, so
that an operator's ``checkpoints gc`` or ``delete`` knows the job is live and refuses.

The lease is a courtesy to operators, never a condition of the job: a store that refuses
it is logged (``lease.failed``, once until it works again) and the job goes on.
"""

from __future__ import annotations

import threading

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.lease import LeasePolicy, drop_lease, write_lease

from .. import logs
from ..checkpoint_view import Checkpoints, WrappedCheckpoints

log = logs.get_logger()


class LeaseKeeper:
    def __init__(
        self, job: JobStore, attempt: int, host: str, policy: LeasePolicy | None = None
    ) -> None:
        self.job = job
        self.attempt = attempt
        self.host = host
        self.policy = policy or LeasePolicy()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._failing = False

    def start(self) -> None:
        """Write the lease, and renew it, from a thread of its own: a slow store never
        holds up the start."""
        self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """The run ends: no more renewals, and the lease goes. Bounded by ``wait`` seconds:
        the exit status is decided and must not wait on a slow store (the platform's
        SIGKILL would replace it); a lease not dropped in time expires by itself."""
        self._stop.set()
        self._thread.join(timeout=wait / 2)  # a renewal under way must not land after the drop
        dropper = threading.Thread(target=self._drop, name="lease-drop", daemon=True)
        dropper.start()
        dropper.join(timeout=wait / 2)

    def _drop(self) -> None:
        try:
            drop_lease(self.job, self.attempt)
        except Exception as exc:
            log.warning("lease.failed", error=str(exc), action="it expires by itself")

    def _renew(self) -> None:
        self._write()
        while not self._stop.wait(self.policy.renew_seconds):
            self._write()

    def _write(self) -> None:
        try:
            write_lease(self.job, self.attempt, self.host, self.policy)
        except Exception as exc:  # a courtesy to operators: never a reason to stop the job
            if not self._failing:
                log.warning(
                    "lease.failed",
                    error=str(exc),
                    why="checkpoints gc and delete may not see that this job is running",
                )
            self._failing = True
        else:
            self._failing = False


class LeasedCheckpoints(WrappedCheckpoints):
    """``inner``, whose :meth:`close` also ends the lease."""

    def __init__(self, inner: Checkpoints, keeper: LeaseKeeper) -> None:
        super().__init__(inner)
        self.keeper = keeper

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.keeper.stop()
