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
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agentruns import _events, _hwm_mib, agent_env
from .procs import REPO, aws_command, s5cmd_binary
from .s3counts import RequestCounter, total
from .samples import median_row, note_copies, sample_of
from .tracked import Tracked
from .transfer import tree_size

MiB = 1 << 20
CRT_TOOL = "awscrt S3Client (parts of 8 MiB)"
Row = dict[str, Any]
AGENT = [sys.executable, "-m", "agent"]
# The warm-restart job: say it started, then wait for the benchmark's word to exit 0.
WAIT_JOB = ["sh", "-c", 'touch "$0"; while [ ! -e "$1" ]; do sleep 0.01; done']


@dataclass(frozen=True)
class Sizes:
    big_mib: int = 4096
    small_files: int = 20_000
    small_kib: int = 16
    reps: int = 3


QUICK = Sizes(big_mib=512, small_files=2_000)


def make_big(root: Path, mib: int) -> None:
    root.mkdir(parents=True)
    with open(root / "big.bin", "wb") as fh:
        for _ in range(mib // 8):
            fh.write(os.urandom(8 * MiB))


def make_small(root: Path, count: int, kib: int) -> None:
    """``count`` files of ``kib`` KiB of random bytes, 1,000 to a directory."""
    for i in range(count):
        d = root / f"d{i // 1000:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(kib * 1024))


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
        runs: dict[tuple[str, str], list[Row]] = defaultdict(list)

        def keep(scenario: str, tool: str, sample: Row) -> None:
            runs[(scenario, tool)].append(sample)
            err = f"  FAILED: {sample['error']}" if "error" in sample else ""
            self.log(
                f"  r{sample['rep']} {scenario:<15} {tool:<36} {sample['seconds']:7.2f} s "
                f"cpu {sample.get('cpu_seconds') or 0:6.2f} s  req {sample.get('requests')}  "
                f"rss {sample.get('peak_rss_mib') or 0:4.0f} MiB{err}"
            )

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
        rows = []
        for (scenario, tool), samples in runs.items():
            rows.append(median_row(scenario, label, tool, samples, (files, size)))
        order = ["upload", "restore", "warm restart", "unchanged sync"]
        rows.sort(key=lambda row: order.index(row["scenario"]))
        return rows

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

    def _measure(self, argv: list[str], env: Mapping[str, str], r: int) -> Row:
        before = self.counter.snapshot()
        run = Tracked(argv, env, cwd=self.work, output=self.work / "tool.out").wait()
        return sample_of(run, self.counter.since(before), r)

    def _upload(
        self, tool: str, data: Path, bucket: str, agent: dict[str, str], r: int
    ) -> tuple[str, Row]:
        if tool == "spot-agent":
            return "spot-agent", self._measure([*AGENT, "run", "--", "true"], agent, r)
        if tool == "s5cmd":
            argv = [*self.s5, "cp", f"{data}/*", f"s3://{bucket}/s5cmd/"]
            return "s5cmd cp", self._measure(argv, self.env, r)
        if tool == "awscrt":
            return CRT_TOOL, self._crt("put", bucket, data, r)
        argv = [
            *self.aws,
            "s3",
            "cp",
            "--recursive",
            "--no-progress",
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
            name, argv = "s5cmd sync", [*self.s5, "sync", f"{data}/", f"s3://{bucket}/s5cmd/"]
        else:
            name = "aws s3 sync"
            argv = [*self.aws, "s3", "sync", "--no-progress", str(data), f"s3://{bucket}/aws/"]
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

    def _warm_restart(self, agent: dict[str, str], r: int) -> tuple[Row, Row]:
        """`spot-agent run` on a dir that holds its checkpoint: seconds and requests until
        the job starts; then the job exits and the final sync finds nothing changed."""
        import psutil

        started, go = self.work / "job-started", self.work / "job-go"
        started.unlink(missing_ok=True)
        go.unlink(missing_ok=True)
        before = self.counter.snapshot()
        proc = Tracked(
            [*AGENT, "run", "--", *WAIT_JOB, str(started), str(go)],
            agent,
            cwd=self.work,
            output=self.work / "agent.out",
        )
        try:
            seconds = proc.poll_until(started.exists, timeout=600)
            times = psutil.Process(proc.tool_pid).cpu_times()
            cpu_at_start = times.user + times.system
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
        run = proc.wait()
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
        synced = events.get("sync.unchanged") or events.get("sync.committed") or {}
        unchanged = sample_of(run, self.counter.since(middle), r)
        if "seconds" not in synced:  # no sync event in its log: the wait at the job's end
            synced = {"seconds": run.seconds - told}
        unchanged.update(
            seconds=float(synced["seconds"]),
            cpu_seconds=run.cpu - cpu_at_start,
            seconds_job_end_to_exit=run.seconds - told,
            no_ratios=True,  # a sync inside a running agent vs a CLI's whole process
            note="the final sync inside that warm agent: its logged seconds",
        )
        if "sync.committed" in events:
            unchanged["note"] += f"; it committed a checkpoint ({synced.get('bytes_uploaded')} B)"
        return warm, unchanged
