"""Issue 12's rows: one big file, many small files, warm restart, sync with nothing changed.

Every tool runs as its users run it, from its command line: spot-agent as `python -m agent
run` (upload: the job is `true`, so the run is restore-nothing, final sync, exit) and
`python -m agent checkpoints restore`; s5cmd and `aws s3` with their defaults. Each
repetition uploads to a bucket of its own, so every upload is a first upload, and rotates
the order of the tools, so no tool always pays (or skips) a cold page cache; a row is the
median of its repetitions. Requests are counted by the server (bench.s3counts); RSS and CPU
are the tool's process tree's (bench.tracked).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agentruns import _events, _hwm_mib, agent_env, event_list
from .procs import REPO, aws_command, s5cmd_binary
from .s3counts import RequestCounter, total
from .samples import Collector, note_copies, sample_of, skipped_sample
from .tracked import Tracked
from .transfer import tree_size

MiB = 1 << 20
HOUR_NS = 3600 * 10**9
CRT_TOOL = "awscrt S3Client (parts of 8 MiB)"
Row = dict[str, Any]
AGENT = [sys.executable, "-m", "agent"]
SYNC_EVENTS = ("sync.committed", "sync.unchanged")
# The CLIs leave out what the agent keeps in the dir it syncs (its lock file, freeze area):
# they are to copy the job's files, as the agent does.
NOT_AGENT_FILES = ["--exclude", "*.spot-agent/*"]
# The warm-restart job (args: STARTED GO [COMMAND...]): run COMMAND if given (the change a
# job makes before the next sync), say it started, then wait for the benchmark's word to
# exit 0. sh, not Python: the job's own start-up must not count against the restart.
WAIT_JOB = [
    "sh",
    "-c",
    'started=$0 go=$1; shift; if [ $# -gt 0 ]; then "$@" || exit 1; fi; '
    'touch "$started"; while [ ! -e "$go" ]; do sleep 0.01; done',
]


@dataclass(frozen=True)
class Sizes:
    big_mib: int = 4096
    small_files: int = 20_000
    small_kib: int = 16
    reps: int = 3


QUICK = Sizes(big_mib=512, small_files=2_000)


def write_random(path: Path, mib: int) -> None:
    """A file of ``mib`` MiB of random bytes (whole 8 MiB pieces)."""
    with open(path, "wb") as fh:
        for _ in range(mib // 8):
            fh.write(os.urandom(8 * MiB))


def make_big(root: Path, mib: int) -> None:
    root.mkdir(parents=True)
    write_random(root / "big.bin", mib)


def make_small(root: Path, count: int, kib: int, per_dir: int = 1000) -> None:
    """``count`` files of ``kib`` KiB of random bytes, ``per_dir`` to a directory."""
    for i in range(count):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(kib * 1024))


def size_label(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def age_files(root: Path) -> None:
    """Files written an hour ago: the stat cache keeps no file written in the last 2 s, and
    a CLI's sync sends a file newer than its object."""
    old = time.time_ns() - HOUR_NS
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            os.utime(os.path.join(dirpath, name), ns=(old, old))


def _sizes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _rotated(items: list[str], r: int) -> list[str]:
    k = r % len(items)
    return items[k:] + items[:k]


