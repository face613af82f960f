"""Run every benchmark against one local SeaweedFS; print a table, write JSON and Markdown.

See bench/run for usage. Nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests import servers  # noqa: E402

from . import agentruns, issue23, scale, targets, transfer  # noqa: E402
from .procs import aws_command, s5cmd_binary  # noqa: E402
from .s3counts import start_counted_seaweedfs  # noqa: E402

RESULTS = REPO / "bench" / "results"
PARTS = ("transfer", "scale", "latency", "overhead", "issue23")
Row = dict[str, Any]


def compile_agent() -> None:
    """Byte-compile the agent's own packages first, as ``pip install`` does for an image.

    The bench runs the agent from this checkout; where ``PYTHONDONTWRITEBYTECODE`` is set
    (it is on the machine the figures come from), every start would otherwise compile
    about 150 modules again, 80-100 ms that an installed agent never pays.
    """
    import compileall

    for package in ("agent", "checkpoint"):
        compileall.compile_dir(REPO / package, quiet=1, workers=1)


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 latency repetitions instead of 10, one overhead repetition; scale rows with "
        f"{scale.QUICK.big_mib} MiB and {scale.QUICK.small_files:,} small files",
    )
    p.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only these parts (repeatable)",
    )
    p.add_argument("--latency-reps", type=int, default=None)
    p.add_argument(
        "--reps", type=int, default=3, help="repetitions of each scale row (median) [default: 3]"
    )
    p.add_argument("--big-mib", type=int, help="size of the one big file [default: 4096]")
    p.add_argument("--small-files", type=int, help="count of small files [default: 20000]")
    p.add_argument("--small-kib", type=int, help="size of each small file [default: 16]")
    p.add_argument(
        "--awscrt-path",
        type=Path,
        metavar="DIR",
        help="add awscrt's S3 client to the one-big-file rows, from DIR "
        "(pip install --target DIR awscrt; kept off the shared path on purpose)",
    )
    i23 = p.add_argument_group("issue23 (run only with --only issue23)")
    i23.add_argument(
        "--sets",
        default=",".join(issue23.SETS),
        help=f"issue 23's data sets to run, comma-separated [default: {','.join(issue23.SETS)}]",
    )
    i23.add_argument("--files", type=int, help="many-files count [default: 1000000]")
    i23.add_argument("--file-kib", type=int, help="size of each of those files [default: 1]")
    i23.add_argument("--dirs", type=int, help="dirs they are spread over [default: 1000]")
    i23.add_argument("--shards", type=int, help="shards of the training dir [default: 5]")
    i23.add_argument("--shard-mib", type=int, help="size of each shard [default: 512]")
    i23.add_argument(
        "--restore-mib", help="sizes of the one-file restores, comma-separated [default: 2048,4096]"
    )
    i23.add_argument(
        "--aws-cap-minutes",
        type=float,
        default=5.0,
        help="cap on each `aws s3` run; a set whose aws upload would take longer (from one "
        "directory's rate) runs no aws rows [default: 5]",
    )
    i23.add_argument(
        "--rss-cap-mib",
        type=float,
        default=4096,
        help="kill a tool whose RSS passes this; that command is not run again in the set "
        "[default: 4096]",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the table (ratios, targets) of a saved results file",
    )
    a = p.parse_args()
    if a.render:
        saved = json.loads(a.render.read_text())
        print(report(saved["rows"]))
        return 0
    compile_agent()
    parts = a.only or list(PARTS)
    reps = a.latency_reps or (3 if a.quick else 10)
    base = scale.QUICK if a.quick else scale.Sizes()
    sizes = scale.Sizes(
        big_mib=a.big_mib or base.big_mib,
        small_files=a.small_files or base.small_files,
        small_kib=a.small_kib or base.small_kib,
        reps=a.reps,
    )
    base23 = issue23.QUICK if a.quick else issue23.Sizes()
    sizes23 = issue23.Sizes(
        files=a.files or base23.files,
        file_kib=a.file_kib or base23.file_kib,
        dirs=a.dirs or base23.dirs,
        shards=a.shards or base23.shards,
        shard_mib=a.shard_mib or base23.shard_mib,
        restore_mib=tuple(int(m) for m in a.restore_mib.split(",") if m)
        if a.restore_mib
        else base23.restore_mib,
        reps=a.reps,
    )
    sets = [name for name in a.sets.split(",") if name]
    if unknown := set(sets) - set(issue23.SETS):
        p.error(f"--sets: no such set {', '.join(sorted(unknown))} (sets: {issue23.SETS})")
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="spot-agent-bench-"))
    try:
        server, counter = start_counted_seaweedfs(
            work / "seaweedfs", volume_size_limit_mb=256, volume_max=200
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    rows: list[Row] = []
    failed: list[str] = []
    try:
        env = s3_env(server, work)
        os.environ.update(env)  # for the boto3 housekeeping client of this process
        import boto3

        s3 = boto3.client("s3")
        log(f"SeaweedFS at {server.endpoint}; work dir {work}")

        def part(name: str, measure: Callable[[], list[Row]]) -> None:
            """One part's rows; a part that breaks is a row saying so, and the others run."""
            try:
                rows.extend(measure())
            except Exception as exc:
                log(f"{name} FAILED: {type(exc).__name__}: {exc}")
                failed.append(name)
                text = f"part failed: {type(exc).__name__}: {exc}".replace("\n", " ")
                rows.append({"scenario": name, "data": "-", "tool": "-", "todo": text[:300]})

        if "overhead" in parts:  # first, while the server is idle: it is CPU-time sensitive
            log("wrapper overhead")
            part("overhead", lambda: agentruns.overhead(env, work, log, reps=1 if a.quick else 3))
        if "transfer" in parts:
            t = transfer.Transfers(env, server.endpoint, work, s3)
            log("big: 8 x 128 MiB")
            part(
                "transfer big",
                lambda: t.run_dataset(
                    "big", transfer.make_big, transfer.change_big, log, sse_row=True
                ),
            )
            log("small: 2,000 x 512 KiB")
            part(
                "transfer small",
                lambda: t.run_dataset("small", transfer.make_small, transfer.change_small, log),
            )
        if "scale" in parts:
            sb = scale.ScaleBench(env, server.endpoint, work, s3, counter, log, a.awscrt_path)
            part(
                "scale big",
                lambda: sb.dataset(
                    "one-big",
                    f"1 x {scale.size_label(sizes.big_mib)} file",
                    lambda d: scale.make_big(d, sizes.big_mib),
                    sizes.reps,
                    crt=True,
                ),
            )
            part(
                "scale small",
                lambda: sb.dataset(
                    "many-small",
                    f"{sizes.small_files:,} x {sizes.small_kib} KiB",
                    lambda d: scale.make_small(d, sizes.small_files, sizes.small_kib),
                    sizes.reps,
                ),
            )
        if "issue23" in parts:
            i23b = issue23.Issue23Bench(
                env,
                server.endpoint,
                work,
                s3,
                counter,
                log,
                aws_cap_minutes=a.aws_cap_minutes,
                rss_cap_mib=a.rss_cap_mib,
            )
            part("issue23", lambda: i23b.run(sizes23, sets))
        if "latency" in parts:
            log(f"notice-to-durable latency, {reps} repetitions per size")
            part(
                "latency",
                lambda: agentruns.notice_latency(env, work, s3, log, (0, 64, 512), reps),
            )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    doc: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "sse": "none for every tool (SPOT_AGENT_SSE=none; the CLIs send no SSE header); "
            "one extra spot-agent row with AES256 shows its cost",
            "server": "SeaweedFS `weed server -s3` on 127.0.0.1, same process for all runs",
            "latency_reps": reps,
            "scale": {**vars(sizes), "quick": a.quick},
            "issue23": {
                **vars(sizes23),
                "sets": sets,
                "aws_cap_minutes": a.aws_cap_minutes,
                "rss_cap_mib": a.rss_cap_mib,
            },
            "requests": "counted by SeaweedFS (SeaweedFS_s3_request_total), per run of a tool",
        },
        "seconds": time.monotonic() - started,
        "rows": rows,
    }
    table = report(rows)
    doc["targets"] = targets.check(rows)
    doc["targets_issue23"] = targets.check23(rows)
    print(table)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    a.out.with_suffix(".md").write_text(markdown(doc, table))
    log(f"wrote {a.out} and {a.out.with_suffix('.md')} in {doc['seconds']:.0f} s")
    if failed:
        log(f"these parts failed: {', '.join(failed)}")
        return 1
    return 0


