"""``checkpoints restore``: a checkpoint into a directory (empty, or made exactly the
checkpoint with ``--force``), with a progress line for a person."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from checkpoint.engine.format.jobstore import JobStore

from ..config import ConfigError
from ..stores import EXIT_NOT_FOUND, human_size, prune_to_manifest
from .views import no_checkpoint


def check_target(to: Path, force: bool) -> None:
    if to.exists() and not to.is_dir():
        raise ConfigError("--to", f"{to} exists and is not a directory")
    if not force and to.is_dir() and any(to.iterdir()):
        raise ConfigError(
            "--to",
            f"{to} is not empty: restore into an empty or new directory, or add --force to "
            "make it exactly the checkpoint (what the checkpoint does not have is deleted)",
        )


class ProgressLine:
    """``restore.progress`` for a person: one line redrawn in place at a terminal, a line
    per report otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False

    def __call__(self, _event: str, f: dict[str, Any]) -> None:
        eta = f"{f['eta_seconds']:.0f} s left" if f["eta_seconds"] is not None else ""
        line = (
            f"restoring: {human_size(f['bytes_done'])} of {human_size(f['bytes_total'])} "
            f"({f['percent']:.0f}%), {human_size(f['rate_bytes_per_second'])}/s, {eta}"
        )
        self.stream.write(f"\r{line}\x1b[K" if self.tty else f"{line}\n")
        self.stream.flush()
        self.drawn = self.tty

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def restore(
    job: JobStore, sequence: int | None, to: Path, force: bool, max_bytes_in_flight: int
) -> int:
    from checkpoint.engine.checkpointer import Checkpointer

    if sequence is not None:
        seqs = job.sequences()
        if sequence not in seqs:
            print(no_checkpoint(job, sequence, seqs), file=sys.stderr)
            return EXIT_NOT_FOUND
    shown = ProgressLine(sys.stderr)
    ckpt = Checkpointer(job, to, progress=shown, max_bytes_in_flight=max_bytes_in_flight)
    try:
        # Into an empty dir, a paged checkpoint streams: memory bounded by a page, not by
        # its number of files. --force needs every path of it to prune the rest.
        r = ckpt.restore(sequence, streamed=not force)
    finally:
        ckpt.close()
        shown.end()
    for seq, why in r.skipped:
        print(f"spot-agent: checkpoint {seq} is damaged, skipped: {why}", file=sys.stderr)
    if r.manifest is None:
        print(f"spot-agent: no intact checkpoint for job {job.job_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    removed = prune_to_manifest(to, r.manifest) if force else 0
    print(
        f"restored checkpoint {r.manifest.sequence} into {to}: {r.files_written} files "
        f"downloaded, {r.files_kept} already present, {human_size(r.bytes_downloaded)} "
        f"in {r.seconds:.2f}s" + (f"; removed {removed} entries not in it" if force else "")
    )
    return 0