class ScaleBench:
    TOOLS = ["spot-agent", "s5cmd", "aws"]

    def __init__(
        self,
        env: Mapping[str, str],
        endpoint: str,
        work: Path,
        s3: Any,
        counter: RequestCounter,
        log: Callable[[str], None],
        awscrt_path: Path | None = None,
    ) -> None:
        self.env, self.work, self.s3, self.counter, self.log = env, work, s3, counter, log
        self.endpoint = endpoint
        self.crt_env = None
        if awscrt_path is not None:  # awscrt for the crtcopy process alone (see bench.crtcopy)
            self.crt_env = {**env, "PYTHONPATH": os.pathsep.join([str(awscrt_path), str(REPO)])}
        self.s5 = [s5cmd_binary(), "--endpoint-url", endpoint]
        self.aws = [*aws_command(), "--endpoint-url", endpoint]
        # Caps on each run (bench.issue23 sets them): a command stopped by one is not run
        # again in this data set, and its later rows say why.
        self.run_timeout = 1800.0
        self.time_caps: dict[str, float] = {}  # by command (see _command), seconds
        self.rss_cap_mib: float | None = None
        self.not_run: dict[str, str] = {}  # command -> why

    def dataset(
        self, name: str, label: str, make: Callable[[Path], None], reps: int, *, crt: bool = False
    ) -> list[Row]:
        """All rows of one data set; ``crt``: add awscrt's S3 client to upload and restore."""
        data = self.work / name
        make(data)
        files, size = tree_size(data)
        made = _sizes(data)  # what a restore must bring back, whatever else the dir gains
        movers = [*self.TOOLS, "awscrt"] if crt and self.crt_env else self.TOOLS
        self.log(f"{label}: {files} files, {size / MiB:.0f} MiB, {reps} repetitions")
        samples = Collector(self.log)
        keep = samples.keep
        bucket = ""
        try:
            for r in range(reps):
                bucket = f"bench-{name}-r{r}"
                self.s3.create_bucket(Bucket=bucket)
                agent = self._agent_env(bucket, data, self.work / f"agent-{name}-{r}")
                for tool in _rotated(movers, r):
                    keep("upload", *self._upload(tool, data, bucket, agent, r))
                # The CLIs first: the agent's warm restart must not change what they compare.
                for tool in _rotated(self.TOOLS[1:], r):
                    keep("unchanged sync", *self._cli_sync_up(tool, data, bucket, r))
                    keep("warm restart", *self._cli_sync_down(tool, data, bucket, r))
                warm, unchanged = self._warm_restart(agent, r)
                keep("warm restart", "spot-agent", warm)
                keep("unchanged sync", "spot-agent", unchanged)
                for tool in _rotated(movers, r):
                    keep("restore", *self._restore(tool, bucket, agent, data, made, r))
                self.s3.delete_bucket(Bucket=bucket)  # SeaweedFS drops the whole collection
        finally:  # gigabytes of data must not outlive a failed data set
            with contextlib.suppress(Exception):  # deleted already when the rep finished
                self.s3.delete_bucket(Bucket=bucket)
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(self.work / "restore", ignore_errors=True)
        return samples.rows(
            label, (files, size), ["upload", "restore", "warm restart", "unchanged sync"]
        )

    # -- one run of one tool --------------------------------------------------------------

    def _agent_env(self, bucket: str, data: Path, home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        return agent_env(
            self.env,
            home,
            SPOT_AGENT_CHECKPOINT_URI=f"s3://{bucket}/spot",
            SPOT_AGENT_CHECKPOINT_DIR=str(data),
            SPOT_AGENT_JOB_ID="bench",
        )

    def _command(self, argv: list[str]) -> str:
        """What a cap applies to: 's5cmd sync', 's5cmd cp', 'aws s3' or 'spot-agent'."""
        if argv[: len(self.s5)] == self.s5:
            return f"s5cmd {argv[len(self.s5)]}"
        return "aws s3" if argv[: len(self.aws)] == self.aws else "spot-agent"

    def _measure(self, argv: list[str], env: Mapping[str, str], r: int) -> Row:
        command = self._command(argv)
        if command in self.not_run:
            return skipped_sample(r, self.not_run[command])
        before = self.counter.snapshot()
        out = self.work / "tool.out"
        tracked = Tracked(argv, env, cwd=self.work, output=out, rss_cap_mib=self.rss_cap_mib)
        run = tracked.wait(self.time_caps.get(command, self.run_timeout))
        if run.stopped:
            self.not_run[command] = f"`{command}` was stopped in an earlier run: {run.stopped}"
        return sample_of(run, self.counter.since(before), r)

    def _upload(
        self, tool: str, data: Path, bucket: str, agent: dict[str, str], r: int
    ) -> tuple[str, Row]:
        if tool == "spot-agent":
            return "spot-agent", self._measure([*AGENT, "run", "--", "true"], agent, r)
        if tool == "s5cmd":
            argv = [*self.s5, "cp", *NOT_AGENT_FILES, f"{data}/*", f"s3://{bucket}/s5cmd/"]
            return "s5cmd cp", self._measure(argv, self.env, r)
        if tool == "awscrt":
            return CRT_TOOL, self._crt("put", bucket, data, r)
        argv = [
            *self.aws,
            "s3",
            "cp",
            "--recursive",
            "--no-progress",
            *NOT_AGENT_FILES,
            str(data),
            f"s3://{bucket}/aws/",
        ]
        return "aws s3 cp --recursive", self._measure(argv, self.env, r)

    def _restore(
        self,
        tool: str,
        bucket: str,
        agent: dict[str, str],
        data: Path,
        expect: dict[str, int],
        r: int,
    ) -> tuple[str, Row]:
        dest = self.work / "restore"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        if tool == "awscrt":
            sample = self._crt("get", bucket, dest, r, names=sorted(expect))
            return CRT_TOOL, self._verified(sample, dest, expect)
        if tool == "spot-agent":
            name, env = "spot-agent", agent
            argv = [*AGENT, "checkpoints", "restore", "--to", str(dest)]
        elif tool == "s5cmd":
            name, env = "s5cmd cp", dict(self.env)
            argv = [*self.s5, "cp", f"s3://{bucket}/s5cmd/*", f"{dest}/"]
        else:
            name, env = "aws s3 cp --recursive", dict(self.env)
            argv = [
                *self.aws,
                "s3",
                "cp",
                "--recursive",
                "--no-progress",
                f"s3://{bucket}/aws/",
                str(dest),
            ]
        return name, self._verified(self._measure(argv, env, r), dest, expect)

    def _verified(self, sample: Row, dest: Path, expect: dict[str, int]) -> Row:
        """Every file the data set was made of, at its size. Files the agent may keep in
        its dir (and the CLIs then copy too) are no failure of a restore."""
        got = _sizes(dest)
        wrong = [name for name, size in expect.items() if got.get(name) != size]
        if "error" not in sample and wrong:
            sample["error"] = (
                f"{len(wrong)} of {len(expect)} files missing or cut short: {wrong[:3]}"
            )
        shutil.rmtree(dest)
        return sample

    def _crt(
        self, op: str, bucket: str, directory: Path, r: int, names: list[str] | None = None
    ) -> Row:
        """bench.crtcopy of the named files (default: every file in directory)."""
        assert self.crt_env is not None
        if names is None:
            names = sorted(_sizes(directory))
        argv = [sys.executable, "-m", "bench.crtcopy", op, self.endpoint, bucket, "crt"]
        return self._measure([*argv, str(directory), *names], self.crt_env, r)

    def _cli_sync_up(self, tool: str, data: Path, bucket: str, r: int) -> tuple[str, Row]:
        if tool == "s5cmd":
            name = "s5cmd sync"
            argv = [*self.s5, "sync", *NOT_AGENT_FILES, f"{data}/", f"s3://{bucket}/s5cmd/"]
        else:
            name = "aws s3 sync"
            argv = [*self.aws, "s3", "sync", "--no-progress", *NOT_AGENT_FILES]
            argv += [str(data), f"s3://{bucket}/aws/"]
        sample = self._measure(argv, self.env, r)
        note_copies(sample)
        return name, sample

    def _cli_sync_down(self, tool: str, data: Path, bucket: str, r: int) -> tuple[str, Row]:
        """What a CLI user runs at start to make an intact dir match the store. Size only:
        the objects are newer than the files they came from, so a time check re-sends all."""
        if tool == "s5cmd":
            name = "s5cmd sync --size-only (down)"
            argv = [*self.s5, "sync", "--size-only", f"s3://{bucket}/s5cmd/*", f"{data}/"]
        else:
            name = "aws s3 sync --size-only (down)"
            argv = [
                *self.aws,
                "s3",
                "sync",
                "--size-only",
                "--no-progress",
                f"s3://{bucket}/aws/",
                str(data),
            ]
        sample = self._measure(argv, self.env, r)
        note_copies(sample)
        return name, sample

    def _warm_restart(
        self, agent: dict[str, str], r: int, change: list[str] | None = None
    ) -> tuple[Row, Row]:
        """`spot-agent run` on a dir that holds its checkpoint: seconds and requests until
        the job starts; then the job exits and the final sync finds nothing changed, or,
        with ``change`` (a command the job runs first), commits what that command changed.
        The sync's CPU is the agent's own: the job's CPU (the change) is left out."""
        import psutil

        started, go = self.work / "job-started", self.work / "job-go"
        started.unlink(missing_ok=True)
        go.unlink(missing_ok=True)
        before = self.counter.snapshot()
        proc = Tracked(
            [*AGENT, "run", "--", *WAIT_JOB, str(started), str(go), *(change or [])],
            agent,
            cwd=self.work,
            output=self.work / "agent.out",
        )
        try:
            seconds = proc.poll_until(started.exists, timeout=self.run_timeout)
            agent_proc = psutil.Process(proc.tool_pid)
            times = agent_proc.cpu_times()
            cpu_at_start = times.user + times.system
            job_cpu = sum(_tree_cpu(job) for job in agent_proc.children())
            hwm = _hwm_mib(proc.tool_pid)
            warm_requests = self.counter.since(before)
        except RuntimeError as exc:  # the agent exited (or hung) before the job started
            go.touch()
            failed = sample_of(proc.wait(), {}, r)
            failed.setdefault("error", str(exc)[:300])
            return failed, dict(failed)
        middle = self.counter.snapshot()
        go.touch()
        told = proc.seconds_so_far()
        run = proc.wait(self.run_timeout)
        events = _events(run.output)
        restored = events.get("restore.done", {}).get("seconds")
        warm = {
            "rep": r,
            "seconds": seconds,
            "cpu_seconds": cpu_at_start,
            "peak_rss_mib": hwm,
            "requests_by_kind": warm_requests,
            "requests": total(warm_requests),
            "note": "until the job started",
        }
        if restored is not None:
            warm["restore_step_seconds"] = float(restored)
        # The last sync of the run: the final one, after the job (another may come first).
        syncs = [e for e in event_list(run.output) if e.get("event") in SYNC_EVENTS]
        synced = syncs[-1] if syncs else {}
        unchanged = sample_of(run, self.counter.since(middle), r)
        if "seconds" not in synced:  # no sync event in its log: the wait at the job's end
            synced = {"seconds": run.seconds - told}
        unchanged.update(
            seconds=float(synced["seconds"]),
            cpu_seconds=run.cpu - cpu_at_start - job_cpu,
            seconds_job_end_to_exit=run.seconds - told,
            no_ratios=True,  # a sync inside a running agent vs a CLI's whole process
            note="the final sync inside that warm agent: its logged seconds",
        )
        if synced.get("event") == "sync.committed":
            unchanged["note"] += f"; it committed a checkpoint ({synced.get('bytes_uploaded')} B)"
        if len(syncs) > 1:
            unchanged["note"] += f"; {len(syncs)} syncs in the run, the last one counted"
        return warm, unchanged


def _tree_cpu(proc: Any) -> float:
    """CPU seconds of a process and of the children it has reaped so far."""
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)
