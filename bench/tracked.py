"""A tool's process under measurement: wall time, rusage of its tree, and its RSS over time.

procs.run_measured gives wall time and CPU; this adds what issue 12 asks of every row: the
peak resident set (the kernel's own high-water mark, so spikes between samples count too)
and a timeline sampled every ``interval`` seconds, and lets a caller act while the process
runs (the warm-restart rows wait for the job to start, then let it finish).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Run:
    argv: list[str]
    seconds: float
    cpu: float  # user + system of the process and every descendant it waited for
    peak_rss_mib: float  # the root process's VmHWM, as last seen (see Tracked._sample)
    rss_timeline: list[tuple[float, float]] = field(default_factory=list)  # (s, MiB), root
    returncode: int = 0
    output: str = ""

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
    ) -> None:
        self.argv = list(argv)
        self.output_path = output
        self._out = open(output, "w+")  # noqa: SIM115  (closed in wait(); a file, not a pipe)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
        )
        self._timeline: list[tuple[float, float]] = []
        self.peak_rss_mib = 0.0
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._sampler.start()

    def _sample(self, interval: float) -> None:
        """VmRSS now and VmHWM (the peak so far) of the root process, every interval.

        Not wait4's ru_maxrss: Linux carries the forking parent's resident set into the
        child's maxrss across exec, so every tool would show at least the benchmark's own
        ~60 MiB. VmHWM belongs to the exec'd image alone; Popen returns after the exec.
        """
        status = f"/proc/{self.proc.pid}/status"
        while not self._done.is_set():
            try:
                with open(status) as fh:
                    fields = dict(line.split(":", 1) for line in fh if line.startswith("Vm"))
                rss, hwm = (int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
            except (OSError, KeyError, ValueError):
                return  # it exited (a zombie has no Vm lines): nothing more to sample
            self._timeline.append((time.monotonic() - self.started, rss))
            self.peak_rss_mib = max(self.peak_rss_mib, hwm)
            self._done.wait(interval)

    def poll_until(self, ready: Callable[[], bool], timeout: float) -> float:
        """Seconds from the start until ready() holds; raise if the process ends first."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[:4]} exited {self.proc.returncode} early:\n"
                    f"{self.output_path.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[:4]} not ready after {timeout} s")
            time.sleep(0.002)
        return time.monotonic() - self.started

    def seconds_so_far(self) -> float:
        return time.monotonic() - self.started

    def wait(self, timeout: float = 1800) -> Run:
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                deadline = float("inf")
            time.sleep(0.005)
        seconds = time.monotonic() - self.started
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
        )


def run_tracked(argv: Sequence[str], env: Mapping[str, str], *, cwd: Path, output: Path) -> Run:
    return Tracked(argv, env, cwd=cwd, output=output).wait()
