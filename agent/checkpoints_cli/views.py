"""``checkpoints jobs``, ``list``, ``show`` and ``timeline``: what the store holds, read
only, as a table or JSON; and the one line for a checkpoint a job does not have."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from checkpoint.engine.format import whole
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.group import GroupCheckpointsView
from checkpoint.errors import CheckpointError

from ..config import ConfigError
from ..stores import EXIT_NOT_FOUND, human_size, list_jobs


def jobs(store: Any, as_json: bool) -> int:
    found = list_jobs(store)
    if as_json:
        print(json.dumps([j.as_dict() for j in found], indent=2))
        return 0
    if not found:
        print(f"no jobs in {store.uri}")
        return 0
    print(f"{'JOB':<40}  {'CHECKPOINTS':>11}  {'NEWEST':>6}  {'NEWEST AT':<20}  {'STORED':>10}")
    for j in found:
        newest = "-" if j.newest is None else str(j.newest)
        at = j.newest_at.strftime("%Y-%m-%d %H:%M:%S") if j.newest_at else "-"
        print(
            f"{j.job_id:<40}  {j.checkpoints:>11}  {newest:>6}  {at:<20}  "
            f"{human_size(j.stored_bytes):>10}"
        )
    return 0


def list_checkpoints(job: JobStore, as_json: bool) -> int:
    rows: list[dict[str, Any]] = []
    for seq in job.sequences():
        try:
            m = job.load_manifest(seq)
        except CheckpointError as exc:
            rows.append({"sequence": seq, "error": str(exc)})
            continue
        rows.append(
            {
                "sequence": seq,
                "created": m.created,
                "attempt": m.attempt,
                "reason": m.reason,
                "files": len(m.files),
                "bytes": m.size,
                "progress": m.progress,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no checkpoints for job {job.job_id} in {job.store.uri}")
        return 0
    print(
        f"{'SEQ':>6}  {'CREATED':<24}  {'ATTEMPT':>7}  {'REASON':<12}  {'FILES':>6}  "
        f"{'SIZE':>10}  PROGRESS"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['sequence']:>6}  DAMAGED: {r['error']}")
            continue
        progress = " ".join(f"{k}={v}" for k, v in r["progress"].items())
        print(
            f"{r['sequence']:>6}  {r['created']:<24}  {r['attempt']:>7}  {r['reason']:<12}  "
            f"{r['files']:>6}  {human_size(r['bytes']):>10}  {progress}"
        )
    return 0


def show(job: JobStore, sequence: int | None, as_json: bool) -> int:
    seqs = job.sequences()
    if not seqs:
        print(f"no checkpoints for job {job.job_id} in {job.store.uri}", file=sys.stderr)
        return EXIT_NOT_FOUND
    seq = seqs[-1] if sequence is None else sequence
    if seq not in seqs:
        print(no_checkpoint(job, seq, seqs), file=sys.stderr)
        return EXIT_NOT_FOUND
    m = job.load_manifest(seq)
    # A group checkpoint is no stored manifest: the union of its parts, as restore sees it.
    grouped = isinstance(job, GroupCheckpointsView)
    raw = whole.encode(m) if grouped else job.store.get_object(job.manifest_key(seq))
    if as_json:
        doc = json.loads(raw)
        if m.pages:  # a paged manifest (format 4): each page's entries after its listing
            for listed in doc["pages"]:
                listed["page"] = json.loads(job.store.get_object(job.page_key(listed["id"])))
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"checkpoint {m.sequence} of job {m.job_id}: {m.created}, attempt {m.attempt}, "
        f"reason {m.reason}, {len(m.files)} files, {human_size(m.size)}, "
        f"{len(m.blob_hashes())} distinct chunks"
    )
    if m.progress:
        print("progress: " + " ".join(f"{k}={v}" for k, v in m.progress.items()))
    for f in m.files:
        print(f"  {f.mode:04o} {f.size:>14,d}  {f.path}")
    for lk in m.links:
        print(f"  link {'':>14}  {lk.path} -> {lk.target}")
    return 0


def timeline(job: JobStore, as_json: bool, svg_file: str | None) -> int:
    from ..timeline import model, render, svg

    doc = model.load_timeline(job).as_dict()
    if svg_file:
        try:
            Path(svg_file).write_text(svg.svg(doc))
        except OSError as exc:
            raise ConfigError("--svg", f"cannot write {svg_file}: {exc.strerror}") from None
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print(render.table(doc))
    return 0


def no_checkpoint(job: JobStore, seq: int, seqs: list[int]) -> str:
    """The one line for a sequence the job does not have: pruned, or never committed."""
    if not seqs:
        return f"spot-agent: no checkpoints for job {job.job_id} in {job.store.uri}"
    held = f"{seqs[0]}..{seqs[-1]}" if len(seqs) > 1 else str(seqs[0])
    if 0 < seq < seqs[-1]:  # sequences are committed in order: a gap was there once
        return f"spot-agent: checkpoint {seq} of job {job.job_id} was pruned (it has {held})"
    return f"spot-agent: job {job.job_id} has no checkpoint {seq} (it has {held})"
