"""Format 5's hash: sha256 against BLAKE3, in MiB per CPU-second and in a big-file restore.

    PYTHONPATH=$PWD python3 -m bench.hashspeed [--mib 2048] [--reps 3] [--no-restore]

First, in this process: sha256 (hashlib), BLAKE3 (the ``blake3`` wheel, one thread) and
CRC-32 (zlib, the upload's checksum for BLAKE3 objects) over 8 MiB chunks, in rotated order,
each repetition 256 MiB; the median MiB per CPU-second of each.

Then, on its own SeaweedFS on 127.0.0.1: one file of random bytes checkpointed twice with
the agent (`python -m agent run -- true`), once with its data named by sha256 as agents
before format 5 named it (the same code with ``hashes.new_id`` set back), once by BLAKE3;
then each restored into an empty dir with `python -m agent checkpoints restore`, in rotated
order with `s5cmd cp` beside them. Prints the median wall time and the user and system CPU
of each: the restores differ only in the hash each chunk is checked with.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import blake3

from bench.main import s3_env
from bench.procs import s5cmd_binary
from bench.readpiece import check, compare_restores, measure
from bench.scale import make_big
from tests import servers

REPO = Path(__file__).resolve().parent.parent
CHUNK = 8 << 20
# The agent's command line (argv[1:]) with its data named by sha256, as before format 5:
# every reader of new data asks ``hashes.new_id`` (the sync's reads through
# ``hashes.carrying``, the packs' names), so it is set back before the engine is imported.
AS_SHA256_AGENT = (
    "import sys\n"
    "from checkpoint.engine.format import hashes\n"
    "hashes.new_id = hashes.sha256_id\n"
    "from agent.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
HASHES: dict[str, Callable[[bytes], object]] = {
    "sha256": lambda d: hashlib.sha256(d).digest(),
    "blake3": lambda d: blake3.blake3(d).digest(),
    "crc32": zlib.crc32,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=2048, help="the file's size (2048)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--no-restore", action="store_true", help="the hash rates only")
    args = parser.parse_args()
    rates(args.reps)
    if args.no_restore:
        return
    with tempfile.TemporaryDirectory(prefix="hashspeed-") as tmp:
        work = Path(tmp)
        server = servers.start_seaweedfs(work / "seaweedfs", volume_size_limit_mb=256)
        try:
            restores(server, work, args.mib, args.reps)
        finally:
            server.stop()


def rates(reps: int) -> None:
    data = os.urandom(CHUNK)
    per_rep = 32  # 256 MiB
    got: dict[str, list[float]] = {name: [] for name in HASHES}
    names = list(HASHES)
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.process_time()
            for _ in range(per_rep):
                HASHES[name](data)
            got[name].append(per_rep * CHUNK / (1 << 20) / (time.process_time() - started))
    print(f"hash rates over {CHUNK >> 20} MiB chunks, medians of {reps} x 256 MiB:")
    for name, rate in got.items():
        print(f"  {name:>7}: {statistics.median(rate):7,.0f} MiB per CPU-second")


def restores(server: servers.SeaweedS3, work: Path, mib: int, reps: int) -> None:
    env = s3_env(server, work)
    data, dest = work / "data", work / "restore"
    make_big(data, mib)
    agent = dict(
        env,
        SPOT_AGENT_CHECKPOINT_URI="s3://hashspeed/spot",
        SPOT_AGENT_CHECKPOINT_DIR=str(data),
        SPOT_AGENT_IMDS="off",
        XDG_STATE_HOME=str(work / "state"),
        PYTHONPATH=str(REPO),
    )
    s5 = [s5cmd_binary(), "--endpoint-url", server.endpoint]
    check([*s5, "mb", "s3://hashspeed"], env)
    check([*s5, "cp", f"{data}/*", "s3://hashspeed/s5cmd/"], env)
    jobs = {"sha256": "hash-sha256", "blake3": "hash-blake3"}
    for name, job in jobs.items():
        shutil.rmtree(data / ".spot-agent", ignore_errors=True)  # a first sync: read it all
        run = ["run", "--", "true"]
        argv = [sys.executable, "-c", AS_SHA256_AGENT, *run] if name == "sha256" else None
        argv = argv or [sys.executable, "-m", "agent", *run]
        wall, user, sys_ = measure(argv, dict(agent, SPOT_AGENT_JOB_ID=job))
        print(f"  checkpoint ({name}): {wall:.2f} s, user {user:.2f} s, sys {sys_:.2f} s")
    tools: dict[str, tuple[list[str], dict[str, str]]] = {
        "s5cmd cp": ([*s5, "cp", "s3://hashspeed/s5cmd/*", f"{dest}/"], env)
    }
    for name, job in jobs.items():
        restore = [sys.executable, "-m", "agent", "checkpoints", "restore", "--to", str(dest)]
        tools[f"agent {name}"] = (restore, dict(agent, SPOT_AGENT_JOB_ID=job))
    compare_restores(tools, dest, mib, reps)


if __name__ == "__main__":
    main()
