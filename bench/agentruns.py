"""Scenarios 4-5: notice-to-durable latency and wrapper overhead, with `python -m agent run`."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.servers import start_moto_server

from .procs import REPO, run_measured

AGENT = [sys.executable, "-m", "agent", "run"]
MiB = 1 << 20
Row = dict[str, Any]

# The job of the latency runs: copy the pending bytes into the checkpoint dir, say so, sleep
# (SIGTERM from the agent ends it at once).
PENDING_JOB = textwrap.dedent("""
    import os, shutil, sys, time
    if sys.argv[1] != "-":
        shutil.copyfile(sys.argv[1], os.path.join(os.environ["CHECKPOINT_DIR"], "pending.bin"))
    print("pending-written", flush=True)
    time.sleep(600)
""")


def agent_env(base: Mapping[str, str], tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("SPOT_AGENT_", "AWS_BATCH_"))}
    env.update(
        XDG_STATE_HOME=str(tmp / "state"),
        SPOT_AGENT_IMDS="off",
        SPOT_AGENT_SYNC_INTERVAL="0",
        SPOT_AGENT_SSE="none",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def with_imds(env: Mapping[str, str], url: str) -> dict[str, str]:
    """The agent's env, polling the IMDS emulator at ``url`` (on 127.0.0.1) every 0.2 s."""
    out = {k: v for k, v in env.items() if k != "AWS_EC2_METADATA_DISABLED"}
    out.update(  # the agent reads the endpoint itself
        SPOT_AGENT_IMDS="on", AWS_EC2_METADATA_SERVICE_ENDPOINT=url, SPOT_AGENT_IMDS_INTERVAL="0.2s"
    )
    return out


