"""Run the real ``spot-agent`` entrypoint as a subprocess, the way a container would."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: one event of the agent: written as a single whole line, possibly inside a line of the job's
_EVENT = re.compile(r'\{"timestamp": .*?\}\n')
EXAMPLE = REPO / "examples" / "primes.py"
AGENT = [sys.executable, "-m", "agent"]


def agent_env(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment: local store under tmp, no IMDS, no Batch variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SPOT_AGENT_", "AWS_BATCH_", "CHECKPOINT_DIR"))
    }
    env.update(
        XDG_STATE_HOME=str(tmp / "state"),
        SPOT_AGENT_CHECKPOINT_URI=(tmp / "store").as_uri(),
        SPOT_AGENT_IMDS="off",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


@dataclass
class AgentRun:
    proc: subprocess.Popen[str]
    out_path: Path
    err_path: Path

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def job_stdout(self) -> str:
        """The job's own stdout: the shared stream minus the agent's events.

        In the default raw mode the job writes straight to the stdout it shares with the
        agent, so an event (one write of a whole line) can land between two writes of one
        of the job's lines (Python's print under PYTHONUNBUFFERED writes text and newline
        separately). Lifting the events out gives back the job's bytes.
        """
        return _EVENT.sub("", self.stdout)

    def has_line(self, line: str) -> bool:
        """The job printed exactly this line (the command echoed in agent.start does not count)."""
        return line in self.job_stdout().splitlines()

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def event(self, name: str) -> dict[str, Any]:
        matches = [e for e in self.events() if e.get("event") == name]
        assert matches, f"no {name!r} event in agent output:\n{self.stdout}\n{self.stderr}"
        return matches[-1]

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited {self.proc.returncode} while waiting for {what}:\n"
                    f"{self.stdout}\n{self.stderr}"
                )
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}:\n{self.stdout}\n{self.stderr}")


#: every agent a test started, so that a failed test cannot leave one running
_started: list[AgentRun] = []


def stop_leftovers(grace: float = 5.0) -> int:
    """Stop agents (and their jobs) still running after a test: SIGTERM, then SIGKILL."""
    import psutil

    left = [run for run in _started if run.proc.poll() is None]
    _started.clear()
    for run in left:
        try:
            tree = [psutil.Process(run.proc.pid), *psutil.Process(run.proc.pid).children(True)]
        except psutil.Error:
            tree = []
        run.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.proc.wait(grace)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        run.proc.wait(5)
    return len(left)


def start_agent(
    tmp: Path,
    run_args: Sequence[str],
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    name: str = "agent",
    *,
    prefix: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> AgentRun:
    """Start the agent; ``prefix`` runs it under another program (``setpriv ...``),
    ``preexec_fn`` runs in the agent's process before it starts (resource limits)."""
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    n = 1
    while out.exists():
        n += 1
        out, err = tmp / f"{name}{n}.out", tmp / f"{name}{n}.err"
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            [*prefix, *AGENT, "run", *run_args, "--", *command],
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else agent_env(tmp),
            cwd=tmp,
            text=True,
            preexec_fn=preexec_fn,
        )
    return track(AgentRun(proc, out, err))


def track(run: AgentRun) -> AgentRun:
    """Have ``stop_leftovers`` (an autouse fixture) stop this agent after the test."""
    _started.append(run)
    return run


def run_agent(
    tmp: Path,
    run_args: Sequence[str],
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    *,
    prefix: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> AgentRun:
    run = start_agent(tmp, run_args, command, env, prefix=prefix, preexec_fn=preexec_fn)
    run.wait(timeout)
    return run


def cli(
    tmp: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, *args],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else agent_env(tmp),
        cwd=tmp,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def without_file_permission_override() -> list[str]:
    """A command prefix under which file permission bits apply to the agent and its job.

    Tests run as root here, and root reads a chmod 000 file. ``setpriv`` drops the two
    capabilities that bypass permission bits from the bounding set, so the agent (still
    uid 0, owner of the files) gets EACCES like any user would. Not root: no prefix needed.
    Raises ``pytest.skip`` when root cannot drop them (no setpriv, no CAP_SETPCAP).
    """
    import shutil

    import pytest

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permission bits cannot be enforced")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp, "unreadable")
        probe.write_text("x")
        probe.chmod(0)
        out = subprocess.run(
            [*prefix, sys.executable, "-c", f"open({str(probe)!r}).read()"],
            capture_output=True,
            timeout=30,
        )
    if b"PermissionError" not in out.stderr:
        pytest.skip(f"setpriv cannot make permission bits apply here: {out.stderr[-200:]!r}")
    return prefix
