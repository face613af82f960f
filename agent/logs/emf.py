"""CloudWatch Embedded Metric Format: the figures of a few events become metrics.

CloudWatch Logs extracts a metric from any event that carries an ``_aws`` block naming
it, so dashboards and alarms need no PutMetricData calls and no extra permission.

Dimensions are kept low-cardinality on purpose: every distinct dimension value is a
custom metric billed by the month, and a fleet runs many jobs. So the only dimension is
the log group (in practice one per application or queue); ``JobId`` is carried as a plain
field, which Logs Insights can still filter and group by, but it is not a dimension.
"""

from __future__ import annotations

import time
from typing import Any

NAMESPACE = "SpotAgent"

#: event -> [(metric name, unit, field of the event that holds its value)]
METRICS: dict[str, list[tuple[str, str, str]]] = {
    "sync.committed": [
        ("CheckpointSeconds", "Seconds", "seconds"),
        ("CheckpointBytes", "Bytes", "bytes"),
        ("CheckpointBytesUploaded", "Bytes", "bytes_uploaded"),
    ],
    "notice.interruption": [
        ("Interruptions", "Count", ""),
        ("NoticeSecondsLeft", "Seconds", "seconds_left"),
    ],
    # one per interruption, at exit: what it cost (see agent.timeline.model)
    "interruption.cost": [
        ("WorkLostSeconds", "Seconds", "work_lost_seconds"),
        ("NoticeToCommittedSeconds", "Seconds", "notice_to_committed_seconds"),
    ],
}


def embed(event: dict[str, Any], dimensions: dict[str, str]) -> dict[str, Any]:
    """``event`` with its EMF block and metric members, if it has metrics; else unchanged."""
    wanted = METRICS.get(str(event.get("event")))
    if not wanted:
        return event
    values: dict[str, float] = {}
    defs = []
    for name, unit, source in wanted:
        value = 1 if not source else event.get(source)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[name] = value
            defs.append({"Name": name, "Unit": unit})
    if not defs:
        return event
    doc = dict(event)
    doc.update(dimensions)
    doc.update(values)
    doc["JobId"] = event.get("job_id")
    doc["_aws"] = {
        "Timestamp": int(time.time() * 1000),
        "CloudWatchMetrics": [
            {"Namespace": NAMESPACE, "Dimensions": [sorted(dimensions)], "Metrics": defs}
        ],
    }
    return doc