def s3_env(server: servers.SeaweedS3, work: Path) -> dict[str, str]:
    """Only what the SDKs and CLIs need: local endpoint, fixture credentials, no profiles."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOT_AGENT_"))}
    env.update(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL=server.endpoint,
        AWS_ENDPOINT_URL_S3=server.endpoint,
        AWS_CONFIG_FILE=str(work / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"),
        SPOT_AGENT_SSE="none",
        TMPDIR=str(work),
    )
    return env


def report(rows: list[Row]) -> str:
    """The table, with ratios to spot-agent, and issue 12's and 23's targets under it."""
    add_ratios(rows)
    text = render(rows)
    for issue, checks in ((12, targets.check(rows)), (23, targets.check23(rows))):
        if checks:
            text += "\n\n" + targets.render(checks, issue)
    return text


def add_ratios(rows: list[Row]) -> None:
    """time / spot-agent's time (and CPU likewise) in the same scenario and data set."""
    ref = {(r["scenario"], r["data"]): r for r in rows if r.get("tool") == "spot-agent"}
    for r in rows:
        r.pop("time_vs_spot_agent", None)
        r.pop("cpu_vs_spot_agent", None)
        base = ref.get((r["scenario"], r["data"]))
        if base is None or base.get("no_ratios") or "seconds" not in r or not base.get("seconds"):
            continue  # no reference, or one too small to divide by (a sync of nothing)
        r["time_vs_spot_agent"] = r["seconds"] / base["seconds"]
        if r.get("cpu_seconds") and base.get("cpu_seconds"):
            r["cpu_vs_spot_agent"] = r["cpu_seconds"] / base["cpu_seconds"]


