"""Scenarios 1-3: full upload, incremental upload and restore, spot-agent vs s5cmd vs aws.

Each data set gets its own bucket; each tool its own prefix in it, so every tool starts from
the same (empty) state and the incremental run of each tool compares against its own upload.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .procs import Measured, SpotProc, aws_command, run_measured, s5cmd_binary

MiB = 1 << 20
Row = dict[str, Any]


def make_big(root: Path) -> None:
    """8 files of 128 MiB of random bytes (1 GiB)."""
    root.mkdir(parents=True)
    for i in range(8):
        with open(root / f"shard-{i}.bin", "wb") as fh:
            for _ in range(16):
                fh.write(os.urandom(8 * MiB))


def make_small(root: Path) -> None:
    """2,000 files of 512 KiB of random bytes in 20 directories (1000 MiB)."""
    for i in range(2000):
        d = root / f"d{i // 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.bin").write_bytes(os.urandom(512 * 1024))


def change_big(root: Path) -> int:
    """10% of the bytes change: one shard grows by 40 MiB, another is rewritten as 64 MiB."""
    with open(root / "shard-0.bin", "ab") as fh:
        for _ in range(5):
            fh.write(os.urandom(8 * MiB))
    with open(root / "shard-1.bin", "wb") as fh:
        for _ in range(8):
            fh.write(os.urandom(8 * MiB))
    return 104 * MiB


def change_small(root: Path) -> int:
    """10% of the bytes change: 200 of the 2,000 files are rewritten."""
    for i in range(0, 2000, 10):
        (root / f"d{i // 100:02d}" / f"f{i:04d}.bin").write_bytes(os.urandom(512 * 1024))
    return 200 * 512 * 1024


def tree_size(root: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return files, total


class Transfers:
    def __init__(self, env: Mapping[str, str], endpoint: str, work: Path, s3: Any) -> None:
        self.env = env
        self.endpoint = endpoint
        self.work = work
        self.s3 = s3  # a boto3 client, for bucket housekeeping only
        self.s5 = [s5cmd_binary(), "--endpoint-url", endpoint]
        self.aws = [*aws_command(), "--endpoint-url", endpoint]

    def run_dataset(
        self,
        name: str,
        make: Callable[[Path], None],
        change: Callable[[Path], int],
        log: Callable[[str], None],
        *,
        sse_row: bool = False,
    ) -> list[Row]:
        data = self.work / name
        make(data)
        files, size = tree_size(data)
        bucket = f"bench-{name}"
        self.s3.create_bucket(Bucket=bucket)
        rows: list[Row] = []

        def add(
            scenario: str, tool: str, seconds: float, cpu: float, sent: int, **extra: Any
        ) -> None:
            row = {
                "scenario": scenario,
                "data": name,
                "tool": tool,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "bytes_sent": sent,
                **extra,
            }
            rows.append(row)
            log(f"  {scenario:<12} {name:<6} {tool:<22} {seconds:7.2f} s  cpu {cpu:6.2f} s")

        # 1. full upload
        spot = SpotProc(self.env, bucket=bucket, prefix="spot", job="job", directory=data)
        r = spot.call("sync")
        wall = time.monotonic() - spot.started  # from the process start, as for the CLIs
        add(
            "full upload",
            "spot-agent",
            wall,
            r["cpu"],
            r["bytes_uploaded"],
            mb_per_s=size / wall / 1e6,
        )
        m = self._cli([*self.s5, "cp", f"{data}/*", f"s3://{bucket}/s5cmd/"])
        add("full upload", "s5cmd cp", m.seconds, m.cpu, size, mb_per_s=size / m.seconds / 1e6)
        m = self._cli([*self.aws, "s3", "sync", "--no-progress", str(data), f"s3://{bucket}/aws/"])
        add("full upload", "aws s3 sync", m.seconds, m.cpu, size, mb_per_s=size / m.seconds / 1e6)
        if sse_row:
            sse = SpotProc(
                self.env, bucket=bucket, prefix="spot-sse", job="job", directory=data, sse="AES256"
            )
            r2 = sse.call("sync")
            wall = time.monotonic() - sse.started
            sse.close()
            add(
                "full upload",
                "spot-agent (SSE AES256)",
                wall,
                r2["cpu"],
                r2["bytes_uploaded"],
                mb_per_s=size / wall / 1e6,
                note="not in ratios: the CLIs send no SSE",
            )

        # 2. incremental upload
        changed = change(data)
        cpu0 = r["cpu"]
        r = spot.call("sync")
        add(
            "incremental",
            "spot-agent",
            r["seconds"],
            r["cpu"] - cpu0,
            r["bytes_uploaded"],
            bytes_changed=changed,
            note="warm process (as the agent is); no interpreter start",
        )
        spot.close()
        m = self._cli([*self.s5, "sync", f"{data}/", f"s3://{bucket}/s5cmd/"])
        add(
            "incremental",
            "s5cmd sync",
            m.seconds,
            m.cpu,
            _sent(m.output, self.work),
            bytes_changed=changed,
            note="bytes: sizes of the files it re-uploaded",
        )
        m = self._cli([*self.aws, "s3", "sync", "--no-progress", str(data), f"s3://{bucket}/aws/"])
        add(
            "incremental",
            "aws s3 sync",
            m.seconds,
            m.cpu,
            _sent(m.output, self.work),
            bytes_changed=changed,
            note="bytes: sizes of the files it re-uploaded",
        )
        files, size = tree_size(data)

        # 3. restore into an empty dir. Writing a GiB into page cache the kernel has to
        # allocate afresh costs seconds of system time on this VM, and much less right after
        # another tool freed its pages: so each tool runs twice, in rotated order, and its
        # better run counts. Every tool gets one run that follows another tool's.
        tools: list[tuple[str, Callable[[Path], list[str]] | None]] = [
            ("spot-agent", None),
            ("s5cmd cp", lambda d: [*self.s5, "cp", f"s3://{bucket}/s5cmd/*", f"{d}/"]),
            (
                "aws s3 cp --recursive",
                lambda d: [
                    *self.aws,
                    "s3",
                    "cp",
                    "--recursive",
                    "--no-progress",
                    f"s3://{bucket}/aws/",
                    str(d),
                ],
            ),
        ]
        best: dict[str, tuple[float, float]] = {}
        for tool, argv_of in [*tools, *tools[1:], tools[0]]:
            dest = self.work / f"restore-{name}"
            dest.mkdir()
            if argv_of is None:
                sp = SpotProc(self.env, bucket=bucket, prefix="spot", job="job", directory=dest)
                rr = sp.call("restore")
                seconds, cpu = time.monotonic() - sp.started, rr["cpu"]
                sp.close()
            else:
                m = self._cli(argv_of(dest))
                seconds, cpu = m.seconds, m.cpu
            got = tree_size(dest)
            if got != (files, size):
                raise RuntimeError(f"{tool} restored {got}, expected {(files, size)}")
            if tool not in best or seconds < best[tool][0]:
                best[tool] = (seconds, cpu)
            shutil.rmtree(dest)
        for tool, _argv in tools:
            seconds, cpu = best[tool]
            add(
                "restore", tool, seconds, cpu, 0, bytes_received=size, mb_per_s=size / seconds / 1e6
            )

        shutil.rmtree(data)
        self.s3.delete_bucket(Bucket=bucket)  # SeaweedFS drops the whole collection
        return rows

    def _cli(self, argv: list[str]) -> Measured:
        m = run_measured(argv, self.env, cwd=self.work)
        if m.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({m.returncode}):\n{m.output[-2000:]}")
        return m


_UPLOADED = re.compile(r"^(?:upload: |cp )(\S+) (?:to )?s3://", re.MULTILINE)


def _sent(output: str, root: Path) -> int:
    """The bytes a CLI sent, from the local files it says it uploaded (paths from cwd)."""
    total = 0
    for path in _UPLOADED.findall(output):
        p = Path(path)
        total += (p if p.is_absolute() else root / p).stat().st_size
    return total
