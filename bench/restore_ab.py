"""A big-file restore, code against code: the agent of each checkout given, and s5cmd.

    PYTHONPATH=$PWD python3 -m bench.restore_ab --tree before=../old --tree after=. \\
        [--mib 2048] [--reps 5]

Starts its own SeaweedFS on 127.0.0.1 and uploads one file of random bytes once with the
first tree's agent (`python -m agent run -- true`; every tree reads what it wrote, as the
formats are the same) and once with `s5cmd cp`. Then each repetition restores it into an
empty dir with every tree's `python -m agent checkpoints restore` (run from that tree:
``PYTHONPATH``) and with `s5cmd cp`, in rotated order, and prints the median wall time and
user and system CPU of each. A tree is a checkout of this repo (``git worktree add``); its
packages are byte-compiled first, as ``pip install`` does.

``--perf`` then restores once more with each tool under ``perf record`` (where Linux's
perf is installed) and prints where its CPU went, by library: the kernel's copies, the
interpreter, the hash.
"""

from __future__ import annotations

import argparse
import compileall
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.readpiece import BigFile, check, compare_restores
from tests import servers

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=2048, help="the file's size (2048)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (5)")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a checkout to run the agent from (repeat; default: this one, as 'agent')",
    )
    parser.add_argument("--perf", action="store_true", help="profile one more restore of each")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"agent": str(REPO)}
    trees = {name: str(Path(path).resolve()) for name, path in trees.items()}
    for path in trees.values():
        for package in ("agent", "checkpoint"):
            compileall.compile_dir(Path(path) / package, quiet=1, workers=1)
    with tempfile.TemporaryDirectory(prefix="restore-ab-") as tmp:
        work = Path(tmp)
        server = servers.start_seaweedfs(work / "seaweedfs", volume_size_limit_mb=256)
        try:
            run(server, work, args.mib, args.reps, trees, profile=args.perf)
        finally:
            server.stop()


def run(
    server: servers.SeaweedS3,
    work: Path,
    mib: int,
    reps: int,
    trees: dict[str, str],
    *,
    profile: bool = False,
) -> None:
    paths = {name: Path(tree) for name, tree in trees.items()}
    big = BigFile(server, work, mib, "restore-ab", next(iter(paths.values())))
    tools = {"s5cmd cp": big.s5cmd_restore}
    restore = [sys.executable, "-m", "agent", "checkpoints", "restore", "--to", str(big.dest)]
    for name, tree in paths.items():
        tools[name] = (restore, big.agent_env(tree))
    dest = big.dest
    compare_restores(tools, dest, mib, reps)
    if profile:
        for name, (argv, tool_env) in tools.items():
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            print(f"\n{name}: CPU by library (perf record, one restore)")
            print(perf_by_library(argv, tool_env, work / "perf.data"))


def perf_by_library(argv: list[str], env: dict[str, str], out: Path) -> str:
    """Run ``argv`` under ``perf record``; the largest shares of its samples, by library."""
    check(["perf", "record", "-q", "-o", str(out), "--", *argv], env)
    report = subprocess.run(
        ["perf", "report", "-i", str(out), "--no-children", "--sort=dso", "--stdio", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    top = [line.rstrip() for line in report.splitlines() if line.strip()][:6]
    return "\n".join(top)


if __name__ == "__main__":
    main()
