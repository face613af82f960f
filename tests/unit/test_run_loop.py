"""The run loop in-process: fake job, checkpoints and sources; events posted by the test.

Nothing here starts a process or touches a store; each test runs in milliseconds. The
loop's signal handlers are not installed (``own_signals=False``): the test posts the
``SignalReceived`` events a handler would.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent import exits
from agent.checkpoint_view import Checkpoints
from agent.cli import build_parser
from agent.config import ConfigError, Settings, load_settings
from agent.notices import INTERRUPTION, Notice, NoticeSource
from agent.run.events import NoticeReceived, SignalReceived
from agent.run.jobenv import JobFiles
from agent.run.loop import RunLoop
from agent.run.parts import Job, Parts
from checkpoint.engine.format.manifest import Manifest
from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.sync import SyncResult
from checkpoint.errors import CheckpointError, StoreUnavailable


class FakeJob:
    """A job that exits when told (``finish``), on the stop signal unless it ignores it."""

    def __init__(self, *, ignores_stop: bool = False, exits_with: int | None = None) -> None:
        self.ignores_stop = ignores_stop
        self.code: int | None = exits_with
        self.sent: list[int] = []
        self.started = 0.0
        self.pid = 0
        self.killed = False

    @property
    def running(self) -> bool:
        return self.pid != 0 and self.code is None

    @property
    def reaper(self) -> bool:
        return False

    def start(self) -> int:
        self.pid, self.started = 4242, time.monotonic()
        return self.pid

    def send(self, sig: int, *, group: bool = True) -> None:
        self.sent.append(sig)
        if sig == signal.SIGTERM and not self.ignores_stop and self.code is None:
            self.code = 128 + sig

    def reap(self) -> int | None:
        return self.code

    def wait(self, timeout: float) -> int | None:
        return self.code

    def kill_tree(self) -> int:
        self.killed, self.code = True, 128 + signal.SIGKILL
        return 1

    def reap_leftovers(self, grace: float) -> int:
        return 0

    def close_output(self, timeout: float) -> None:
        pass

    def pids(self) -> list[int]:
        return [self.pid] if self.running else []


class FakeCheckpoints:
    def __init__(self) -> None:
        self.base: Manifest | None = None
        self.restore_gate = threading.Event()
        self.restore_gate.set()
        self.sync_gate = threading.Event()
        self.sync_gate.set()
        self.sync_error: Exception | None = None
        self.syncs: list[str] = []

    def restore(self) -> RestoreResult:
        self.restore_gate.wait(30)
        return RestoreResult(None)

    def sync_once(self, reason: str) -> SyncResult:
        self.sync_gate.wait(30)
        self.syncs.append(reason)
        if self.sync_error is not None:
            raise self.sync_error
        return SyncResult(reason, len(self.syncs), 1, 10, 10, 1, 10, 0.001)

    def prune(self, keep: int) -> list[int]:
        return []

    def pending_bytes(self) -> int:
        return 0

    def attach(self, job_pids: Any, on_frozen: Any, on_declared: Any = None) -> None:
        self.attached = (job_pids, on_frozen)

    def between_saves(self, wait: float) -> Any:
        return contextlib.nullcontext(True)

    def declared(self, at: float | None = None) -> None:
        self.declarations = getattr(self, "declarations", 0) + 1

    def job_gone(self) -> None:
        self.gone_before = list(self.syncs)  # the syncs taken before it was said

    def close(self) -> None:
        pass


def settings(tmp_path: Path, *args: str) -> Settings:
    parsed = build_parser().parse_args(["run", "--sync-interval", "0", *args])
    return load_settings(parsed, ["job"], {"XDG_STATE_HOME": str(tmp_path)})


class Harness:
    def __init__(self, tmp_path: Path, *args: str, job: FakeJob | None = None) -> None:
        self.ckpt = FakeCheckpoints()
        self.job = job or FakeJob(exits_with=None)
        self.jobs_made: list[Mapping[str, str]] = []
        self.claim_gate = threading.Event()
        self.claim_gate.set()
        self.claim_error: Exception | None = None
        self.sources_gate = threading.Event()
        self.sources_gate.set()
        self.sources_error: Exception | None = None
        self.files = JobFiles()
        self.loop = RunLoop(settings(tmp_path, *args), self._parts(), self.files)

    def _parts(self) -> Parts:
        def claim() -> tuple[int, Checkpoints]:
            self.claim_gate.wait(30)
            if self.claim_error is not None:
                raise self.claim_error
            return 1, self.ckpt

        def sources(_on_identity: Callable[[dict[str, Any]], None]) -> tuple[NoticeSource, ...]:
            self.sources_gate.wait(30)
            if self.sources_error is not None:
                raise self.sources_error
            return ()

        def make_job(env: Mapping[str, str]) -> Job:
            self.jobs_made.append(env)
            return self.job

        return Parts(claim, sources, make_job, lambda attempt: None, own_signals=False)

    def post_when(self, ready: Callable[[], bool], event: Callable[[], Any]) -> None:
        def run() -> None:
            deadline = time.monotonic() + 10
            while not ready() and time.monotonic() < deadline:
                time.sleep(0.005)
            self.loop.events.put(event())

        threading.Thread(target=run, daemon=True).start()

    def sigterm(self) -> SignalReceived:
        return SignalReceived(signal.SIGTERM, time.monotonic())

    def release(self) -> None:
        for gate in (self.claim_gate, self.sources_gate, self.ckpt.restore_gate):
            gate.set()
        self.ckpt.sync_gate.set()
        self.files.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(*args: str, job: FakeJob | None = None) -> Harness:
        made.append(Harness(tmp_path, *args, job=job))
        return made[-1]

    yield build
    for h in made:
        h.release()


def test_job_exit_code_passes_through_after_a_final_sync(make: Callable[..., Harness]) -> None:
    h = make(job=FakeJob(exits_with=3))
    assert h.loop.run() == 3
    assert h.ckpt.syncs == ["exit"]
    assert h.jobs_made[0]["SPOT_AGENT_SYNC_SIGNAL"] == "SIGUSR1"


class LingeringJob(FakeJob):
    """A job whose tree outlives it: a process it left behind would not end."""

    def pids(self) -> list[int]:
        return [4243]


def test_the_final_sync_is_told_the_job_is_gone_only_when_nothing_of_it_runs(
    make: Callable[..., Harness],
) -> None:
    exited = make(job=FakeJob(exits_with=0))
    assert exited.loop.run() == 0
    assert exited.ckpt.gone_before == []  # told before the final sync: it reads in place
    stopped = make()
    stopped.post_when(lambda: stopped.job.running, stopped.sigterm)
    assert stopped.loop.run() == exits.INTERRUPTED
    assert stopped.ckpt.gone_before == []
    lingering = make(job=LingeringJob(exits_with=0))
    assert lingering.loop.run() == 0
    assert lingering.ckpt.syncs == ["exit"]  # a freeze, as long as something may write
    assert not hasattr(lingering.ckpt, "gone_before")


def test_job_exit_75_is_remapped_only_when_asked(make: Callable[..., Harness]) -> None:
    assert make(job=FakeJob(exits_with=75)).loop.run() == 75
    assert make("--job-exit-75-as", "1", job=FakeJob(exits_with=75)).loop.run() == 1


@pytest.mark.parametrize("gate", ["claim_gate", "sources_gate", "restore_gate"])
def test_sigterm_during_a_slow_start_up_step_exits_75_at_once(
    make: Callable[..., Harness], gate: str
) -> None:
    h = make("--grace-period", "30s")
    blocked = h.ckpt.restore_gate if gate == "restore_gate" else getattr(h, gate)
    blocked.clear()
    claimed = gate != "claim_gate"  # the later steps start once the attempt is claimed
    h.post_when(lambda: not claimed or h.loop.attempt == 1, h.sigterm)
    assert h.loop.run() == exits.INTERRUPTED
    assert h.jobs_made == []  # the job never started
    assert h.loop.workers.abandoned  # the blocked step is left behind, not waited for
    assert h.loop.arrived.seconds_left() is not None and h.loop.arrived.seconds_left() > 25  # type: ignore[operator]


def test_ctrl_c_before_the_job_starts_stops_the_agent(make: Callable[..., Harness]) -> None:
    h = make()
    h.ckpt.restore_gate.clear()
    h.post_when(lambda: True, lambda: SignalReceived(signal.SIGINT, time.monotonic()))
    assert h.loop.run() == 130
    assert h.jobs_made == []


def test_store_unreachable_at_claim_exits_69(make: Callable[..., Harness]) -> None:
    h = make()
    h.claim_error = StoreUnavailable("no such bucket")
    assert h.loop.run() == exits.STORE_UNAVAILABLE


def test_imds_required_but_unusable_is_a_configuration_error(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.sources_error = ConfigError("--imds (SPOT_AGENT_IMDS)", "on, but ...")
    with pytest.raises(ConfigError):
        h.loop.run()


def test_a_broken_source_is_logged_and_the_job_runs(make: Callable[..., Harness]) -> None:
    h = make(job=FakeJob(exits_with=0))
    h.sources_error = RuntimeError("bug")
    assert h.loop.run() == 0


def test_interruption_stops_the_job_commits_and_exits_75(make: Callable[..., Harness]) -> None:
    h = make()
    h.post_when(lambda: h.job.running, h.sigterm)
    assert h.loop.run() == exits.INTERRUPTED
    assert h.job.sent == [signal.SIGTERM] and not h.job.killed
    assert h.ckpt.syncs == ["interruption"]
    assert (h.files.notice_file).exists()


def test_a_job_that_ignores_the_stop_signal_is_killed_in_time(
    make: Callable[..., Harness],
) -> None:
    h = make("--grace-period", "0.5s", job=FakeJob(ignores_stop=True))
    h.post_when(lambda: h.job.running, h.sigterm)
    assert h.loop.run() == exits.INTERRUPTED
    assert h.job.killed and h.ckpt.syncs == ["interruption"]
    assert h.loop.arrived.left() > 0


def test_final_checkpoint_failing_exits_79_not_75(make: Callable[..., Harness]) -> None:
    h = make()
    h.ckpt.sync_error = CheckpointError("disk on fire")
    h.post_when(lambda: h.job.running, h.sigterm)
    assert h.loop.run() == exits.INTERRUPTED_UNSAVED


def test_a_sync_stuck_past_the_deadline_is_abandoned_with_79(
    make: Callable[..., Harness],
) -> None:
    h = make("--grace-period", "1.2s")
    h.ckpt.sync_gate.clear()
    h.post_when(lambda: h.job.running, h.sigterm)
    assert h.loop.run() == exits.INTERRUPTED_UNSAVED
    assert h.loop.workers.abandoned


def test_sigterm_during_a_sync_waits_for_it_then_commits(make: Callable[..., Harness]) -> None:
    h = make()
    h.ckpt.sync_gate.clear()
    h.post_when(lambda: h.job.running, lambda: SignalReceived(signal.SIGUSR1, time.monotonic()))
    h.post_when(lambda: h.loop.syncs.running, h.sigterm)
    h.post_when(lambda: h.loop.interruption is not None, lambda: h.ckpt.sync_gate.set())
    assert h.loop.run() == exits.INTERRUPTED
    assert h.ckpt.syncs == ["requested", "interruption"]


def test_another_sync_signal_makes_sigusr1_the_jobs(make: Callable[..., Harness]) -> None:
    h = make("--sync-signal", "SIGUSR2")
    assert h.loop.table[signal.SIGUSR1].value == "forward"
    h.post_when(lambda: h.job.running, lambda: SignalReceived(signal.SIGUSR2, time.monotonic()))
    h.post_when(lambda: bool(h.ckpt.syncs), h.sigterm)
    assert h.loop.run() == exits.INTERRUPTED
    assert h.ckpt.syncs == ["requested", "interruption"]


def test_a_later_imds_notice_with_an_earlier_deadline_moves_it_closer(
    make: Callable[..., Harness],
) -> None:
    from datetime import UTC, datetime, timedelta

    h = make("--grace-period", "60s", job=FakeJob(ignores_stop=True))
    now = datetime.now(UTC)
    spot = Notice(INTERRUPTION, "imds:spot", "terminate", now + timedelta(seconds=0.5), now)
    h.post_when(lambda: h.job.running, h.sigterm)
    h.post_when(lambda: h.job.sent != [], lambda: NoticeReceived(spot, time.monotonic()))
    assert h.loop.run() == exits.INTERRUPTED
    assert h.job.killed  # within the 0.5 s of the spot notice, not the 60 s of the SIGTERM
    assert h.loop.interruption is not None and h.loop.interruption.notice.source == "imds:spot"


def test_a_wall_clock_step_after_the_notice_does_not_abandon_the_final_checkpoint(
    make: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    import agent.notices

    h = make("--grace-period", "30s")
    h.ckpt.sync_gate.clear()  # the final sync takes a moment, during which the clock jumps

    def step() -> SignalReceived:
        jumped = datetime.now(UTC) + timedelta(hours=1)
        monkeypatch.setattr(agent.notices, "utcnow", lambda: jumped)
        return h.sigterm()

    h.post_when(lambda: h.job.running, h.sigterm)
    h.post_when(lambda: h.loop.syncs.running, lambda: NoticeReceived(_repeat(), time.monotonic()))
    h.post_when(lambda: h.loop.syncs.running, step)
    h.post_when(lambda: h.loop.syncs.running, lambda: h.ckpt.sync_gate.set())
    assert h.loop.run() == exits.INTERRUPTED
    assert h.ckpt.syncs == ["interruption"]


def test_the_stop_signal_reaches_the_job_when_the_notice_file_cannot_be_written(
    make: Callable[..., Harness],
) -> None:
    h = make()
    h.files.notice_file.mkdir()  # stands for a full disk
    h.post_when(lambda: h.job.running, h.sigterm)
    assert h.loop.run() == exits.INTERRUPTED
    assert h.job.sent == [signal.SIGTERM]


def _repeat() -> Notice:
    from agent.notices import sigterm_notice

    return sigterm_notice(30)


def test_the_same_imds_notice_polled_again_is_a_repeat(make: Callable[..., Harness]) -> None:
    from datetime import UTC, datetime, timedelta

    h = make()
    now = datetime.now(UTC)
    deadline = now + timedelta(seconds=120)
    first = Notice(INTERRUPTION, "imds:spot", "terminate", deadline, now)
    again = Notice(INTERRUPTION, "imds:spot", "terminate", deadline, now + timedelta(seconds=2))
    h.loop.handle(NoticeReceived(first, time.monotonic()))
    h.loop.handle(NoticeReceived(again, time.monotonic() + 1.999))  # jitter: 1 ms sooner
    assert h.loop.interruption is not None and h.loop.interruption.notice is first
