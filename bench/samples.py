"""One run of a tool as a sample, and the row that stands for several: their median."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .s3counts import total
from .tracked import Run

Row = dict[str, Any]
EXTRA_SECONDS = {
    "restore_step_seconds": "its restore step (logged)",
    "seconds_job_end_to_exit": "job end to agent exit",
    "sync_seconds": "its final sync (logged)",
}


def sample_of(run: Run, requests: dict[str, int], r: int) -> Row:
    row: Row = {
        "rep": r,
        "seconds": run.seconds,
        "cpu_seconds": run.cpu,
        "requests_by_kind": requests,
        "requests": total(requests),
        **run.rss_summary(),
        "copied": sum(
            1
            for line in run.output.splitlines()
            if line.startswith(("cp ", "upload: ", "download: "))
        ),
    }
    if run.stopped:
        row["error"] = f"stopped: {run.stopped}"
    elif run.returncode != 0:
        last = (run.output.strip().splitlines() or [""])[-1]
        row["error"] = f"exit {run.returncode}: {last[-200:]}"  # the cause ends the line
    return row


def skipped_sample(r: int, why: str) -> Row:
    """A run the benchmark did not make (a cap said it would not finish, or kill the box)."""
    return {"rep": r, "seconds": 0.0, "error": f"not run: {why}", "skipped": True}


def note_copies(sample: Row) -> None:
    """A 'nothing changed' sync should copy nothing: say so when it copied something."""
    if sample.get("copied"):
        sample["note"] = f"it copied {sample['copied']} files"


def median_row(
    scenario: str, label: str, tool: str, samples: list[Row], tree: tuple[int, int]
) -> Row:
    files, size = tree
    ok = [s for s in samples if "error" not in s]
    row: Row = {
        "scenario": scenario,
        "data": label,
        "tool": tool,
        "reps": len(samples),
        "files": files,
        "bytes": size,
    }
    if len(ok) < len(samples):
        row["failures"] = [s["error"] for s in samples if "error" in s]
    if not ok:
        if all(s.get("skipped") for s in samples):
            row["todo"] = samples[0]["error"]
        else:
            row["todo"] = f"failed in all {len(samples)} runs: {samples[0]['error']}"
        return row
    by_time = sorted(ok, key=lambda s: s["seconds"])
    mid = by_time[(len(by_time) - 1) // 2]  # the median run (the lower one of an even count)
    notes = sorted({s["note"] for s in ok if s.get("note")})
    if notes:
        row["note"] = "; ".join(notes)
    row.update(
        seconds=statistics.median(s["seconds"] for s in ok),
        samples=[round(s["seconds"], 3) for s in samples if "error" not in s],
        cpu_seconds=statistics.median(s["cpu_seconds"] for s in ok),
        requests=mid.get("requests"),
        requests_by_kind=mid.get("requests_by_kind"),
        peak_rss_mib=max(s.get("peak_rss_mib") or 0 for s in ok),  # worst of the runs
        rss_timeline_mib=mid.get("rss_timeline_mib"),
    )
    if mid.get("no_ratios"):
        row["no_ratios"] = True
    for key, label in EXTRA_SECONDS.items():  # medians of what some rows also measure
        if ok and all(key in s for s in ok):
            row[key] = statistics.median(s[key] for s in ok)
            row["note"] = f"{row.get('note', '')}; {label} {row[key]:.2f} s".lstrip("; ")
    if scenario in ("upload", "restore"):
        row["mb_per_s"] = size / row["seconds"] / 1e6
    if row.get("failures"):
        row["note"] = (
            row.get("note", "") + f"; {len(row['failures'])} of {len(samples)} runs failed"
        ).lstrip("; ")
    return row


class Collector:
    """The samples of one data set by (scenario, tool), each logged as it comes; then rows."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.runs: dict[tuple[str, str], list[Row]] = defaultdict(list)

    def keep(self, scenario: str, tool: str, sample: Row) -> None:
        self.runs[(scenario, tool)].append(sample)
        if sample.get("skipped"):
            self.log(f"  r{sample['rep']} {scenario:<17} {tool:<36} {sample['error']}")
            return
        err = f"  FAILED: {sample['error']}" if "error" in sample else ""
        self.log(
            f"  r{sample['rep']} {scenario:<17} {tool:<36} {sample['seconds']:7.2f} s "
            f"cpu {sample.get('cpu_seconds') or 0:6.2f} s  req {sample.get('requests')}  "
            f"rss {sample.get('peak_rss_mib') or 0:4.0f} MiB{err}"
        )

    def rows(self, label: str, tree: tuple[int, int], order: list[str]) -> list[Row]:
        """Median rows, in the order of ``order``'s scenarios (tools as they came)."""
        rows = [
            median_row(scenario, label, tool, samples, tree)
            for (scenario, tool), samples in self.runs.items()
        ]
        rows.sort(key=lambda row: order.index(row["scenario"]))
        return rows
