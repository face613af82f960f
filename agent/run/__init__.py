"""``spot-agent run``: the loop that supervises a job and checkpoints it.

- :mod:`.loop` the main sequence (claim, restore, start, supervise, finish) and its events
- :mod:`.events` what can happen, as types; :mod:`.arrivals` what a signal or notice means
- :mod:`.scheduler` sync cadence, early syncs, upload rate, reserve and deadline arithmetic (pure)
- :mod:`.syncs` the sync worker
- :mod:`.endings` the ways a run ends, and the exit status of each; :mod:`.interrupted`
  the one after a notice (stop the job, final checkpoint, exit 75)
- :mod:`.workers` the threads slow steps run in, and start-up's typed results
- :mod:`.meanings` which signal means what; stamping each on arrival
- :mod:`.jobenv` the job's environment, notice and status files, checkpoint dir and lock
- :mod:`.parts` the interfaces the loop drives, and the real ones; :mod:`.job` the job's
  process; :mod:`.sources` the notice sources; :mod:`.report` restore and sync log lines
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from checkpoint.engine.store.base import Store

from .. import exits, logs
from ..config import ConfigError, Settings
from . import endings
from .jobenv import JobFiles, lock_checkpoint_dir, prepare_checkpoint_dir
from .loop import RunLoop
from .parts import Parts, real_parts

#: at most this long (and a quarter of the time left) to write the attempt's last record
RECORD_SECONDS = 5.0


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    #: a worker (a restore, an upload) was left running at a deadline: the process must
    #: exit without waiting for it
    abandoned_work: bool
    #: the one line to show for a setting found unusable once running (``--imds on``)
    usage_error: str | None = None
    #: why the job could not be started (command not found, store unreachable), one line
    error: str | None = None


def run_job(settings: Settings, store: Store, parts: Parts | None = None) -> RunOutcome:
    """Run the job of ``settings`` to its end. Raises ``ConfigError`` (exit 2)."""
    prepare_checkpoint_dir(settings.checkpoint_dir)
    lock = lock_checkpoint_dir(settings.checkpoint_dir)
    logs.bind_static(job_id=settings.job_id)
    logs.bind_static(
        batch_job_queue=settings.batch_job_queue,
        batch_compute_environment=settings.batch_compute_environment,
    )
    files = JobFiles()
    loop = RunLoop(settings, parts or real_parts(settings, store), files)
    usage_error = None
    try:
        code = loop.run()
    except ConfigError as exc:  # the restore may still run: the caller must not wait for it
        code, usage_error = exits.USAGE, str(exc)
    finally:
        abandoned = loop.workers.abandoned
        left = loop.arrived.seconds_left()
        loop.record.close(RECORD_SECONDS if left is None else min(RECORD_SECONDS, left / 4))
        left = loop.arrived.seconds_left()
        logs.shutdown(
            endings.LOG_FLUSH_SECONDS
            if left is None
            else min(endings.LOG_FLUSH_SECONDS, max(left - 1.0, 0.0))
        )
        if not abandoned:
            if loop.ckpt is not None:
                loop.ckpt.close()
            store.close()
        files.close()
        os.close(lock)
    return RunOutcome(code, abandoned, usage_error, loop.startup_error)
