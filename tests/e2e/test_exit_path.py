"""The agent's way out after a warm restart, through the whole entrypoint: from the job's
end to the agent's exit it touches no file of the dir one by one.

Before, the final sync froze the dir like any other: after a restart the freeze area is
empty, so it hard-linked every file into it (a link moves the file's ctime, so the
unchanged sync rewrote the whole local index), and the exit unlinked them all again
(moving every ctime once more, and rewriting the index again). For 100,000 files that
was most of the 17 s from the job's end to the agent's exit, against a logged sync of 4 s
(bench/exit_path.py; 3 s since). With the job's processes gone, the final sync reads the
dir in place: no file's ctime moves, and the index is not rewritten when nothing changed.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from checkpoint.engine.localdir.indexfile import index_path
from tests.agentproc import AgentRun, agent_env, run_agent, start_agent

FILES = 300
OLD = 1_600_000_000 * 10**9  # far from racy: the local index vouches for these
#: the job: makes its files (old mtimes) the first time; then, with "wait", says so and
#: waits for the agent's stop signal
JOB = textwrap.dedent(f"""
    import os, pathlib, sys, time
    d = pathlib.Path(os.environ["CHECKPOINT_DIR"])
    if not (d / "d0").exists():
        for i in range({FILES}):
            (d / f"d{{i % 10}}").mkdir(exist_ok=True)
            p = d / f"d{{i % 10}}" / f"f{{i:04d}}"
            p.write_bytes(os.urandom(500 + i))
            os.utime(p, ns=({OLD}, {OLD}))
    if sys.argv[1:] == ["wait"]:
        print("job waiting", flush=True)
        time.sleep(600)
""")


def ctimes(d: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirs, names in os.walk(d):
        dirs[:] = [n for n in dirs if n != ".spot-agent"]
        for name in names:
            found[os.path.join(dirpath, name)] = os.lstat(os.path.join(dirpath, name)).st_ctime_ns
    return found


@pytest.fixture
def warm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A dir that holds the job's checkpoint, with its local index."""
    (tmp_path / "job.py").write_text(JOB)
    work = tmp_path / "work"
    env = agent_env(tmp_path, {"SPOT_AGENT_CHECKPOINT_DIR": str(work)})
    first = run_agent(tmp_path, ["--job-id", "exit"], [sys.executable, "job.py"], env)
    assert first.proc.returncode == 0, first.stderr
    assert first.event("sync.committed")["files"] == FILES
    return env, work


def _touched_nothing(run: AgentRun, work: Path, before: dict[str, int], index_ns: int) -> None:
    restored = run.event("restore.done")
    assert restored["files_indexed"] == FILES and restored["bytes_hashed"] == 0
    final = run.event("sync.unchanged")
    assert final["bytes_hashed"] == 0
    assert ctimes(work) == before  # no file was linked or unlinked, from start to exit
    assert index_path(work).stat().st_mtime_ns == index_ns  # nor the index rewritten
    assert not (work / ".spot-agent" / "freeze").exists()


def test_a_job_that_exits_leaves_every_file_untouched(
    tmp_path: Path, warm: tuple[dict[str, str], Path]
) -> None:
    env, work = warm
    before, index_ns = ctimes(work), index_path(work).stat().st_mtime_ns
    run = run_agent(tmp_path, ["--job-id", "exit"], [sys.executable, "job.py"], env)
    assert run.proc.returncode == 0, run.stderr
    _touched_nothing(run, work, before, index_ns)


def test_a_job_stopped_by_sigterm_leaves_every_file_untouched(
    tmp_path: Path, warm: tuple[dict[str, str], Path]
) -> None:
    env, work = warm
    before, index_ns = ctimes(work), index_path(work).stat().st_mtime_ns
    run = start_agent(tmp_path, ["--job-id", "exit"], [sys.executable, "job.py", "wait"], env)
    run.wait_for(lambda: run.has_line("job waiting"), what="the job to start")
    run.signal()
    assert run.wait(60) == 75, run.stderr
    _touched_nothing(run, work, before, index_ns)
    assert run.event("shutdown.final_checkpoint")["nothing_new"] is True
