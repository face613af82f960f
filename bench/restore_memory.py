"""Peak RSS of ``checkpoints restore --to`` an empty dir, one code tree against another
(issue 23: a paged checkpoint restored a page at a time).

    python -m bench.restore_memory --files 300000 [--reps 3] CODE_DIR [CODE_DIR ...]

Starts its own SeaweedFS on 127.0.0.1 and generates ``--files`` files of 1 KiB, 1,000 to a
directory; the first tree's agent uploads them once (``python -m agent run -- true``; every
tree reads what it wrote, the formats are the same). Then each repetition restores that
checkpoint into an empty dir with each tree's ``python -m agent checkpoints restore``, in
rotated order, and checks the file count. Prints one row per tree, medians: peak RSS of
the process (wait4), wall and CPU seconds. A tree is a checkout of this repo (``git
worktree add``), run with ``PYTHONPATH`` set to it and its own dir as the working dir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import boto3

from bench.main import s3_env
from bench.procs import Measured, run_measured
from bench.sync_memory import make_files
from tests import servers

BUCKET = "restore-memory"


def agent_env(env: dict[str, str], work: Path, data: Path, tree: Path) -> dict[str, str]:
    return dict(
        env,
        SPOT_AGENT_CHECKPOINT_URI=f"s3://{BUCKET}/spot",
        SPOT_AGENT_CHECKPOINT_DIR=str(data),
        SPOT_AGENT_JOB_ID=BUCKET,
        SPOT_AGENT_IMDS="off",
        XDG_STATE_HOME=str(work / "state"),
        PYTHONPATH=str(tree),
    )


def restore_once(tree: Path, env: dict[str, str], dest: Path, files: int) -> Measured:
    shutil.rmtree(dest, ignore_errors=True)
    argv = [sys.executable, "-m", "agent", "checkpoints", "restore", "--to", str(dest)]
    got = run_measured(argv, env, cwd=tree, timeout=3600)
    if got.returncode != 0:
        raise SystemExit(f"{tree}: restore failed ({got.returncode}): {got.output[-500:]}")
    count = sum(len(names) for _, _, names in os.walk(dest))
    if count != files:
        raise SystemExit(f"{tree}: restored {count} files, not {files}")
    return got


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.restore_memory", description=__doc__)
    p.add_argument("code", nargs="+", type=Path, help="spot-agent checkouts to compare")
    p.add_argument("--files", type=int, default=300_000)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    trees = [c.resolve() for c in a.code]
    with tempfile.TemporaryDirectory(prefix="restore-memory-") as tmp:
        work = Path(tmp)
        server = servers.start_seaweedfs(work / "seaweedfs", volume_size_limit_mb=256)
        try:
            env = s3_env(server, work)
            boto3.session.Session().client(
                "s3",
                endpoint_url=server.endpoint,  # 127.0.0.1: the server started above
                aws_access_key_id=server.access_key,
                aws_secret_access_key=server.secret_key,
                region_name="us-east-1",
            ).create_bucket(Bucket=BUCKET)
            data = work / "data"
            make_files(data, a.files, 1024)
            run = [sys.executable, "-m", "agent", "run", "--", "true"]
            upload = run_measured(run, agent_env(env, work, data, trees[0]), cwd=trees[0])
            if upload.returncode != 0:
                raise SystemExit(f"upload failed: {upload.output[-500:]}")
            print(f"uploaded {a.files:,} x 1 KiB in {upload.seconds:.1f} s", file=sys.stderr)
            shutil.rmtree(data)
            runs: dict[Path, list[Measured]] = {t: [] for t in trees}
            for r in range(a.reps):
                for tree in trees[r % len(trees) :] + trees[: r % len(trees)]:
                    got = restore_once(tree, agent_env(env, work, data, tree), data, a.files)
                    runs[tree].append(got)
                    print(
                        f"rep {r + 1} {tree}: {got.seconds:.1f} s, {got.maxrss_mib:.0f} MiB",
                        file=sys.stderr,
                    )
        finally:
            server.stop()
    print(f"checkpoints restore of {a.files:,} x 1 KiB from SeaweedFS, medians of {a.reps}:")
    print(f"{'code':<40} {'peak RSS MiB':>12} {'wall s':>7} {'CPU s':>7}")
    for tree, samples in runs.items():
        rss, wall, cpu = (
            statistics.median(getattr(m, k) for m in samples)
            for k in ("maxrss_mib", "seconds", "cpu")
        )
        print(f"{tree!s:<40} {rss:>12.0f} {wall:>7.1f} {cpu:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
