"""Issue 12's and issue 23's targets, checked against the rows of one run.

Each check says what was measured, the target, and by how much it is met or missed, so a
change can be judged from the run's own output. With --quick sizes the figures are a
preview: the targets are stated for 4 GiB and 20,000 files (issue 12), and for 1,000,000
files, a 2.5 GiB training dir and 2 and 4 GiB files (issue 23).
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]
RSS_LIMIT_MIB = 128
WARM_SECONDS = 1.0
WARM_REQUESTS = 10


def check(rows: list[Row]) -> list[Row]:
    scale = [  # the scale rows (they know their file count), not the older 1 GiB rows
        r
        for r in rows
        if r.get("scenario") in ("upload", "restore", "warm restart")
        and "files" in r
        and "issue" not in r  # issue 23's rows have targets of their own (check23)
    ]
    found: dict[tuple[str, str, str], Row] = {
        (r["scenario"], r["data"], r["tool"]): r for r in scale if "seconds" in r
    }
    checks: list[Row] = [
        {  # a row that failed in every run misses whatever target it had
            "check": f"{r['scenario']} {r['data']}: spot-agent ran",
            "measured": "failed",
            "target": "ran",
            "met": False,
            "by": "..." + r["todo"][-70:],
        }
        for r in scale
        if r["tool"] == "spot-agent" and "todo" in r
    ]
    for data in sorted({r["data"] for r in scale}):
        for scenario, peer in (("restore", "s5cmd cp"), ("upload", "s5cmd cp")):
            spot, other = (
                found.get((scenario, data, "spot-agent")),
                found.get((scenario, data, peer)),
            )
            if spot and other:
                checks.append(
                    _ratio(f"{scenario} {data}: time <= s5cmd's", spot["seconds"], other["seconds"])
                )
        warm = found.get(("warm restart", data, "spot-agent"))
        if warm:
            checks.append(_at_most(f"warm restart {data}: seconds", warm["seconds"], WARM_SECONDS))
            if warm.get("requests") is not None:
                checks.append(
                    _at_most(f"warm restart {data}: requests", warm["requests"], WARM_REQUESTS)
                )
        upload = found.get(("upload", data, "spot-agent"))
        files = upload.get("files") if upload else None
        if upload and files and files > 1 and upload.get("requests") is not None:
            # 250 for 20,000 files: one per 100 files plus a fixed allowance of 50.
            checks.append(
                _at_most(
                    f"requests per full checkpoint of {data}", upload["requests"], files // 100 + 50
                )
            )
    peaks = [r["peak_rss_mib"] for r in scale if r["tool"] == "spot-agent" and "peak_rss_mib" in r]
    if peaks:
        checks.append(_at_most("agent peak RSS in every row, MiB", max(peaks), RSS_LIMIT_MIB))
    return checks


# Issue 23: (scenario, the rival spot-agent must be no slower than).
RIVALS_23 = {
    "notice->committed": "s5cmd sync",
    "restore": "s5cmd cp",
    "warm restart": "s5cmd sync --size-only (down)",
}


def check23(rows: list[Row]) -> list[Row]:
    """Issue 23's targets: no slower than s5cmd where it names a rival (notice ->
    committed vs `s5cmd sync` of the change, big-file restore vs `s5cmd cp`, warm restart
    vs `s5cmd sync --size-only`), and peak RSS <= 128 MiB in every spot-agent row."""
    mine = [r for r in rows if r.get("issue") == 23]
    found = {(r["scenario"], r["data"], r["tool"]): r for r in mine if "seconds" in r}
    checks: list[Row] = []
    for r in mine:
        peer = RIVALS_23.get(r["scenario"])
        if r["tool"] != "spot-agent" or peer is None:
            continue
        if r["scenario"] == "restore" and not r["data"].startswith("1 x "):
            continue  # the target is stated for one big file
        what = f"{r['scenario']} {r['data']}: time <= {peer}'s"
        other = found.get((r["scenario"], r["data"], peer))
        if "todo" in r:
            checks.append(
                {
                    "check": what,
                    "measured": "failed",
                    "target": "ran",
                    "met": False,
                    "by": "..." + r["todo"][-70:],
                }
            )
        elif other is not None:
            checks.append(_ratio(what, r["seconds"], other["seconds"], peer))
    for r in mine:
        if r["tool"] == "spot-agent" and r.get("peak_rss_mib"):
            checks.append(
                _at_most(
                    f"peak RSS, {r['scenario']} {r['data']}, MiB",
                    round(r["peak_rss_mib"], 1),
                    RSS_LIMIT_MIB,
                )
            )
    return checks


def _at_most(what: str, value: float, limit: float) -> Row:
    return {
        "check": what,
        "measured": round(value, 3),
        "target": limit,
        "met": value <= limit,
        "by": f"{value / limit:.2f}x the target" if limit else "",
    }


def _ratio(what: str, spot: float, peer: float, name: str = "s5cmd") -> Row:
    return {
        "check": what,
        "measured": round(spot, 3),
        "target": round(peer, 3),
        "met": spot <= peer,
        "by": f"{spot / peer:.2f}x {name}'s time" if peer else "",
    }


def render(checks: list[Row], issue: int = 12) -> str:
    lines = [f"issue {issue} targets (medians of this run):"]
    for c in checks:
        mark = "met   " if c["met"] else "MISSED"
        lines.append(
            f"  {mark} {c['check']:<72} {c['measured']:>10} vs {c['target']:<10} ({c['by']})"
        )
    return "\n".join(lines)
