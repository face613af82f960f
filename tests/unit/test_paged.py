"""Manifest format 4 as pure data (checkpoint.engine.format.paged): cuts that depend on paths
alone, the round trip, and roots and pages that a store could hand back damaged or hostile."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from checkpoint.engine.format import paged
from checkpoint.engine.format.manifest import (
    HOLE,
    Chunk,
    DirEntry,
    FileEntry,
    HardLinkEntry,
    LinkEntry,
    Manifest,
)
from checkpoint.errors import ManifestError

PACK = hashlib.sha256(b"pack").hexdigest()


def h(n: int) -> str:
    return hashlib.sha256(b"%d" % n).hexdigest()


def manifest(n: int) -> Manifest:
    files = tuple(
        FileEntry(f"d{i // 1000:03d}/f{i:06d}", 10, 0o644, i, (Chunk(h(i), 10, PACK, 10 * i),))
        for i in range(n)
    )
    dirs = tuple(DirEntry(f"d{d:03d}", 0o755) for d in range((n + 999) // 1000))
    return Manifest("job", 1, 1, "2026-01-01T00:00:00Z", "test", files, dirs, packs={PACK: 10 * n})


def decoded(root: bytes, pages: list[tuple[str, bytes]]) -> Manifest:
    found = dict(pages)
    return paged.decode(root, lambda ids: [found[i] for i in ids])[0]


def test_one_file_added_changes_one_page_of_many() -> None:
    before = manifest(20_000)
    files = list(before.files)
    files.insert(12_345, FileEntry("d012/f012344a", 3, 0o600, 5, (Chunk(h(-1), 3),)))
    after = replace(before, files=tuple(files))
    _, old = paged.encode(before)
    _, new = paged.encode(after)
    assert len(old) >= 6
    assert len({p for p, _ in new} - {p for p, _ in old}) == 1


def test_every_kind_of_entry_and_chunk_round_trips() -> None:
    m = Manifest(
        "job",
        7,
        2,
        "2026-01-01T00:00:00Z",
        "interruption",
        (
            FileEntry(
                "a", 30, 0o600, -5, (Chunk(h(1), 10), Chunk(HOLE, 10), Chunk(h(2), 10, PACK, 0))
            ),
            FileEntry("b\udcff", 0, 0o755, 2**62, ()),
        ),
        (DirEntry("d", 0o711), DirEntry("e", None)),
        (LinkEntry("l", "a"),),
        {"step": 3},
        "0.1.0",
        (HardLinkEntry("c", "a"),),
        {PACK: 10},
    )
    root, pages = paged.encode(m)
    assert paged.is_paged(root) and json.loads(root)["format"] == 4
    got = decoded(root, pages)
    assert got == replace(m, dirs=(DirEntry("d", 0o711), DirEntry("e", 0o700)))


def root_with(listed: list[dict[str, object]]) -> bytes:
    doc = {"format": 4, "job_id": "job", "sequence": 1, "attempt": 1, "created": "x"}
    return json.dumps({**doc, "packs": {}, "pages": listed}).encode()


@pytest.mark.parametrize(
    "listed",
    [
        {"id": "../../../etc/passwd", "kind": "files", "entries": 1},
        {"id": "A" * 64, "kind": "files", "entries": 1},
        {"id": "a" * 64, "kind": "secrets", "entries": 1},
        {"id": "a" * 64, "kind": "files", "entries": 0},
        {"id": "a" * 64, "kind": "files", "entries": paged.MAX_ITEMS + 1},
    ],
)
def test_a_bad_listing_is_refused_before_any_page_is_read(listed: dict[str, object]) -> None:
    def fetch(ids: list[str]) -> list[bytes]:
        raise AssertionError(f"read {ids}")

    with pytest.raises(ManifestError, match=r"^manifest: "):
        paged.decode(root_with([listed]), fetch)


def test_a_page_entry_is_checked_like_a_format_3_entry() -> None:
    page = json.dumps({"kind": "files", "packs": [], "entries": [["../x", 0, 420, 0, []]]})
    data = page.encode()
    pid = hashlib.sha256(data).hexdigest()
    with pytest.raises(ManifestError, match=r"has an empty, '\.' or '\.\.' component"):
        paged.decode(root_with([{"id": pid, "kind": "files", "entries": 1}]), lambda ids: [data])


def test_a_page_that_does_not_match_its_id_is_damaged() -> None:
    root, pages = paged.encode(manifest(10))
    (pid, data), *_ = [p for p in pages if b'"files"' in p[1]]
    found = dict(pages)
    found[pid] = data.replace(b"f000003", b"f000004")
    with pytest.raises(ManifestError, match=f"page {pid} is damaged"):
        paged.decode(root, lambda ids: [found[i] for i in ids])


def test_a_commit_check_refuses_pages_that_do_not_read_back_as_written() -> None:
    m = manifest(10)
    root, pages = paged.encode(m)
    other = replace(m, files=(*m.files[:-1], replace(m.files[-1], mode=0o600)))
    with pytest.raises(ManifestError, match="does not read back"):
        paged.decode(root, lambda ids: [dict(pages)[i] for i in ids], expect=other)
    assert paged.decode(root, lambda ids: [dict(pages)[i] for i in ids], expect=m)[0] == m
