"""Small files packed together (manifest format 3): sync, restore, damage, gc, old formats."""

from __future__ import annotations

import os
from pathlib import Path

from checkpoint.store import LocalStore
from checkpoint.sync import Checkpointer, JobStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_stored_format_2_checkpoint_still_restores(tmp_path: Path) -> None:
    store = LocalStore(FIXTURES / "format2_store")
    dst = tmp_path / "dst"
    r = Checkpointer(JobStore(store, "f2job"), dst, attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    assert (dst / "sub" / "a.txt").read_text() == "hello format 2\n"
    assert (dst / "b.bin").read_bytes() == bytes(range(256)) * 12 + b"tail"
    assert (dst / "empty").read_bytes() == b""
    assert os.readlink(dst / "link") == "sub/a.txt"
    assert os.stat(dst / "hard").st_ino == os.stat(dst / "b.bin").st_ino
    assert os.stat(dst / "b.bin").st_mode & 0o777 == 0o640
    assert os.stat(dst / "sub").st_mode & 0o777 == 0o750
    assert os.stat(dst / "b.bin").st_mtime_ns == 1577836800000000000
