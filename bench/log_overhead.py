"""What the agent's log handling costs a job that prints a lot.

Two jobs, each run bare and under ``spot-agent run``:

- ``lines``: prints N lines (default 1,000,000) with ``sys.stdout.write``, as a chatty
  Python job does (the job's own loop is the bottleneck);
- ``flood``: writes M MiB (default 500) of 100-byte lines in 1 MiB writes, as fast as
  the kernel takes them (the agent's pass-through is the bottleneck).

Cases: bare to a file; bare through a pipe (``| cat``: the fair baseline for the cases
where the agent reads the job's output); the agent with its output inherited (no log
group, the default ``raw`` mode); ``--child-output json`` (lines only); a log group on a
local moto server; and a log group whose endpoint black-holes connections (accepts them,
never answers: a firewall that drops, a dead proxy). Output goes to a file.

Printed per case: the wall time of the whole run, the job's own time from its first to its
last write and its rate (what the job feels), and for a log group, events shipped and lost.

    python bench/log_overhead.py [--lines N] [--flood-mb M]

Nothing is sent anywhere but 127.0.0.1 (moto_server on a free port, started and stopped
here, and a listening socket that never accepts); credentials are fake.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import start_moto_server  # noqa: E402

CHILD = """
import os, sys, time
n = int(sys.argv[1])
t0 = time.perf_counter()
w = sys.stdout.write
for i in range(n):
    w(f"line {i} of the job's output, a typical length\\n")
sys.stdout.flush()
print(f"child_seconds={time.perf_counter() - t0:.3f}", file=sys.stderr)
"""

FLOOD = """
import os, sys, time
mib = int(sys.argv[1])
chunk = (b"y" * 99 + b"\\n") * 10486  # 1 MiB of 100-byte lines, give or take
t0 = time.perf_counter()
for _ in range(mib):
    view = memoryview(chunk)
    while view:
        view = view[os.write(1, view):]
print(f"child_seconds={time.perf_counter() - t0:.3f}", file=sys.stderr)
"""


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOT_AGENT_", "AWS_"))}
    env.update(
        XDG_STATE_HOME=str(tmp / "state"),
        SPOT_AGENT_CHECKPOINT_URI=(tmp / "store").as_uri(),
        SPOT_AGENT_IMDS="off",
        SPOT_AGENT_SAMPLE_INTERVAL="0",
        PYTHONPATH=str(REPO),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "none"),
    )
    return env


def run(
    tmp: Path, name: str, argv: list[str], env: dict[str, str], *, pipe: bool = False
) -> dict[str, Any]:
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    t0 = time.perf_counter()
    with open(out, "wb") as o, open(err, "wb") as e:
        if pipe:  # the job's stdout is a pipe that cat empties into the file
            cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=o)
            code = subprocess.call(
                argv, stdout=cat.stdin, stderr=e, env=env, stdin=subprocess.DEVNULL
            )
            assert cat.stdin is not None
            cat.stdin.close()
            cat.wait()
        else:
            code = subprocess.call(argv, stdout=o, stderr=e, env=env, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    found = re.search(r"child_seconds=([0-9.]+)", err.read_text() + out.read_text(errors="replace"))
    child = float(found.group(1)) if found else float("nan")
    row: dict[str, Any] = {"case": name, "exit": code, "wall": wall, "child": child}
    with open(out, errors="replace") as text:
        for line in text:
            if line.startswith('{"timestamp"') and '"logs.' in line:
                ev = json.loads(line)
                if ev["event"] in ("logs.shipped", "logs.lost"):
                    row["sent"] = ev.get("events_sent")
                    row["lost"] = ev.get("lost", 0)
    row["out_mb"] = out.stat().st_size / 1e6
    out.unlink()  # a flood is large: keep the disk free for the next case
    return row


def black_hole() -> socket.socket:
    """A listening socket that never accepts: connections complete, nothing answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def cases(tmp: Path, job: str, child: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    agent = [sys.executable, "-m", "agent", "run", "--job-id", "bench", "--"]
    rows = [run(tmp, f"{job}: bare", child, env)]
    rows.append(run(tmp, f"{job}: bare | cat", child, env, pipe=True))
    rows.append(run(tmp, f"{job}: agent, no log group", agent + child, env))
    if job == "lines":
        json_agent = [*agent[:-1], "--child-output", "json", "--"]
        rows.append(run(tmp, f"{job}: agent, json", json_agent + child, env))
    moto = start_moto_server(tmp / "moto")
    try:
        cw = dict(env, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=moto.endpoint)
        cw["SPOT_AGENT_LOG_GROUP"] = "/bench/log-overhead"
        rows.append(run(tmp, f"{job}: agent, log group (moto)", agent + child, cw))
    finally:
        moto.stop()
    hole = black_hole()
    try:
        dead = f"http://127.0.0.1:{hole.getsockname()[1]}"
        cw = dict(env, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=dead)
        cw["SPOT_AGENT_LOG_GROUP"] = "/bench/log-overhead"
        rows.append(run(tmp, f"{job}: agent, log group (black hole)", agent + child, cw))
    finally:
        hole.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--flood-mb", type=int, default=500, help="MiB the flood job writes")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="log-bench-") as d:
        tmp = Path(d)
        env = base_env(tmp)
        lines = [sys.executable, "-c", CHILD, str(args.lines)]
        rows += cases(tmp, "lines", lines, env)
        flood = [sys.executable, "-c", FLOOD, str(args.flood_mb)]
        rows += cases(tmp, "flood", flood, env)
    print(f"lines: {args.lines:,} lines; flood: {args.flood_mb} MiB in 1 MiB writes\n")
    print(
        f"{'case':<38} {'exit':>4} {'wall s':>7} {'job s':>7} {'job MB/s':>8} "
        f"{'out MB':>7} {'shipped':>9} {'lost':>9}"
    )
    for r in rows:
        rate = r["out_mb"] / r["child"] if r["child"] == r["child"] and r["child"] else 0.0
        print(
            f"{r['case']:<38} {r['exit']:>4} {r['wall']:>7.2f} {r['child']:>7.2f} {rate:>8.0f} "
            f"{r['out_mb']:>7.1f} {r.get('sent', '-')!s:>9} {r.get('lost', '-')!s:>9}"
        )


if __name__ == "__main__":
    main()
