"""One page of a paged manifest (format 4): where pages end, and a page's bytes both ways.

The entries of a manifest (dirs, links, hard links, files, each kind in the manifest's own
order) are cut into pages. A page ends after an entry whose path hashes (CRC-32) to a value
with its low :data:`PAGE_BITS` bits zero, or at :data:`MAX_PAGE_ENTRIES` entries, or where
the kind changes: the cuts depend on the paths alone, so adding, removing or changing a
file changes the page that holds it and no other. A page is named by the sha256 of its
bytes (:func:`page_id`). Layout (compact JSON arrays)::

    {"kind": "files", "packs": [p, ...], "entries": [[path, size, mode, mtime_ns, [CHUNK]]]}
    {"kind": "dirs", "entries": [[path, mode]]}      "links", "hardlinks": [[path, target]]
    CHUNK = [n] (a hole) | [id, size] (a blob) | [id, size, i, offset] (packs[i])

A chunk's and a pack's id is a sha256, or under a format-5 root also a ``blake3:`` id
(:mod:`.hashes`); the page's own name stays its sha256, so a page of sha256 chunks is the
same object under a format-4 and a format-5 root. A page read back is checked against
its name, and each row goes through the validation of every format (:mod:`.manifest`): a
file row is read as the entry a whole manifest (format 3, or 5) stores.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from typing import Any

from checkpoint.errors import ManifestError

from .manifest import (
    MAX_MANIFEST_BYTES,
    Chunk,
    DirEntry,
    FileEntry,
    Manifest,
    chunk_key,
    parse_dir,
    parse_file,
    parse_hardlink,
    parse_link,
    stored_mode,
)

#: a page ends after an entry whose path's CRC-32 has these low bits zero: 2,048 entries
#: on average (about 200 KiB for files of one chunk)
PAGE_BITS = 11
MAX_PAGE_ENTRIES = 8 * (1 << PAGE_BITS)
#: a page holds at most what a whole format-3 manifest could
MAX_PAGE_BYTES = MAX_MANIFEST_BYTES
#: the kinds of entries, in the order a manifest's pages hold them
ENTRY_KINDS = ("dirs", "links", "hardlinks", "files")

Page = tuple[str, bytes]  # (sha256 of the bytes, the bytes)


def page_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kinds(m: Manifest) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The entries of each kind, in the order pages hold them."""
    yield "dirs", m.dirs
    yield "links", m.links
    yield "hardlinks", m.hardlinks
    yield "files", m.files


def cut(entries: tuple[Any, ...]) -> Iterator[list[Any]]:
    """The pages ``entries`` (of one kind) fall into."""
    mask = (1 << PAGE_BITS) - 1
    page: list[Any] = []
    for e in entries:
        page.append(e)
        boundary = zlib.crc32(e.path.encode("utf-8", "surrogateescape")) & mask == 0
        if boundary or len(page) >= MAX_PAGE_ENTRIES:
            yield page
            page = []
    if page:
        yield page


def page_bytes(kind: str, entries: list[Any]) -> bytes:
    doc: dict[str, Any] = {"kind": kind}
    if kind == "files":
        index: dict[str, int] = {}
        rows = [_file_row(f, index) for f in entries]
        doc["packs"] = list(index)
        doc["entries"] = rows
    elif kind == "dirs":
        doc["entries"] = [[d.path, stored_mode(d)] for d in entries]
    else:
        doc["entries"] = [[e.path, e.target] for e in entries]
    data = json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(data) > MAX_PAGE_BYTES:
        raise ManifestError(f"a page of {len(data)} bytes is over {MAX_PAGE_BYTES}")
    return data


def load_page(pid: str, kind: str, data: bytes, packs: dict[str, int], fmt: int) -> list[Any]:
    """The entries of page ``pid`` (of ``kind``, under a root of format ``fmt``), its bytes
    checked against its name."""
    if page_id(data) != pid:
        raise ManifestError(f"page {pid} is damaged: its bytes do not match its hash")
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        raise ManifestError(f"page {pid} is not a page of {kind}")
    rows = doc["entries"]
    if not isinstance(rows, list):
        raise ManifestError(f"page {pid}: entries must be a list")
    if kind == "files":
        ids = doc["packs"]
        if not isinstance(ids, list):
            raise ManifestError(f"page {pid}: packs must be a list")
        key = chunk_key(fmt)  # a row is read as a whole manifest's entry (format 3 or 5)
        return [parse_file(_file_doc(row, ids, key), fmt, packs) for row in rows]
    if kind == "dirs":
        return [parse_dir({"path": path, "mode": mode}, 2) for path, mode in rows]
    if kind == "links":
        return [parse_link(p, t) for p, t in rows]
    return [parse_hardlink(p, t) for p, t in rows]


def as_stored(entry: Any) -> Any:
    """The entry as a page gives it back: a dir whose mode was not recorded has 0o700."""
    if isinstance(entry, DirEntry) and entry.mode is None:
        return DirEntry(entry.path, stored_mode(entry))
    return entry


def _file_doc(row: list[Any], packs: list[Any], key: str) -> dict[str, Any]:
    """A page's file row as the dict a whole manifest writes (a chunk's id under ``key``):
    one validation for every format."""
    path, size, mode, mtime_ns, chunks = row
    out = []
    for c in chunks:
        if len(c) == 1:
            out.append({"hole": c[0]})
        elif len(c) == 2:
            out.append({key: c[0], "size": c[1]})
        else:
            digest, n, index, offset = c
            if type(index) is not int or not 0 <= index < len(packs):
                raise ManifestError(f"{path!r}: chunk names pack {index!r} of {len(packs)}")
            out.append({key: digest, "size": n, "pack": packs[index], "offset": offset})
    return {"path": path, "size": size, "mode": mode, "mtime_ns": mtime_ns, "chunks": out}


def _file_row(f: FileEntry, index: dict[str, int]) -> list[Any]:
    return [f.path, f.size, f.mode, f.mtime_ns, [_chunk_row(c, index) for c in f.chunks]]


def _chunk_row(c: Chunk, index: dict[str, int]) -> list[Any]:
    if c.is_hole:
        return [c.size]
    if c.pack is None:
        return [c.digest, c.size]
    return [c.digest, c.size, index.setdefault(c.pack, len(index)), c.offset]
