"""The agent's stop signal never cuts a save (issue 22, item 4).

A shell job saves four files with ``;``-separated commands (``head | sha256sum`` for each
file's content, then ``mv``) under the save-point lock, and ignores a failed step: a
signal that ends one of its children half-way leaves a torn file, and the shell goes on
and empties the lock. The test watches the lock file and sends SIGTERM to the agent the
moment a save is under way; every committed checkpoint must hold four whole files of one
generation, whichever processes get the stop signal.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import LocalStore
from tests.agentproc import start_agent
from tests.e2e.test_savepoints import generations_committed

NAMES = ("model.bin", "optim.bin", "rng.bin", "meta.json")
SHELL_JOB = r"""
exec 9>>"$SPOT_AGENT_LOCK_FILE"
stop=0; trap 'stop=1' TERM
g=$(head -n1 "$CHECKPOINT_DIR/meta.json" 2>/dev/null || echo 0)
while [ "$g" -lt 100000 ] && [ "$stop" = 0 ]; do
  g=$((g + 1))
  flock 9; echo "$$" >"$SPOT_AGENT_LOCK_FILE"
  for f in model.bin optim.bin rng.bin meta.json; do
    { echo "$g"; head -c 3000000 /dev/urandom | sha256sum; } >"$CHECKPOINT_DIR/.$f.tmp"
    mv "$CHECKPOINT_DIR/.$f.tmp" "$CHECKPOINT_DIR/$f"
  done
  : >"$SPOT_AGENT_LOCK_FILE"; flock -u 9
  kill -USR1 "$SPOT_AGENT_PID"
  sleep 0.2
done
"""
WHOLE = re.compile(rb"[0-9]+\n[0-9a-f]{64}  -\n")


def check_whole_generations(store: LocalStore, tmp: Path) -> int:
    job = JobStore(store, "shell")
    for seq in job.sequences():
        into = tmp / f"restored-{seq}"
        ckpt = Checkpointer(job, into)
        try:
            assert ckpt.restore(seq, into=into).manifest is not None
        finally:
            ckpt.close()
        files = {n: (into / n).read_bytes() for n in NAMES if (into / n).exists()}
        if not files:
            continue
        assert len(files) == len(NAMES), f"checkpoint {seq} lacks files: {sorted(files)}"
        torn = [n for n, data in files.items() if not WHOLE.fullmatch(data)]
        assert not torn, f"checkpoint {seq} holds torn files: { {n: files[n] for n in torn} }"
        gens = {data.split(b"\n", 1)[0] for data in files.values()}
        assert len(gens) == 1, f"checkpoint {seq} mixes generations {gens}"
    return len(job.sequences())


@pytest.mark.parametrize("to", ["default", "group"])
def test_stop_signal_sent_in_the_middle_of_a_save_waits_for_its_end(
    tmp_path: Path, to: str
) -> None:
    args = ["--job-id", "shell", "--sync-interval", "0", "--grace-period", "20"]
    args += ["--checkpoint-dir", str(tmp_path / "dir")]
    if to != "default":
        args += ["--stop-signal-to", to]
    run = start_agent(tmp_path, args, ["sh", "-c", SHELL_JOB])
    run.wait_for(lambda: generations_committed(run) >= 2, 60, "two commits")
    lock = tmp_path / "dir" / ".spot-agent" / "save.lock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not lock.stat().st_size:
        time.sleep(0.0005)
    run.signal(signal.SIGTERM)  # a save is under way now
    assert run.wait(60) == 75, run.stdout + run.stderr
    assert check_whole_generations(LocalStore(tmp_path / "store"), tmp_path) >= 2
    assert run.event("shutdown.stop_child")["to"] == ("main" if to == "default" else to)
