"""The timeline as a picture: one bar per attempt on a time axis, written by hand as SVG.

Each attempt's bar spans its start to its end (or the last time it was heard from). On it:
the restore it began with, the time the job ran, the final sync; a red line at the notice,
a dashed one at the deadline, and the work lost shaded between the last committed save and
the notice. Every shape carries a ``<title>`` (a tooltip) and its class, so a stylesheet or
a script can find it: ``attempt``, ``restore``, ``job``, ``final-sync``, ``lost``,
``notice``, ``deadline``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .model import parse_time, seconds_between
from .render import duration

WIDTH = 960
LEFT = 90  # room for "attempt N"
RIGHT = 250  # room for how it ended
TOP = 44
ROW = 34
BAR = 18
COLOURS = {
    "attempt": "#d9dde3",
    "restore": "#4c78a8",
    "job": "#59a14f",
    "final-sync": "#f28e2b",
    "lost": "#e15759",
    "notice": "#c0392b",
    "deadline": "#7f1d1d",
}
_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def _tick(seconds: int) -> str:
    return f"{seconds}s" if seconds < 60 else duration(float(seconds))


class _Axis:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.seconds = max((end - start).total_seconds(), 1.0)
        self.px = (WIDTH - LEFT - RIGHT) / self.seconds

    def shows(self, t: datetime) -> bool:
        return (t - self.start).total_seconds() <= self.seconds

    def x(self, t: datetime) -> float:
        return round(LEFT + (t - self.start).total_seconds() * self.px, 2)

    def ticks(self) -> list[tuple[float, str]]:
        step = next((s for s in _NICE_STEPS if self.seconds / s <= 10), _NICE_STEPS[-1])
        return [
            (round(LEFT + k * step * self.px, 2), _tick(k * step))
            for k in range(int(self.seconds // step) + 1)
        ]


def _rect(cls: str, x0: float, x1: float, y: float, h: float, tip: str, **extra: Any) -> str:
    attrs = "".join(f" data-{k}={quoteattr(str(v))}" for k, v in extra.items())
    # lost work is hatched (the pattern in <defs>), so the bar under it still shows
    paint = 'fill="url(#lost)" stroke="#e15759"' if cls == "lost" else f'fill="{COLOURS[cls]}"'
    return (
        f'<rect class="{cls}" x="{x0}" y="{y}" width="{round(max(x1 - x0, 0.5), 2)}" '
        f'height="{h}" {paint}{attrs}><title>{escape(tip)}</title></rect>'
    )


def _line(cls: str, x: float, y: float, tip: str, dashed: bool = False) -> str:
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    return (
        f'<line class="{cls}" x1="{x}" x2="{x}" y1="{y - 4}" y2="{y + BAR + 4}" '
        f'stroke="{COLOURS[cls]}" stroke-width="2"{dash}><title>{escape(tip)}</title></line>'
    )


def _ends(a: dict[str, Any]) -> list[datetime]:
    """The times the axis must show. Not the deadlines: a spot notice's comes two minutes
    after it, which would squash every bar; one past the axis is given as text."""
    found = [parse_time(a["started"]), parse_time(a["last_heard"])]
    return [t for t in found if t is not None]


def _label(a: dict[str, Any], deadline_shown: bool) -> str:
    notice = a["notice"] or {}
    if a["end"] == "interrupted":
        text = f"interrupted ({notice.get('source', '?')})"
    elif a["end"] == "exited":
        text = f"exited {a['exit_code']}"
    else:
        text = a["end"].replace("_", " ")
    if a["work_lost_seconds"]:
        text += f", lost {duration(a['work_lost_seconds'])}"
    if a["continuation"]:
        text += f", then {a['continuation']['queue']}"
    left = seconds_between(notice.get("received"), notice.get("deadline"))
    if left is not None and not deadline_shown:
        text += f"; deadline {duration(left)} after the notice"
    return text


def _attempt(axis: _Axis, a: dict[str, Any], y: float) -> list[str]:
    out = [f'<text x="{LEFT - 8}" y="{y + 13}" text-anchor="end">attempt {a["attempt"]}</text>']
    start, end = parse_time(a["started"]), parse_time(a["last_heard"])
    if start is None or end is None:
        return out
    out.append(
        _rect(
            "attempt",
            axis.x(start),
            axis.x(end),
            y,
            BAR,
            f"attempt {a['attempt']}: {a['end']}, {duration(a['seconds'])}",
            attempt=a["attempt"],
            end=a["end"],
        )
    )
    restore, job_started = a["restore"] or {}, parse_time(a["job_started"])
    restored = parse_time(restore.get("ended"))
    if restored is not None:
        x1 = axis.x(restored)
        x0 = x1 - float(restore.get("seconds") or 0.0) * axis.px
        seq = restore.get("sequence")
        tip = f"restore of #{seq}: {duration(restore.get('seconds'))}" if seq else "fresh start"
        out.append(_rect("restore", x0, x1, y + 3, BAR - 6, tip, attempt=a["attempt"]))
    final = a["final_sync"] or {}
    final_start = parse_time(final.get("started"))
    if job_started is not None:
        job_end = final_start or end
        out.append(
            _rect(
                "job",
                axis.x(job_started),
                axis.x(job_end),
                y + 3,
                BAR - 6,
                f"job ran {duration(a['job_seconds'])}",
                attempt=a["attempt"],
            )
        )
    notice = a["notice"] or {}
    received = parse_time(notice.get("received"))
    lost = a["work_lost_seconds"]
    if received is not None and lost:
        x1 = axis.x(received)
        out.append(
            _rect(
                "lost",
                x1 - lost * axis.px,
                x1,
                y,
                BAR,
                f"work lost: {duration(lost)} since the last committed save",
                attempt=a["attempt"],
            )
        )
    if final_start is not None:
        x0 = axis.x(final_start)
        secs = float(final.get("seconds") or 0.0)
        out.append(
            _rect(
                "final-sync",
                x0,
                x0 + secs * axis.px,
                y + 3,
                BAR - 6,
                f"final sync: {duration(secs)}",
                attempt=a["attempt"],
            )
        )
    if received is not None:
        took = notice.get("notice_to_committed_seconds")
        out.append(
            _line(
                "notice",
                axis.x(received),
                y,
                f"{notice.get('source')} notice at {notice.get('received')}; "
                f"committed {duration(took)} later",
            )
        )
    deadline = parse_time(notice.get("deadline"))
    shown = deadline is not None and axis.shows(deadline)
    if deadline is not None and shown:
        out.append(_line("deadline", axis.x(deadline), y, f"deadline {notice['deadline']}", True))
    right = max(axis.x(end), axis.x(deadline) if deadline is not None and shown else 0.0)
    out.append(f'<text x="{right + 8}" y="{y + 13}">{escape(_label(a, shown))}</text>')
    return out


def svg(doc: dict[str, Any]) -> str:
    attempts = doc["attempts"]
    times = [t for a in attempts for t in _ends(a)]
    height = TOP + ROW * max(len(attempts), 1) + 60
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        '<defs><pattern id="lost" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fbe3e4"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#e15759" stroke-width="3"/></pattern></defs>',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
    ]
    t = doc["totals"]
    share = "" if t["useful_share"] is None else f", useful {t['useful_share']:.0%}"
    head.append(
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">'
        f"{escape(doc['job_id'])}: {t['attempts']} attempts, {t['interruptions']} "
        f"interruptions, work lost {duration(t['work_lost_seconds'])}{share}</text>"
    )
    if not times:
        return "\n".join([*head, "</svg>", ""])
    axis = _Axis(min(times), max(times))
    body: list[str] = []
    for i, a in enumerate(attempts):
        body += _attempt(axis, a, TOP + i * ROW)
    base = TOP + ROW * len(attempts) + 4
    body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="#333"/>')
    for x, text in axis.ticks():
        body.append(f'<line x1="{x}" x2="{x}" y1="{base}" y2="{base + 4}" stroke="#333"/>')
        body.append(f'<text x="{x}" y="{base + 16}" text-anchor="middle">{text}</text>')
    legend = [("restore", "restore"), ("job", "job running"), ("final-sync", "final sync")]
    legend += [("lost", "work lost"), ("notice", "notice"), ("deadline", "deadline")]
    y, x = base + 34, float(LEFT)
    for cls, text in legend:
        body.append(f'<rect x="{x}" y="{y - 9}" width="12" height="10" fill="{COLOURS[cls]}"/>')
        body.append(f'<text x="{x + 16}" y="{y}">{text}</text>')
        x += 24 + 7 * len(text)
    return "\n".join([*head, *body, "</svg>", ""])