def _timestamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def event_list(text: str) -> list[dict[str, Any]]:
    """The agent's JSON log lines in ``text``, in order (the job's output left out)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def _events(text: str) -> dict[str, dict[str, Any]]:
    """The first log line of each event."""
    found: dict[str, dict[str, Any]] = {}
    for doc in event_list(text):
        found.setdefault(str(doc.get("event")), doc)
    return found


def notice_latency(
    env: Mapping[str, str],
    work: Path,
    s3: Any,
    log: Callable[[str], None],
    sizes_mib: tuple[int, ...],
    reps: int,
) -> list[Row]:
    from agent.imds_mock import ImdsMock

    bucket = "bench-latency"
    s3.create_bucket(Bucket=bucket)
    rows: list[Row] = []
    with ImdsMock() as mock:
        for size in sizes_mib:
            source = "-"
            if size:
                source = str(work / f"pending-{size}.bin")
                with open(source, "wb") as fh:
                    for _ in range(size // 8):
                        fh.write(os.urandom(8 * MiB))
            totals, detect, syncs = [], [], []
            for i in range(reps):
                total, det, sync = _one_notice(env, work, mock, bucket, f"lat-{size}-{i}", source)
                totals.append(total)
                detect.append(det)
                syncs.append(sync)
            rows.append(
                {
                    "scenario": "notice->durable",
                    "data": f"{size} MiB pending",
                    "tool": "spot-agent",
                    "reps": reps,
                    "median_seconds": statistics.median(totals),
                    "worst_seconds": max(totals),
                    "median_detect_seconds": statistics.median(detect),
                    "median_sync_seconds": statistics.median(syncs),
                    "samples": totals,
                }
            )
            log(
                f"  notice->durable {size:4d} MiB: median {statistics.median(totals):.2f} s, "
                f"worst {max(totals):.2f} s (detect {statistics.median(detect):.2f} s, "
                f"sync {statistics.median(syncs):.2f} s)"
            )
            if size:
                os.unlink(source)
    s3.delete_bucket(Bucket=bucket)
    return rows


def _one_notice(
    base: Mapping[str, str], work: Path, mock: Any, bucket: str, job: str, source: str
) -> tuple[float, float, float]:
    tmp = work / job
    tmp.mkdir()
    env = agent_env(
        base,
        tmp,
        SPOT_AGENT_CHECKPOINT_URI=f"s3://{bucket}/{job}",
        SPOT_AGENT_CHECKPOINT_DIR=str(tmp / "ckpt"),
        SPOT_AGENT_JOB_ID=job,
    )
    env = with_imds(env, mock.url)
    mock.clear()
    out_path = tmp / "agent.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(
            [*AGENT, "--", sys.executable, "-c", PENDING_JOB, source],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp,
        )
    try:
        deadline = time.monotonic() + 60
        # A whole line: agent.start echoes the command, which holds this text too.
        while "pending-written" not in out_path.read_text().splitlines():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent did not start the job:\n{out_path.read_text()[-3000:]}")
            time.sleep(0.02)
        posted = time.time()
        mock.post_interruption("terminate", in_seconds=120)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out_path.read_text()
    events = _events(text)
    if code != 75 or "sync.committed" not in events:
        raise RuntimeError(f"agent exited {code} without a committed checkpoint:\n{text[-3000:]}")
    committed = events["sync.committed"]
    detected = _timestamp(events["notice.interruption"]) - posted
    if os.environ.get("BENCH_KEEP"):
        print(text, file=sys.stderr)
    shutil.rmtree(tmp)
    return _timestamp(committed) - posted, detected, float(committed["seconds"])


CPU_JOB = "n = 0\nfor i in range({loops}):\n    n += i * i\nprint(n)"
LINES_JOB = (
    "import sys\nw = sys.stdout.write\n"
    "for i in range(1_000_000):\n    w(f'line {{i}} of the job output\\n')"
)


def calibrate_loops(seconds: float) -> int:
    loops = 2_000_000
    started = time.process_time()
    exec(CPU_JOB.format(loops=loops).replace("print(n)", ""), {})
    return int(loops * seconds / max(time.process_time() - started, 1e-3))


def overhead(
    env: Mapping[str, str], work: Path, log: Callable[[str], None], reps: int = 2
) -> list[Row]:
    loops = calibrate_loops(5.0)
    rows: list[Row] = []
    for label, code in (
        ("CPU-bound child (~5 s)", CPU_JOB.format(loops=loops)),
        ("child printing 1,000,000 lines", LINES_JOB),
    ):
        child = [sys.executable, "-c", code]
        bares, wrapped = [], []
        for _ in range(reps):  # interleaved, best of each: background noise hits both alike
            bares.append(run_measured(child, env))
            wrapped.append(_wrapped(env, work, child))
        bare = min(bares, key=lambda m: m.seconds)
        best = min(wrapped, key=lambda w: w["seconds"])
        rows.append(
            {
                "scenario": "overhead",
                "data": label,
                "tool": "bare",
                "seconds": bare.seconds,
                "cpu_seconds": bare.cpu,
            }
        )
        rows.append(
            {
                "scenario": "overhead",
                "data": label,
                "tool": "spot-agent",
                **best,
            }
        )
        log(
            f"  overhead {label:<32} bare {bare.seconds:6.2f} s, under agent "
            f"{best['seconds']:6.2f} s; agent cpu {best['agent_cpu_seconds']:.2f} s, "
            f"peak rss {best['agent_peak_rss_mib']:.0f} MiB"
        )
    rows.append(_with_log_group(env, work, [sys.executable, "-c", LINES_JOB], log))
    return rows


def _with_log_group(
    env: Mapping[str, str], work: Path, child: list[str], log: Callable[[str], None]
) -> Row:
    """The 1,000,000-line child with a CloudWatch log group on a local moto server."""
    moto = start_moto_server(work / "moto")
    try:
        extra = {
            "SPOT_AGENT_LOG_GROUP": "/bench/spot-agent",
            "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": moto.endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        result = _wrapped(env, work, child, extra)
    finally:
        moto.stop()
    log(f"  overhead with a log group: {result['seconds']:6.2f} s, {result.get('note', '')}")
    return {
        "scenario": "overhead",
        "data": "1,000,000 lines, --log-group (moto)",
        "tool": "spot-agent",
        **result,
    }


def _wrapped(
    base: Mapping[str, str], work: Path, child: list[str], extra: Mapping[str, str] | None = None
) -> Row:
    """Run child under the agent (local store, no IMDS); sample the agent process itself."""
    import psutil

    tmp = work / "overhead"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    env = agent_env(
        base,
        tmp,
        SPOT_AGENT_CHECKPOINT_URI=(tmp / "store").as_uri(),
        SPOT_AGENT_CHECKPOINT_DIR=str(tmp / "ckpt"),
        SPOT_AGENT_JOB_ID="overhead",
        **(extra or {}),
    )
    agent_cpu = peak = 0.0
    with open(tmp / "agent.out", "w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            [*AGENT, "--", *child],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp,
        )
        agent = psutil.Process(proc.pid)
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                t = agent.cpu_times()
                agent_cpu = t.user + t.system  # the agent's own threads, not its children
                peak = max(peak, _hwm_mib(proc.pid))
            except (psutil.NoSuchProcess, psutil.ZombieProcess, ProcessLookupError):
                pass
            time.sleep(0.02)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"agent exited {proc.returncode}:\n{(tmp / 'agent.out').read_text()}")
    row: Row = {
        "seconds": seconds,
        "cpu_seconds": ru.ru_utime + ru.ru_stime,
        "agent_cpu_seconds": agent_cpu,
        "agent_peak_rss_mib": peak,
    }
    events = _events((tmp / "agent.out").read_text())
    shipped = events.get("logs.lost") or events.get("logs.shipped")
    if shipped is not None:
        row["note"] = (
            f"log events sent {shipped.get('events_sent', '?')}, lost {shipped.get('lost', 0)}"
        )
    return row


def _hwm_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set so far."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
