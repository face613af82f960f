"""What the job inherits at start, as tini and dumb-init test it: its working directory
(while the agent has already left it) and the signals its parent ignored or blocked."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.agentproc import AGENT, agent_env

#: agents started at once: their start-ups compete for the CPU, which is what opened the
#: window (1 run in 4 under dumb-init's test on a busy machine)
TOGETHER = 8


def test_a_fast_job_never_sees_the_agent_in_its_directory(tmp_path: Path) -> None:
    """dumb-init's test_working_directories: the job starts where the agent was started,
    and the agent, its parent, is already in / when the job first looks."""
    start = tmp_path / "start here"
    start.mkdir()
    job = "readlink /proc/$PPID/cwd; readlink /proc/$$/cwd"
    procs = []
    for n in range(TOGETHER):
        procs.append(
            subprocess.Popen(
                [*AGENT, "run", "--job-id", f"cwd{n}", "--", "sh", "-c", job],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=agent_env(tmp_path),
                cwd=start,
                text=True,
            )
        )
    seen = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen.append([line for line in out.splitlines() if not line.startswith("{")])
    assert seen == [["/", str(start)]] * TOGETHER


def test_a_relative_command_still_runs_from_the_start_directory(tmp_path: Path) -> None:
    """The job's directory comes back before exec, so ``./job`` is found where it was."""
    (tmp_path / "job").write_text("#!/bin/sh\necho ran in $(pwd)\n")
    (tmp_path / "job").chmod(0o755)
    r = subprocess.run(
        [*AGENT, "run", "--job-id", "rel", "--", "./job"],
        capture_output=True,
        text=True,
        env=agent_env(tmp_path),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert f"ran in {tmp_path}" in r.stdout.splitlines()


def _sig_mask(status: str, field: str) -> set[int]:
    """The signals of a /proc/PID/status mask line (SigIgn, SigBlk)."""
    for line in status.splitlines():
        if line.startswith(field + ":"):
            bits = int(line.split()[1], 16)
            return {n + 1 for n in range(64) if bits >> n & 1}
    raise AssertionError(f"no {field} in {status!r}")


def _job_status_under(tmp: Path, ignore: list[int], block: list[int]) -> str:
    """Start the agent from a parent that ignores ``ignore`` and blocks ``block`` (as
    ``nohup`` or tini's sigconf-test does), and return the job's /proc/self/status.
    The job is ``cat`` itself: a shell (dash) would clear the mask it was given."""
    parent = (
        "import os, signal, sys\n"
        f"for s in {ignore!r}: signal.signal(s, signal.SIG_IGN)\n"
        f"signal.pthread_sigmask(signal.SIG_BLOCK, {block!r})\n"
        "os.execvp(sys.argv[1], sys.argv[1:])\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            parent,
            *AGENT,
            "run",
            "--job-id",
            "sigconf",
            "--",
            "cat",
            "/proc/self/status",
        ],
        capture_output=True,
        text=True,
        env=agent_env(tmp),
        cwd=tmp,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return "\n".join(line for line in r.stdout.splitlines() if not line.startswith("{"))


def test_signals_ignored_by_the_agents_parent_stay_ignored_in_the_job(tmp_path: Path) -> None:
    """nohup's SIGHUP and a shell's ``&`` SIGINT: the job keeps them ignored, as under tini."""
    ignored = [signal.SIGHUP, signal.SIGINT, signal.SIGUSR2, signal.SIGRTMIN + 3]
    status = _job_status_under(tmp_path, [int(s) for s in ignored], [])
    kept = _sig_mask(status, "SigIgn")
    assert {int(s) for s in ignored} <= kept, kept
    # and nothing else: what the parent left at its default is at its default
    assert not kept & {int(signal.SIGTERM), int(signal.SIGQUIT), int(signal.SIGUSR1)}
    assert not _sig_mask(status, "SigBlk")


def test_signals_blocked_by_the_agents_parent_stay_blocked_except_the_stop_signal(
    tmp_path: Path,
) -> None:
    """tini's sigconf test blocks SIGTTIN, SIGILL and SIGQUIT: the job finds them blocked.
    The stop signal is the exception: blocked, it would hold off the agent's request to
    stop until SIGKILL, and the final checkpoint would miss the job's last save."""
    blocked = [signal.SIGTTIN, signal.SIGQUIT, signal.SIGUSR2, signal.SIGTERM]
    status = _job_status_under(tmp_path, [], [int(s) for s in blocked])
    assert _sig_mask(status, "SigBlk") == {int(signal.SIGTTIN), int(signal.SIGQUIT),
                                           int(signal.SIGUSR2)}  # fmt: skip
    assert not _sig_mask(status, "SigIgn")


def test_a_job_started_with_no_inherited_state_gets_the_defaults(tmp_path: Path) -> None:
    status = _job_status_under(tmp_path, [], [])
    assert not _sig_mask(status, "SigIgn") and not _sig_mask(status, "SigBlk")
