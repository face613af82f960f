"""What the agent's log handling costs a job that prints a lot.

A child prints N lines (default 1,000,000) as fast as it can. It runs bare, then under
``spot-agent run`` with its output inherited (no log group, the default ``raw`` mode),
with ``--child-output json`` (every line an event on stdout), and with a log group on a
local moto server (lines passed through and shipped as events). Output goes to a file.

Printed per case: the wall time of the whole run, the child's own time from its first
to its last line (what the job feels), and for the log group, the events shipped and lost.

    python bench/log_overhead.py [--lines N]

Nothing is sent anywhere but 127.0.0.1 (moto_server on a free port, started and stopped
here); credentials are fake.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
import sys, time
n = int(sys.argv[1])
t0 = time.perf_counter()
w = sys.stdout.write
for i in range(n):
    w(f"line {i} of the job's output, a typical length\\n")
sys.stdout.flush()
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


def run(tmp: Path, name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    t0 = time.perf_counter()
    with open(out, "wb") as o, open(err, "wb") as e:
        code = subprocess.call(argv, stdout=o, stderr=e, env=env, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    found = re.search(r"child_seconds=([0-9.]+)", err.read_text() + out.read_text())
    child = float(found.group(1)) if found else float("nan")
    row: dict[str, Any] = {"case": name, "exit": code, "wall": wall, "child": child}
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith('{"timestamp"') and '"logs.' in line:
            ev = json.loads(line)
            if ev["event"] in ("logs.shipped", "logs.lost"):
                row["sent"] = ev.get("events_sent")
                row["lost"] = ev.get("lost", 0)
    row["out_mb"] = out.stat().st_size / 1e6
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    args = ap.parse_args()
    child = [sys.executable, "-c", CHILD, str(args.lines)]
    agent = [sys.executable, "-m", "agent", "run", "--job-id", "bench", "--"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="log-bench-") as d:
        tmp = Path(d)
        env = base_env(tmp)
        rows.append(run(tmp, "bare", child, env))
        rows.append(run(tmp, "agent, no log group", agent + child, env))
        json_agent = [*agent[:-1], "--child-output", "json", "--"]
        rows.append(run(tmp, "agent, --child-output json", json_agent + child, env))
        moto = start_moto_server(tmp / "moto")
        try:
            cw = dict(env, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=moto.endpoint)
            cw["SPOT_AGENT_LOG_GROUP"] = "/bench/log-overhead"
            rows.append(run(tmp, "agent, log group (moto)", agent + child, cw))
        finally:
            moto.stop()
    print(f"{args.lines:,} lines\n")
    print(
        f"{'case':<28} {'exit':>4} {'wall s':>8} {'child s':>8} {'out MB':>7} "
        f"{'shipped':>9} {'lost':>9}"
    )
    for r in rows:
        print(
            f"{r['case']:<28} {r['exit']:>4} {r['wall']:>8.2f} {r['child']:>8.2f} "
            f"{r['out_mb']:>7.1f} {r.get('sent', '-')!s:>9} {r.get('lost', '-')!s:>9}"
        )


if __name__ == "__main__":
    main()
