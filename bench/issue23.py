"""Issue 23's rows: a million small files, a training dir, big-file restores.

Built on bench.scale's harness (every tool from its command line, one local SeaweedFS,
requests counted by the server, CPU and peak RSS of the tool's process tree, tools in
rotated order, medians of interleaved repetitions). Each data set is generated once, aged
an hour (as a job's files written a while ago) and reused by every tool and repetition;
each repetition uploads into a bucket of its own.

- **files** (N x 1 KiB in 1,000 dirs; 1,000,000 by default): upload into an empty store;
  warm restart (`run` on the intact dir until the job starts; CLIs: `sync --size-only`
  downwards); the final sync of that run with nothing changed (CLIs: `sync` upwards); one
  file changed (the job rewrites it, then the agent's final sync; CLIs: `sync` upwards
  after it); restore into an empty dir.
- **training** (5 x 512 MiB shards and a few small files): upload; warm restart;
  incremental (the job rewrites one shard; CLIs: `sync` of that change); notice ->
  committed (the job rewrites another shard and waits; the IMDS emulator on 127.0.0.1
  posts a spot notice: seconds from the notice to the final `sync.committed` in the
  agent's log; CLIs: `sync` of the same change, a whole process).
- **restores** (one 2 GiB and one 4 GiB file): uploaded once by each tool, then restored
  into an empty dir every repetition.

A spot-agent sync inside a run is timed by its own log (`seconds` of the sync event): its
start-up is in the warm-restart row. Its CPU is the agent's alone (the job's change is left
out). The rivals run under caps: a run whose RSS passes ``rss_cap_mib`` is killed (s5cmd's
`sync` holds its whole listing: 422 MiB at 20,000 keys), `aws s3` gets ``aws_cap_minutes``
per run, and where copying one directory's files says that uploading all of them would
take longer, the `aws s3` rows of that set are not run; a row not run says why.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agentruns import _timestamp, event_list, with_imds
from .s3counts import RequestCounter
from .samples import Collector, sample_of
from .scale import (
    AGENT,
    MiB,
    ScaleBench,
    _rotated,
    _sizes,
    _tree_cpu,
    age_files,
    make_big,
    make_small,
    size_label,
    write_random,
)
from .tracked import Tracked
from .transfer import tree_size

Row = dict[str, Any]
SETS = ("files", "training", "restores")
CLIS = ["s5cmd", "aws"]
# The change a job makes: one file rewritten in place with new random bytes, same size.
REWRITE = [
    sys.executable,
    "-c",
    "import os, sys\n"
    "size = os.path.getsize(sys.argv[1])\n"
    "with open(sys.argv[1], 'r+b') as fh:\n"
    "    for at in range(0, size, 8 << 20):\n"
    "        fh.write(os.urandom(min(8 << 20, size - at)))\n",
]
# The notice job (args: STARTED COMMAND...): make the change, say so, wait to be stopped.
NOTICE_JOB = ["sh", "-c", 'started=$0; "$@" || exit 1; touch "$started"; exec sleep 600']
TRAINING_SMALL = {  # what a trainer writes beside its shards, in bytes
    "optimizer_state.json": 96 * 1024,
    "trainer_state.json": 4 * 1024,
    "config.json": 2 * 1024,
    "rng_state.bin": 16 * 1024,
}


@dataclass(frozen=True)
class Sizes:
    files: int = 1_000_000
    file_kib: int = 1
    dirs: int = 1_000
    shards: int = 5
    shard_mib: int = 512
    restore_mib: tuple[int, ...] = (2048, 4096)
    reps: int = 3


QUICK = Sizes(files=20_000, shard_mib=256, restore_mib=(512, 1024))


def make_training(root: Path, shards: int, shard_mib: int) -> None:
    """``shards`` shards of random bytes and the small state files a trainer keeps."""
    root.mkdir(parents=True)
    for i in range(shards):
        write_random(root / f"shard-{i}.bin", shard_mib)
    for name, size in TRAINING_SMALL.items():
        body = os.urandom(size // 2).hex() if name.endswith(".json") else ""
        (root / name).write_bytes(f'{{"state": "{body}"}}'.encode() if body else os.urandom(size))


class Issue23Bench(ScaleBench):
    def __init__(
        self,
        env: Mapping[str, str],
        endpoint: str,
        work: Path,
        s3: Any,
        counter: RequestCounter,
        log: Callable[[str], None],
        *,
        aws_cap_minutes: float,
        rss_cap_mib: float,
    ) -> None:
        super().__init__(env, endpoint, work, s3, counter, log)
        self.aws_cap = aws_cap_minutes * 60
        self.rss_cap_mib = rss_cap_mib
        self.imds: Any = None  # the IMDS emulator, while run() runs

    def run(self, sizes: Sizes, sets: list[str]) -> list[Row]:
        from agent.imds_mock import ImdsMock

        rows: list[Row] = []
        with ImdsMock() as self.imds:
            if "restores" in sets:
                for mib in sizes.restore_mib:
                    rows += self._tagged(self.restores, mib, sizes.reps)
            if "training" in sets:
                rows += self._tagged(self.training, sizes)
            if "files" in sets:
                rows += self._tagged(self.files, sizes)
        return rows

    def _tagged(self, measure: Callable[..., list[Row]], *args: Any) -> list[Row]:
        """One data set's rows, with fresh caps (what was not run in one set may run in the
        next) and the issue they answer."""
        self.not_run = {}
        self.time_caps = {"aws s3": self.aws_cap}
        rows = measure(*args)
        for row in rows:
            row["issue"] = 23
        return rows

    # -- the data sets ---------------------------------------------------------------------

    def files(self, sizes: Sizes) -> list[Row]:
        label = f"{sizes.files:,} x {sizes.file_kib} KiB in {sizes.dirs:,} dirs"
        per_dir = -(-sizes.files // sizes.dirs)

        def make(d: Path) -> None:
            make_small(d, sizes.files, sizes.file_kib, per_dir)

        data, tree, made = self._generate("files", label, make)
        self._calibrate_aws(data, sizes.files, per_dir)
        samples = Collector(self.log)
        keep = samples.keep
        try:
            for r in range(sizes.reps):
                started = time.monotonic()
                bucket, agent = self._bucket("files", data, r)
                for tool in _rotated(self.TOOLS, r):
                    keep("upload", *self._upload(tool, data, bucket, agent, r))
                for tool in _rotated(CLIS, r):  # before the agent's runs, as in bench.scale
                    keep("unchanged sync", *self._cli_sync_up(tool, data, bucket, r))
                    keep("warm restart", *self._cli_sync_down(tool, data, bucket, r))
                warm, unchanged = self._warm_restart(agent, r)
                keep("warm restart", "spot-agent", warm)
                keep("unchanged sync", "spot-agent", unchanged)
                victim = data / "d000" / f"f{r:05d}.bin"  # the agent's job changes it first
                keep("one file changed", "spot-agent", self._changed(agent, victim, r))
                for tool in _rotated(CLIS, r):
                    keep("one file changed", *self._cli_sync_up(tool, data, bucket, r))
                for tool in _rotated(self.TOOLS, r):
                    keep("restore", *self._restore(tool, bucket, agent, data, made, r))
                self._drop(bucket)
                self.log(f"{label}: repetition {r} took {time.monotonic() - started:.0f} s")
        finally:
            self._clean(data)
        order = ["upload", "restore", "warm restart", "unchanged sync", "one file changed"]
        return samples.rows(label, tree, order)

    def training(self, sizes: Sizes) -> list[Row]:
        label = (
            f"training dir {sizes.shards} x {size_label(sizes.shard_mib)}"
            f" + {len(TRAINING_SMALL)} small"
        )
        data, tree, _made = self._generate(
            "training", label, lambda d: make_training(d, sizes.shards, sizes.shard_mib)
        )
        samples = Collector(self.log)
        keep = samples.keep
        try:
            for r in range(sizes.reps):
                bucket, agent = self._bucket("training", data, r)
                for tool in _rotated(self.TOOLS, r):
                    keep("upload", *self._upload(tool, data, bucket, agent, r))
                for tool in _rotated(CLIS, r):
                    keep("warm restart", *self._cli_sync_down(tool, data, bucket, r))
                keep("warm restart", "spot-agent", self._warm_restart(agent, r)[0])
                # The agent's job makes each change; the CLIs then sync that same change.
                shard = data / f"shard-{(2 * r) % sizes.shards}.bin"
                keep("incremental", "spot-agent", self._changed(agent, shard, r))
                for tool in _rotated(CLIS, r):
                    keep("incremental", *self._cli_sync_up(tool, data, bucket, r))
                shard = data / f"shard-{(2 * r + 1) % sizes.shards}.bin"
                keep("notice->committed", "spot-agent", self._notice(agent, shard, r))
                for tool in _rotated(CLIS, r):
                    keep("notice->committed", *self._cli_sync_up(tool, data, bucket, r))
                self._drop(bucket)
        finally:
            self._clean(data)
        order = ["upload", "incremental", "notice->committed", "warm restart"]
        return samples.rows(label, tree, order)

    def restores(self, mib: int, reps: int) -> list[Row]:
        """Each tool uploads the file once; then every repetition restores it."""
        label = f"1 x {size_label(mib)} file"
        data, tree, made = self._generate(f"big-{mib}", label, lambda d: make_big(d, mib))
        samples = Collector(self.log)
        bucket, agent = self._bucket(f"big-{mib}", data, 0)
        try:
            for tool in self.TOOLS:
                name, sample = self._upload(tool, data, bucket, agent, 0)
                if "error" in sample:
                    self.log(f"  {name} upload of {label} failed: {sample['error']}")
            for r in range(reps):
                for tool in _rotated(self.TOOLS, r):
                    samples.keep("restore", *self._restore(tool, bucket, agent, data, made, r))
        finally:
            self._drop(bucket)
            self._clean(data)
        return samples.rows(label, tree, ["restore"])

    # -- the parts of a set ----------------------------------------------------------------

    def _generate(
        self, name: str, label: str, make: Callable[[Path], None]
    ) -> tuple[Path, tuple[int, int], dict[str, int]]:
        data = self.work / name
        started = time.monotonic()
        make(data)
        age_files(data)
        tree = tree_size(data)
        self.log(
            f"{label}: {tree[0]:,} files, {tree[1] / MiB:.0f} MiB generated in "
            f"{time.monotonic() - started:.0f} s"
        )
        return data, tree, _sizes(data)

    def _bucket(self, name: str, data: Path, r: int) -> tuple[str, dict[str, str]]:
        bucket = f"i23-{name}-r{r}"
        self.s3.create_bucket(Bucket=bucket)
        return bucket, self._agent_env(bucket, data, self.work / f"agent-{name}-{r}")

    def _drop(self, bucket: str) -> None:
        self.s3.delete_bucket(Bucket=bucket)  # SeaweedFS drops the whole collection

    def _clean(self, data: Path) -> None:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(self.work / "restore", ignore_errors=True)

    def _calibrate_aws(self, data: Path, files: int, per_dir: int) -> None:
        """Time `aws s3 cp` of about 1,000 of the files (and of `aws s3 ls`, its start-up);
        where that rate says uploading all would take over the cap, the set's `aws s3`
        rows are not run."""
        bucket = "i23-aws-calibration"
        self.s3.create_bucket(Bucket=bucket)
        dirs = sorted(p.name for p in data.iterdir())[: max(1, 1000 // per_dir)]
        some = [arg for d in dirs for arg in ("--include", f"{d}/*")]
        try:
            start = self._measure([*self.aws, "s3", "ls", f"s3://{bucket}"], self.env, 0)
            argv = [*self.aws, "s3", "cp", "--recursive", "--no-progress", "--exclude", "*"]
            sample = self._measure([*argv, *some, str(data), f"s3://{bucket}/x/"], self.env, 0)
        finally:
            self._drop(bucket)
        count = min(files, len(dirs) * per_dir)
        per_file = max(sample["seconds"] - start["seconds"], 0) / count
        guess = start["seconds"] + per_file * files
        self.log(f"  aws s3 cp of {count:,} files: {sample['seconds']:.1f} s; all: ~{guess:.0f} s")
        if "error" not in sample and guess > self.aws_cap:
            self.not_run["aws s3"] = (
                f"`aws s3 cp` of {count:,} files took {sample['seconds']:.1f} s: "
                f"{files:,} would take about {guess / 60:.0f} min, over the "
                f"{self.aws_cap / 60:g}-min cap"
            )

    def _changed(self, agent: dict[str, str], path: Path, r: int) -> Row:
        """A warm run whose job rewrites ``path``: the agent's final sync of that change."""
        _warm, synced = self._warm_restart(agent, r, change=[*REWRITE, str(path)])
        synced.pop("no_ratios", None)  # a sync of a change: comparable with a CLI's
        synced["note"] = synced["note"].replace("inside that warm agent", "of the job's change")
        return synced

    def _notice(self, agent: dict[str, str], path: Path, r: int) -> Row:
        """A warm run whose job rewrites ``path`` and waits; then a spot notice: seconds from
        the notice to the final `sync.committed`, and the agent's CPU and requests since."""
        import psutil

        started = self.work / "job-started"
        started.unlink(missing_ok=True)
        self.imds.clear()
        proc = Tracked(
            [*AGENT, "run", "--", *NOTICE_JOB, str(started), *REWRITE, str(path)],
            with_imds(agent, self.imds.url),
            cwd=self.work,
            output=self.work / "agent.out",
        )
        try:
            proc.poll_until(started.exists, timeout=self.run_timeout)
            agent_proc = psutil.Process(proc.tool_pid)
            times = agent_proc.cpu_times()
            cpu_before = times.user + times.system
            cpu_before += sum(_tree_cpu(job) for job in agent_proc.children())
            before = self.counter.snapshot()
            posted = time.time()
            self.imds.post_interruption("terminate", in_seconds=120)
        except RuntimeError as exc:
            proc.stop("the job did not start")
            failed = sample_of(proc.wait(), {}, r)
            failed["error"] = str(exc)[:300]
            return failed
        run = proc.wait(self.run_timeout)
        sample = sample_of(run, self.counter.since(before), r)
        committed = [e for e in event_list(run.output) if e.get("event") == "sync.committed"]
        if run.returncode != 75 or not committed:  # 75: stopped by the notice, as it should
            sample.setdefault("error", f"exit {run.returncode} and no final commit")
            return sample
        sample.pop("error", None)
        sample.update(
            seconds=_timestamp(committed[-1]) - posted,
            cpu_seconds=run.cpu - cpu_before,
            sync_seconds=float(committed[-1].get("seconds", 0)),
            note=f"notice to sync.committed (IMDS polled every 0.2 s); "
            f"{committed[-1].get('bytes_hashed', 0) / MiB:.0f} MiB read",
        )
        return sample