def render(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<17} {'data':<34} {'tool':<31} {'seconds':>8} {'x spot':>7} "
        f"{'MB/s':>6} {'CPU s':>7} {'x spot':>7} {'MiB sent':>9} {'requests':>9} {'peak RSS':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lead = f"{r['scenario']:<17} {r['data']:<34} {r['tool']:<31}"
        if "todo" in r:
            lines.append(f"{lead} {r['todo']}")
            continue
        if "median_seconds" in r:
            lines.append(
                f"{lead} median {r['median_seconds']:.2f} s, worst {r['worst_seconds']:.2f} s of "
                f"{r['reps']} (notice seen after {r['median_detect_seconds']:.2f} s, "
                f"sync {r['median_sync_seconds']:.2f} s)"
            )
            continue
        extra = []
        if "agent_cpu_seconds" in r:
            extra.append(
                f"agent itself: {r['agent_cpu_seconds']:.2f} CPU s, "
                f"peak RSS {r['agent_peak_rss_mib']:.0f} MiB"
            )
        if r.get("requests_by_kind"):
            extra.append(" ".join(f"{k} {v}" for k, v in r["requests_by_kind"].items()))
        if r.get("note"):
            extra.append(r["note"])
        rss = f"{r['peak_rss_mib']:.0f} MiB" if r.get("peak_rss_mib") else ""
        sent = r["bytes_sent"] / 2**20 if r.get("bytes_sent") else None
        lines.append(
            f"{lead} {r['seconds']:8.2f} {_x(r.get('time_vs_spot_agent')):>7} "
            f"{_f(r.get('mb_per_s'), 0):>6} {_f(r.get('cpu_seconds'), 2):>7} "
            f"{_x(r.get('cpu_vs_spot_agent')):>7} {_f(sent, 0):>9} "
            f"{_f(r.get('requests'), 0):>9} {rss:>8}  {'; '.join(extra)}".rstrip()
        )
    lines.append(
        "x spot: this tool's time (or CPU) divided by spot-agent's in the same row group. "
        "Scale rows (one big file, small files): median of the repetitions; peak RSS: the "
        "worst run's; requests: counted by the server, by kind"
    )
    return "\n".join(lines)


def _f(v: float | None, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _x(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}x"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        m = re.search(r"^model name\s*:\s*(.*)$", fh.read(), re.MULTILINE)
        cpu = m.group(1) if m else cpu
    with open("/proc/meminfo") as fh:
        mem_kib = int(fh.readline().split()[1])
    import boto3
    import botocore

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "weed": _version([servers.weed_binary(), "version"]),
        "s5cmd": _version([s5cmd_binary(), "version"]),
        "aws": _version([*aws_command(), "--version"]),
    }


def markdown(doc: dict[str, Any], table: str) -> str:
    m = doc["machine"]
    lines = [
        "# spot-agent benchmark results",
        "",
        "Produced by `bench/run` (this file: bench/results/latest.md).",
        "",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}",
        f"- versions: Python {m['python']}, boto3 {m['boto3']}, weed `{m['weed']}`, "
        f"s5cmd `{m['s5cmd']}`, `{m['aws']}`",
        f"- SSE: {doc['settings']['sse']}",
        f"- {doc['settings']['server']}; the whole run took {doc['seconds']:.0f} s",
        "",
        "```",
        table,
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
