"""The piece size of a streamed GET (``reads.READ_PIECE``): a big-file restore at each size.

    PYTHONPATH=$PWD python3 -m bench.readpiece [--mib 2048] [--reps 3] [--pieces 128,256,512,1024]

Starts its own SeaweedFS on 127.0.0.1, uploads one file of random bytes with the agent
(`python -m agent run -- true`), then restores it into an empty dir with `python -m agent
checkpoints restore`, once per piece size (KiB) in each repetition, in rotated order, and
with `s5cmd cp` beside them. Prints the median wall time and the user and system CPU of
each. A restore's system time is where the piece size shows: every piece is a new bytes
object, and from 512 KiB up the kernel's copies of them cost far more.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.main import s3_env
from bench.procs import s5cmd_binary
from bench.scale import make_big
from tests import servers

REPO = Path(__file__).resolve().parent.parent
# A restore with READ_PIECE (and the store's stream_piece, which sizes the budget) set to
# argv[1] bytes; the rest of argv is the agent's command line.
RESTORE_WITH_PIECE = (
    "import sys\n"
    "from checkpoint.engine.store.s3 import reads, store\n"
    "reads.READ_PIECE = store.S3Store.stream_piece = int(sys.argv[1])\n"
    "from agent.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=2048, help="the file's size (2048)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--pieces", default="128,256,512,1024", help="piece sizes in KiB")
    args = parser.parse_args()
    pieces = [int(k) << 10 for k in args.pieces.split(",")]
    with tempfile.TemporaryDirectory(prefix="readpiece-") as tmp:
        work = Path(tmp)
        server = servers.start_seaweedfs(work / "seaweedfs", volume_size_limit_mb=256)
        try:
            run(server, work, args.mib, args.reps, pieces)
        finally:
            server.stop()


def run(server: servers.SeaweedS3, work: Path, mib: int, reps: int, pieces: list[int]) -> None:
    big = BigFile(server, work, mib, "readpiece")
    tools = {"s5cmd cp": big.s5cmd_restore}
    for piece in pieces:
        restore = ["checkpoints", "restore", "--to", str(big.dest)]
        argv = [sys.executable, "-c", RESTORE_WITH_PIECE, str(piece), *restore]
        tools[f"{piece >> 10} KiB"] = (argv, big.agent_env(REPO))
    compare_restores(tools, big.dest, mib, reps)


class BigFile:
    """One file of random bytes (``big.bin``, ``mib`` MiB) in a bucket of its own, uploaded
    once by s5cmd (under ``s5cmd/``) and once by the agent of ``tree`` (a checkout)."""

    def __init__(
        self, server: servers.SeaweedS3, work: Path, mib: int, bucket: str, tree: Path = REPO
    ) -> None:
        self.env = s3_env(server, work)
        self.work, self.bucket = work, bucket
        self.data, self.dest = work / "data", work / "restore"
        make_big(self.data, mib)
        s5 = [s5cmd_binary(), "--endpoint-url", server.endpoint]
        check([*s5, "mb", f"s3://{bucket}"], self.env)
        check([*s5, "cp", f"{self.data}/*", f"s3://{bucket}/s5cmd/"], self.env)
        check([sys.executable, "-m", "agent", "run", "--", "true"], self.agent_env(tree))
        #: s5cmd's restore of its copy into ``dest``: (argv, env)
        self.s5cmd_restore = ([*s5, "cp", f"s3://{bucket}/s5cmd/*", f"{self.dest}/"], self.env)

    def agent_env(self, tree: Path) -> dict[str, str]:
        """The env of an agent run from ``tree`` on this file's checkpoints."""
        return dict(
            self.env,
            SPOT_AGENT_CHECKPOINT_URI=f"s3://{self.bucket}/spot",
            SPOT_AGENT_CHECKPOINT_DIR=str(self.data),
            SPOT_AGENT_JOB_ID=self.bucket,
            SPOT_AGENT_IMDS="off",
            XDG_STATE_HOME=str(self.work / "state"),
            PYTHONPATH=str(tree),
        )


def compare_restores(
    tools: dict[str, tuple[list[str], dict[str, str]]], dest: Path, mib: int, reps: int
) -> None:
    """Each tool's command (argv, env) restores ``big.bin`` into an empty ``dest``, ``reps``
    times in rotated order; prints each run, then the median wall, user and system seconds."""
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in tools}
    names = list(tools)
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            sample = measure(*tools[name])
            got = (dest / "big.bin").stat().st_size if (dest / "big.bin").exists() else None
            if got != mib << 20:
                raise SystemExit(f"{name} restored {got} bytes of big.bin, not {mib << 20}")
            samples[name].append(sample)
            print(f"  {name}: {sample[0]:.2f} s, user {sample[1]:.2f} s, sys {sample[2]:.2f} s")
    print(f"\nrestore of 1 x {mib} MiB, medians of {reps}:")
    width = max(map(len, samples))
    for name, runs in samples.items():
        wall, user, sys_ = (statistics.median(s[i] for s in runs) for i in range(3))
        print(f"  {name:>{width}}: {wall:6.2f} s   user {user:5.2f} s   sys {sys_:5.2f} s")


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, user and system CPU seconds of one command (it must succeed)."""
    os.sync()  # the last restore's dirty pages are not this one's to write
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    check(argv, env)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def check(argv: list[str], env: dict[str, str]) -> None:
    """Run one command; it must succeed. ``python -m`` puts its working dir first on the
    path, so a command runs in the checkout its ``PYTHONPATH`` names (default: this one)."""
    cwd = env.get("PYTHONPATH") or REPO
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} exited {done.returncode}: {done.stderr[-2000:]}")


if __name__ == "__main__":
    main()
