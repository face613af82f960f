"""The timeline as a table for a person at a terminal: one line per attempt, then totals."""

from __future__ import annotations

from typing import Any

from ..stores import human_size


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _time(iso: str | None) -> str:
    return "-" if not iso else iso.replace("T", " ")[:19]


def _end(a: dict[str, Any]) -> str:
    notice = a["notice"] or {}
    if a["end"] == "interrupted":
        text = f"interrupted ({notice.get('source', '?')}), exit {a['exit_code']}"
    elif a["end"] == "exited":
        text = f"exited {a['exit_code']}"
    elif a["end"] == "cut_short":
        text = "cut short" + (f" after a notice ({notice['source']})" if notice else "")
    else:
        text = f"running (last heard {_time(a['last_heard'])})"
    moved = a["continuation"]
    if moved:
        text += f"; continued as {moved['job_id']} on {moved['queue']} ({moved['because']})"
    return text


def _where(a: dict[str, Any]) -> str:
    inst = a["instance"]
    parts = [a["host"] or "?"]
    if inst:
        parts.append(
            " ".join(
                str(inst[k])
                for k in ("instance_id", "instance_type", "availability_zone", "lifecycle")
                if inst.get(k)
            )
        )
    if a["batch_job_id"]:
        parts.append(f"batch {a['batch_job_id']}#{a['batch_attempt']}")
    if a["continued_because"]:
        parts.append(f"continuation ({a['continued_because']})")
    return ", ".join(parts)


def _restore(a: dict[str, Any]) -> str:
    r = a["restore"]
    if not r:
        return "-"
    if r.get("sequence") is None:
        return "fresh start"
    down, kept = human_size(r.get("bytes_downloaded", 0)), human_size(r.get("bytes_kept", 0))
    return f"#{r['sequence']} {duration(r.get('seconds'))} {down} down, {kept} kept"


def _syncs(a: dict[str, Any]) -> str:
    s = a["syncs"]
    if not s:
        return "-"
    return (
        f"{s.get('count', 0)} ({s.get('commits', 0)} commits) {duration(s.get('seconds'))} "
        f"{human_size(s.get('bytes_uploaded', 0))} up"
    )


def _notice(a: dict[str, Any]) -> str:
    n = a["notice"]
    if not n:
        return "-"
    took = n.get("notice_to_committed_seconds")
    return f"{_time(n.get('received'))[11:]} -> committed in {duration(took)}"


COLUMNS = (
    ("#", lambda a: str(a["attempt"])),
    ("STARTED (UTC)", lambda a: _time(a["started"])),
    ("LASTED", lambda a: duration(a["seconds"])),
    ("END", _end),
    ("RESTORE", _restore),
    ("SYNCS", _syncs),
    ("NOTICE", _notice),
    ("LOST", lambda a: duration(a["work_lost_seconds"])),
    ("WHERE", _where),
)


def table(doc: dict[str, Any]) -> str:
    rows = [[head for head, _ in COLUMNS]]
    rows += [[cell(a) for _, cell in COLUMNS] for a in doc["attempts"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
        for r in rows
    ]
    t = doc["totals"]
    share = t["useful_share"]
    lines += [
        "",
        f"job {doc['job_id']}: {t['attempts']} attempts, {t['interruptions']} interruptions, "
        f"{t['cut_short']} cut short",
        f"wall {duration(t['wall_seconds'])} = attempts {duration(t['attempt_seconds'])} + "
        f"between attempts {duration(t['between_attempts_seconds'])}",
        f"attempts: restoring {duration(t['restore_seconds'])}, job running "
        f"{duration(t['job_seconds'])}, final syncs {duration(t['final_sync_seconds'])}; "
        f"all syncs {duration(t['sync_seconds'])}, {human_size(t['bytes_uploaded'])} up, "
        f"{human_size(t['bytes_downloaded'])} down",
        f"work lost {duration(t['work_lost_seconds'])}; useful "
        f"{duration(t['useful_seconds'])}"
        + ("" if share is None else f" ({share:.0%} of the wall time)"),
    ]
    return "\n".join(lines)
