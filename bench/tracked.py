"""A tool's process under measurement: wall time, rusage of its tree, and its RSS over time.

procs.run_measured gives wall time and CPU; this adds what issue 12 asks of every row: the
peak resident set (the kernel's own high-water mark, so spikes between samples count too)
and a timeline sampled every ``interval`` seconds, and lets a caller act while the process
runs (the warm-restart rows wait for the job to start, then let it finish).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _gnu_time() -> str | None:
    found = shutil.which("time", path="/usr/bin:/bin")  # the program, not the shell keyword
    if found is None:
        return None
    probe = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    return found if "GNU" in probe.stdout + probe.stderr else None


GNU_TIME = _gnu_time()


@dataclass
class Run:
    argv: list[str]
    seconds: float
    cpu: float  # user + system of the process and every descendant it waited for
    peak_rss_mib: float  # the root process's VmHWM, as last seen (see Tracked._sample)
    rss_timeline: list[tuple[float, float]] = field(default_factory=list)  # (s, MiB), root
    returncode: int = 0
    output: str = ""
    stopped: str | None = None  # why the benchmark killed it (a time or memory cap)

    def rss_summary(self) -> dict[str, Any]:
        """At most 60 (seconds, MiB) points, enough to draw the curve, and its median."""
        points = self.rss_timeline
        step = max(1, len(points) // 60)
        values = sorted(mib for _t, mib in points)
        return {
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "median_rss_mib": round(values[len(values) // 2], 1) if values else None,
            "rss_timeline_mib": [(round(t, 2), round(m, 1)) for t, m in points[::step]],
        }


class Tracked:
    """Start argv now; sample the root process's RSS in a thread until it is reaped."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path,
        output: Path,
        interval: float = 0.05,
        rss_cap_mib: float | None = None,
    ) -> None:
        """``rss_cap_mib``: kill the tool once its resident set passes this (a rival that
        holds its whole listing must not take the shared machine down with it)."""
        self.argv = list(argv)
        self.rss_cap_mib = rss_cap_mib
        self.stopped: str | None = None
        self.output_path = output
        self._out = open(output, "w+")  # noqa: SIM115  (closed in wait(); a file, not a pipe)
        self._maxrss_file = output.with_suffix(".maxrss")
        self._maxrss_file.unlink(missing_ok=True)
        launch = self.argv
        if GNU_TIME:  # GNU time forks the tool from its own tiny image: an exact peak
            launch = [GNU_TIME, "-q", "-f", "%M", "-o", str(self._maxrss_file), *self.argv]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            launch,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
        )
        self.tool_pid = self._find_tool() if GNU_TIME else self.proc.pid
        self._timeline: list[tuple[float, float]] = []
        self.peak_rss_mib = 0.0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._sampler.start()

    def _find_tool(self) -> int:
        """The tool's pid: the child GNU time forks (a moment after Popen returns)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for _ in range(2000):
            try:
                found = children.read_text().split()
            except OSError:
                break  # time has exited already
            if found:
                return int(found[0])
            time.sleep(0.0005)
        return self.proc.pid

    def _sample(self, interval: float) -> None:
        """VmRSS now and VmHWM (the peak so far) of the tool's process, every interval.

        Not wait4's ru_maxrss: Linux carries the forking parent's resident set into the
        child's maxrss across exec, so a tool started from the benchmark would show at least
        the benchmark's own ~60 MiB. GNU time's %M (the tool forked from time's tiny image)
        is exact; without GNU time, the last VmHWM seen (a process shorter than one interval
        may be under-reported).
        """
        status = f"/proc/{self.tool_pid}/status"
        while not self._done.is_set():
            try:
                with open(status) as fh:
                    fields = dict(line.split(":", 1) for line in fh if line.startswith("Vm"))
                rss, hwm = (int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
            except (OSError, KeyError, ValueError):
                return  # it exited (a zombie has no Vm lines): nothing more to sample
            self._timeline.append((time.monotonic() - self.started, rss))
            self.peak_rss_mib = max(self.peak_rss_mib, hwm)
            if self.rss_cap_mib is not None and rss > self.rss_cap_mib:
                self.stop(f"its RSS passed the {self.rss_cap_mib:.0f} MiB cap ({rss:.0f} MiB)")
                return
            self._done.wait(interval)

    def poll_until(self, ready: Callable[[], bool], timeout: float) -> float:
        """Seconds from the start until ready() holds; raise if the process ends first."""
        deadline = time.monotonic() + timeout
        while not ready():
            # waitid with WNOWAIT, not Popen.poll: wait() must still reap it for its rusage
            ended = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if ended is not None:
                raise RuntimeError(
                    f"{self.argv[:4]} exited {ended.si_status} early:\n"
                    f"{self.output_path.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[:4]} not ready after {timeout} s")
            time.sleep(0.002)
        return time.monotonic() - self.started

    def seconds_so_far(self) -> float:
        return time.monotonic() - self.started

    def stop(self, why: str) -> None:
        """Kill the tool (and GNU time with it) and remember why; wait() still reaps it."""
        self.stopped = self.stopped or why
        for pid in {self.tool_pid, self.proc.pid}:  # not Popen.kill: it may reap the process
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def wait(self, timeout: float = 1800) -> Run:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.stop(f"it ran past the {timeout:.0f} s time cap")
                deadline = float("inf")
            time.sleep(0.005)
        seconds = time.monotonic() - self.started
        with contextlib.suppress(OSError, ValueError, IndexError):
            kib = int(self._maxrss_file.read_text().split()[-1])
            self.peak_rss_mib = kib / 1024  # exact, where GNU time measured it
        self._maxrss_file.unlink(missing_ok=True)
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        self._done.set()
        self._sampler.join()
        self._out.seek(0)
        text = self._out.read()
        self._out.close()
        return Run(
            self.argv,
            seconds,
            ru.ru_utime + ru.ru_stime,
            self.peak_rss_mib,
            self._timeline,
            self.proc.returncode,
            text,
            self.stopped,
        )


def run_tracked(argv: Sequence[str], env: Mapping[str, str], *, cwd: Path, output: Path) -> Run:
    return Tracked(argv, env, cwd=cwd, output=output).wait()
