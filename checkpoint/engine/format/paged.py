"""Manifest format 4: a small root and content-addressed pages, so that a commit where k
files changed writes O(k) manifest bytes, not O(N), and no checkpoint meets a size cap.

The entries of a manifest (dirs, links, hard links, files, each kind in the manifest's own
order) are cut into pages. A page ends after an entry whose path hashes (CRC-32) to a value
with its low :data:`PAGE_BITS` bits zero, or at :data:`MAX_PAGE_ENTRIES` entries, or where
the kind changes: the cuts depend on the paths alone, so adding, removing or changing a
file changes the page that holds it and no other (as in restic's trees and git's, and
content-defined chunking). A page is stored once under ``<job>/pages/<h[:2]>/<h>``, ``h``
the sha256 of its bytes; a commit PUTs only the pages that the checkpoint it follows does
not have (and reads back only those, as a restore would), and then the root, which lists
the pages in order with the job's facts and the ``packs`` table, under
``<job>/manifests/<seq>.json`` with put-if-absent: still the one write that commits.

Loading checks each page against its hash (a damaged page makes the checkpoint damaged:
restore passes over it, loudly) and runs every entry through the same validation as
formats 1 to 3 (:mod:`.manifest`), then the whole-tree checks. A manifest of at
most :data:`PAGED_ABOVE` entries is still written as one format-3 object: one request to
commit or load, and nothing to page. An agent that reads only formats 1 to 3 refuses a
format-4 root ("unsupported format 4") and falls back to an older checkpoint.

Page layout (compact JSON arrays)::

    {"kind": "files", "packs": [p, ...], "entries": [[path, size, mode, mtime_ns, [CHUNK]]]}
    {"kind": "dirs", "entries": [[path, mode]]}      "links", "hardlinks": [[path, target]]
    CHUNK = [n] (a hole) | [sha256, size] (a blob) | [sha256, size, i, offset] (packs[i])
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from checkpoint.errors import ManifestError

from .manifest import (
    MAX_MANIFEST_BYTES,
    Chunk,
    DirEntry,
    FileEntry,
    HardLinkEntry,
    LinkEntry,
    Manifest,
    check_link_target,
    check_relpath,
    check_tree,
    parse_dir,
    parse_file,
    parse_packs,
)

FORMAT = 4
#: a page ends after an entry whose path's CRC-32 has these low bits zero: 2,048 entries
#: on average (about 200 KiB for files of one chunk)
PAGE_BITS = 11
MAX_PAGE_ENTRIES = 8 * (1 << PAGE_BITS)
#: manifests of more entries than this are paged (format 4); smaller ones stay format 3
PAGED_ABOVE = 1 << PAGE_BITS
#: bounds on what a store may hand back: a page holds at most what a whole format-3
#: manifest could, the root lists at most this many bytes of pages and packs
MAX_PAGE_BYTES = MAX_MANIFEST_BYTES
MAX_ROOT_BYTES = 64 << 20
#: entries plus chunks of one paged checkpoint (1,000,000 files of up to 3 chunks each)
MAX_ITEMS = 4_000_000
KINDS = ("dirs", "links", "hardlinks", "files")
_PAGE_ID = re.compile(r"[0-9a-f]{64}\Z")
_ROOT_HEAD = re.compile(rb'\s*\{\s*"format"\s*:\s*4\s*[,}]')

Page = tuple[str, bytes]  # (sha256 of the bytes, the bytes)
#: the bytes of the pages with these ids, in this order
PageReader = Callable[[list[str]], Iterable[bytes]]


def page_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode(manifest: Manifest) -> tuple[bytes, list[Page]]:
    """The root's bytes and the pages (id, bytes) of a format-4 manifest."""
    pages: list[Page] = []
    listed: list[dict[str, Any]] = []
    for kind, entries in _kinds(manifest):
        for batch in _cut(entries):
            data = _page_bytes(kind, batch)
            if len(data) > MAX_PAGE_BYTES:
                raise ManifestError(f"a page of {len(data)} bytes is over {MAX_PAGE_BYTES}")
            pid = page_id(data)
            pages.append((pid, data))
            listed.append({"id": pid, "kind": kind, "entries": len(batch)})
    root = {
        "format": FORMAT,
        "job_id": manifest.job_id,
        "sequence": manifest.sequence,
        "attempt": manifest.attempt,
        "created": manifest.created,
        "reason": manifest.reason,
        "agent_version": manifest.agent_version,
        "progress": manifest.progress,
        "packs": manifest.packs,
        "pages": listed,
    }
    data = json.dumps(root, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(data) > MAX_ROOT_BYTES:
        raise ManifestError(f"manifest root of {len(data)} bytes is over {MAX_ROOT_BYTES}")
    return data, pages


def is_paged(data: bytes) -> bool:
    """Is this manifest object a format-4 root? A look at its head: a format-3 manifest
    of 64 MiB is not parsed twice to find out."""
    return _ROOT_HEAD.match(data[:256]) is not None


def decode(
    root: bytes,
    fetch: PageReader,
    *,
    where: str = "manifest",
    expect: Manifest | None = None,
    checked: Collection[str] = (),
) -> tuple[Manifest, tuple[str, ...]]:
    """The manifest a format-4 root describes, its pages read with ``fetch`` (at most
    :data:`MAX_PAGE_BYTES` each), and the ids of those pages.

    ``expect``: the manifest these bytes were encoded from (a commit's check that restore
    will read back what sync wrote). Each page is parsed and compared with the entries it
    was made from, then dropped: no second copy of a large manifest is built. Pages in
    ``checked`` (stored by an earlier commit, which checked them) are not parsed again.
    """
    try:
        doc = json.loads(root)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestError(f"{where}: not valid JSON ({type(exc).__name__})") from None
    try:
        return _decode(doc, fetch, expect, checked if expect is not None else ())
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        raise ManifestError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None


def page_refs(
    root: bytes, fetch: Callable[[str], bytes], seen: set[str], *, where: str = "manifest"
) -> tuple[set[str], set[str]]:
    """The blobs and the packs that the pages of a format-4 root not in ``seen`` reference,
    each page read, checked and parsed on its own and its id added to ``seen``: what gc
    needs, without the whole manifest in memory and without reading a page twice."""
    blobs: set[str] = set()
    packs_used: set[str] = set()
    try:
        packs, listed = _listing(json.loads(root))
        for page in listed:
            pid = page["id"]
            if pid in seen:
                continue
            for e in _load_page(pid, page["kind"], fetch(pid), packs):
                for c in e.chunks if isinstance(e, FileEntry) else ():
                    if c.pack is not None:
                        packs_used.add(c.pack)
                    elif not c.is_hole:
                        blobs.add(c.sha256)
            seen.add(pid)
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        raise ManifestError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None
    return blobs, packs_used


def _listing(doc: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The packs table and the pages of a root, the whole listing checked before any page
    is read."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ManifestError("not a format-4 manifest root")
    packs = parse_packs(doc.get("packs", {}))
    listed = doc["pages"]
    if not isinstance(listed, list):
        raise ManifestError("pages must be a list")
    items = 0
    for n, page in enumerate(listed):
        pid, kind, count = page["id"], page["kind"], page["entries"]
        if kind not in KINDS or not isinstance(pid, str) or not _PAGE_ID.match(pid):
            raise ManifestError(f"page {n} is listed as {page!r}")
        if type(count) is not int or count < 1:  # sync never writes an empty page
            raise ManifestError(f"page {n} is listed as {page!r}")
        items += count
    if items > MAX_ITEMS:
        raise ManifestError(f"{items} entries are over the {MAX_ITEMS} a checkpoint may hold")
    return packs, listed


def _decode(
    doc: Any, fetch: PageReader, expect: Manifest | None, checked: Collection[str]
) -> tuple[Manifest, tuple[str, ...]]:
    packs, listed = _listing(doc)
    found: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    items = sum(page["entries"] for page in listed)
    ids = [page["id"] for page in listed]
    written = dict(_kinds(expect)) if expect is not None else {}
    at = dict.fromkeys(KINDS, 0)
    for page, data in zip(listed, fetch(ids), strict=True):
        pid, kind = page["id"], page["kind"]
        made_from = [
            _as_stored(e) for e in written.get(kind, ())[at[kind] : at[kind] + page["entries"]]
        ]
        if pid in checked:  # these very bytes were read back when they were first written
            entries = made_from
        else:
            entries = _load_page(pid, kind, data, packs)
            if expect is not None and made_from != entries:
                raise ManifestError(
                    f"page {pid} does not read back as the entries it was made from"
                )
        if len(entries) != page["entries"]:
            raise ManifestError(f"page {pid} holds {len(entries)} entries, not {page['entries']}")
        items += sum(len(e.chunks) for e in entries if isinstance(e, FileEntry))
        if items > MAX_ITEMS:
            raise ManifestError(f"over {MAX_ITEMS} entries and chunks")
        if expect is None:
            found[kind].extend(entries)
        at[kind] += len(entries)
    if expect is not None:
        if any(at[kind] != len(written[kind]) for kind in KINDS):
            raise ManifestError("the pages do not hold every entry")
        files, dirs, links, hardlinks = expect.files, expect.dirs, expect.links, expect.hardlinks
    else:
        files = tuple(found["files"])
        dirs = tuple(found["dirs"])
        links = tuple(found["links"])
        hardlinks = tuple(found["hardlinks"])
    check_tree(files, dirs, links, hardlinks)
    progress = doc.get("progress") or {}
    if not isinstance(progress, dict):
        raise ManifestError("progress must be an object")
    sequence = doc["sequence"]
    if type(sequence) is not int or sequence < 1:
        raise ManifestError(f"sequence must be a positive integer, got {sequence!r}")
    attempt = doc["attempt"]
    if type(attempt) is not int or attempt < 0:
        raise ManifestError(f"attempt must be a non-negative integer, got {attempt!r}")
    manifest = Manifest(
        job_id=str(doc["job_id"]),
        sequence=sequence,
        attempt=attempt,
        created=str(doc["created"]),
        reason=str(doc.get("reason", "")),
        files=files,
        dirs=dirs,
        links=links,
        progress=progress,
        agent_version=str(doc.get("agent_version", "")),
        hardlinks=hardlinks,
        packs=packs,
    )
    return manifest, tuple(ids)


def read_pages(fetch: Callable[[str], bytes], ids: list[str], window: int) -> Iterator[bytes]:
    """``fetch`` each page, ``window`` at a time in threads, in order."""
    with ThreadPoolExecutor(max(1, window), thread_name_prefix="ckpt-pages") as pool:
        pending: deque[Future[bytes]] = deque()
        for pid in ids:
            pending.append(pool.submit(fetch, pid))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _load_page(pid: str, kind: str, data: bytes, packs: dict[str, int]) -> list[Any]:
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
        return [parse_file(_file_doc(row, ids), 3, packs) for row in rows]
    if kind == "dirs":
        return [parse_dir({"path": path, "mode": mode}, 2) for path, mode in rows]
    if kind == "links":
        return [LinkEntry(check_relpath(p), check_link_target(t)) for p, t in rows]
    return [HardLinkEntry(check_relpath(p), check_relpath(t)) for p, t in rows]


def _file_doc(row: list[Any], packs: list[Any]) -> dict[str, Any]:
    """A page's file row as the dict format 3 writes: one validation for every format."""
    path, size, mode, mtime_ns, chunks = row
    out = []
    for c in chunks:
        if len(c) == 1:
            out.append({"hole": c[0]})
        elif len(c) == 2:
            out.append({"sha256": c[0], "size": c[1]})
        else:
            digest, n, index, offset = c
            if type(index) is not int or not 0 <= index < len(packs):
                raise ManifestError(f"{path!r}: chunk names pack {index!r} of {len(packs)}")
            out.append({"sha256": digest, "size": n, "pack": packs[index], "offset": offset})
    return {"path": path, "size": size, "mode": mode, "mtime_ns": mtime_ns, "chunks": out}


def _as_stored(entry: Any) -> Any:
    """A dir whose mode was not recorded is stored as 0o700 (as format 3 stores it)."""
    if isinstance(entry, DirEntry) and entry.mode is None:
        return DirEntry(entry.path, 0o700)
    return entry


def _kinds(m: Manifest) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The entries of each kind, in the order pages hold them."""
    yield "dirs", m.dirs
    yield "links", m.links
    yield "hardlinks", m.hardlinks
    yield "files", m.files


def _cut(entries: tuple[Any, ...]) -> Iterator[list[Any]]:
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


def _page_bytes(kind: str, entries: list[Any]) -> bytes:
    doc: dict[str, Any] = {"kind": kind}
    if kind == "files":
        index: dict[str, int] = {}
        rows = [_file_row(f, index) for f in entries]
        doc["packs"] = list(index)
        doc["entries"] = rows
    elif kind == "dirs":
        doc["entries"] = [[d.path, 0o700 if d.mode is None else d.mode] for d in entries]
    else:
        doc["entries"] = [[e.path, e.target] for e in entries]
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _file_row(f: FileEntry, index: dict[str, int]) -> list[Any]:
    return [f.path, f.size, f.mode, f.mtime_ns, [_chunk_row(c, index) for c in f.chunks]]


def _chunk_row(c: Chunk, index: dict[str, int]) -> list[Any]:
    if c.is_hole:
        return [c.size]
    if c.pack is None:
        return [c.sha256, c.size]
    return [c.sha256, c.size, index.setdefault(c.pack, len(index)), c.offset]


__all__ = ["FORMAT", "PAGED_ABOVE", "decode", "encode", "is_paged", "page_refs", "read_pages"]
