"""Format 4: a manifest stored as a small root and content-addressed pages, so that a
commit where k files changed writes O(k) manifest bytes, not O(N), and no checkpoint meets
a size cap.

The entries are cut into pages (:mod:`.page`: the cuts depend on the paths alone, so a
changed file changes the page that holds it and no other). The root lists the pages in
order (id, kind, number of entries) with the job's facts and the ``packs`` table
(:func:`encode`). Loading a root (:func:`decode`) checks the whole listing first, then
each page against its hash (a damaged page makes the checkpoint damaged: restore passes
over it, loudly) and every entry through the validation of formats 1 to 3, then the
whole-tree checks. A commit reads its own pages back the same way, except those an earlier
commit wrote and checked (``checked``). Where the pages live and how they are written is
:mod:`.jobstore`'s business. A manifest of at most :data:`PAGED_ABOVE` entries is still
written whole (format 3, :mod:`.whole`): one request to commit or load, and nothing to
page. An agent that reads only formats 1 to 3 refuses a format-4 root ("unsupported format
4") and falls back to an older checkpoint.

Root layout::

    {"format": 4, "job_id", "sequence", "attempt", "created", "reason", "agent_version",
     "progress", "packs": {p: size}, "pages": [{"id": h, "kind": "files", "entries": n}]}

Format 5 is the same root, ``{"format": 5, "paged": true, ...}``, written when a chunk or a
pack is named by BLAKE3 (:mod:`.hashes`); its pages may hold such ids, a format-4 root's
may not. ``"paged"`` follows ``"format"`` so that a look at the head tells the root from a
whole format-5 manifest (:func:`is_paged`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from checkpoint.errors import ManifestError

from . import hashes
from .manifest import FileEntry, Manifest, parse_packs
from .page import (
    ENTRY_KINDS,
    PAGE_BITS,
    Page,
    as_stored,
    cut,
    kinds,
    load_page,
    page_bytes,
    page_id,
)
from .whole import assemble, head, written_format

FORMAT = 4
#: manifests of more entries than this are paged (format 4); smaller ones stay format 3
PAGED_ABOVE = 1 << PAGE_BITS
#: the most bytes a root may have (it lists the pages and the packs)
MAX_ROOT_BYTES = 64 << 20
#: entries plus chunks of one paged checkpoint (1,000,000 files of up to 3 chunks each)
MAX_ITEMS = 4_000_000
_PAGE_ID = re.compile(r"[0-9a-f]{64}\Z")
_ROOT_HEAD = re.compile(rb'\s*\{\s*"format"\s*:\s*(?:4\s*[,}]|5\s*,\s*"paged"\s*:\s*true\s*[,}])')

#: the bytes of the pages with these ids, in this order
PageReader = Callable[[list[str]], Iterable[bytes]]


def pages_of(
    manifest: Manifest, known: Callable[[str, list[Any]], str | None] | None = None
) -> Iterator[tuple[dict[str, Any], list[Any], bytes]]:
    """Each page of ``manifest`` as it is made: its line in the root's listing (id, kind,
    number of entries), the entries it was made from, and its bytes. One page at a time:
    a commit checks and stores each before the next is made. A page ``known`` gives the id
    of (:mod:`.pagememo`: one a committed manifest has) is not encoded: its bytes are b""."""
    for kind, entries in kinds(manifest):
        for batch in cut(entries):
            pid = known(kind, batch) if known is not None else None
            data = b"" if pid is not None else page_bytes(kind, batch)
            listing = {"id": pid or page_id(data), "kind": kind, "entries": len(batch)}
            yield listing, batch, data


def root_format(manifest: Manifest) -> int:
    """The format of ``manifest``'s root: 4, or 5 when it names any data by BLAKE3."""
    return written_format(manifest, FORMAT)


def root_bytes(manifest: Manifest, listed: list[dict[str, Any]], fmt: int) -> bytes:
    """The root (format ``fmt``, :func:`root_format`) of ``manifest`` whose pages are
    ``listed`` (as :func:`pages_of` lists them)."""
    facts = head(manifest, fmt)
    if fmt == hashes.FORMAT:  # "format" stays first (is_paged)
        facts = {"format": fmt, "paged": True, **facts}
    root = {**facts, "packs": manifest.packs, "pages": listed}
    data = json.dumps(root, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(data) > MAX_ROOT_BYTES:
        raise ManifestError(f"manifest root of {len(data)} bytes is over {MAX_ROOT_BYTES}")
    return data


def encode(manifest: Manifest) -> tuple[bytes, list[Page]]:
    """The root's bytes and the pages (id, bytes) of a format-4 manifest, all at once."""
    listed: list[dict[str, Any]] = []
    pages: list[Page] = []
    for page, _, data in pages_of(manifest):
        listed.append(page)
        pages.append((page["id"], data))
    return root_bytes(manifest, listed, root_format(manifest)), pages


def check_page(
    page: dict[str, Any], data: bytes, made_from: list[Any], packs: dict[str, int], fmt: int
) -> None:
    """Does the page ``data`` (listed as ``page``, under a root of format ``fmt``) read
    back, as a restore reads it, as the entries it was made from? :class:`ManifestError`
    if not."""
    pid = page["id"]
    if load_page(pid, page["kind"], data, packs, fmt) != [as_stored(e) for e in made_from]:
        raise ManifestError(f"page {pid} does not read back as the entries it was made from")


def is_paged(data: bytes) -> bool:
    """Is this manifest object a root (format 4, or 5 with ``"paged": true``)? A look at
    its head: a whole manifest of 64 MiB is not parsed twice to find out."""
    return _ROOT_HEAD.match(data[:256]) is not None


def decode(
    root: bytes,
    fetch: PageReader | None,
    *,
    where: str = "manifest",
    expect: Manifest | None = None,
    checked: Collection[str] = (),
) -> tuple[Manifest, tuple[str, ...]]:
    """The manifest a format-4 root describes, its pages read with ``fetch`` (at most
    :data:`.page.MAX_PAGE_BYTES` each), and the ids of those pages.

    ``expect``: the manifest these bytes were encoded from (a commit's check that restore
    will read back what sync wrote). Each page is parsed and compared with the entries it
    was made from, then dropped: no second copy of a large manifest is built. Pages in
    ``checked`` (stored by an earlier commit, which checked them) are not parsed again.
    ``fetch`` None: every page is in ``checked`` (a commit that checked each page as it
    stored it, :func:`check_page`), and only the root is read.
    """
    try:
        doc = json.loads(root)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestError(f"{where}: not valid JSON ({type(exc).__name__})") from None
    with reading(where):
        decoded = _decode(doc, fetch, expect, checked if expect is not None else ())
    return decoded


def page_refs(
    root: bytes, fetch: Callable[[str], bytes], seen: set[str], *, where: str = "manifest"
) -> tuple[set[str], set[str]]:
    """The blobs and the packs that the pages of a format-4 root not in ``seen`` reference,
    each page read, checked and parsed on its own and its id added to ``seen``: what gc
    needs, without the whole manifest in memory and without reading a page twice."""
    blobs: set[str] = set()
    packs_used: set[str] = set()
    with reading(where):
        fmt, packs, listed = _listing(json.loads(root))
        for page in listed:
            pid = page["id"]
            if pid in seen:
                continue
            for e in load_page(pid, page["kind"], fetch(pid), packs, fmt):
                for c in e.chunks if isinstance(e, FileEntry) else ():
                    if c.pack is not None:
                        packs_used.add(c.pack)
                    elif not c.is_hole:
                        blobs.add(c.digest)
            seen.add(pid)
    return blobs, packs_used


@contextmanager
def reading(where: str) -> Iterator[None]:
    """Errors met reading the manifest ``where`` as one :class:`ManifestError` that names
    it: a malformed document (a key missing, a wrong type) is a damaged manifest."""
    try:
        yield
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        raise ManifestError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None


def load_root(root: bytes) -> tuple[dict[str, Any], int, dict[str, int], list[dict[str, Any]]]:
    """A root's document, format, packs table and listing of pages, the whole listing
    checked; no page is read (:func:`checked_page` reads one). Use within :func:`reading`."""
    doc = json.loads(root)
    fmt, packs, listed = _listing(doc)
    return doc, fmt, packs, listed


def checked_page(page: dict[str, Any], data: bytes, packs: dict[str, int], fmt: int) -> list[Any]:
    """The entries of ``page`` (a line of a root's listing) from its bytes: checked against
    its hash, each entry through the validation of every format, their number against the
    listing's."""
    pid, listed = page["id"], page["entries"]
    entries = load_page(pid, page["kind"], data, packs, fmt)
    if len(entries) != listed:
        raise ManifestError(f"page {pid} holds {len(entries)} entries, not {listed}")
    return entries


def _listing(doc: Any) -> tuple[int, dict[str, int], list[dict[str, Any]]]:
    """The format, the packs table and the pages of a root, the whole listing checked
    before any page is read."""
    if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, hashes.FORMAT):
        raise ManifestError("not a format-4 or 5 manifest root")
    fmt = doc["format"]
    if fmt == hashes.FORMAT and doc.get("paged") is not True:
        raise ManifestError('not a format-5 manifest root: no "paged": true')
    packs = parse_packs(doc.get("packs", {}), fmt)
    listed = doc["pages"]
    if not isinstance(listed, list):
        raise ManifestError("pages must be a list")
    items = 0
    for n, page in enumerate(listed):
        pid, kind, count = page["id"], page["kind"], page["entries"]
        if kind not in ENTRY_KINDS or not isinstance(pid, str) or not _PAGE_ID.match(pid):
            raise ManifestError(f"page {n} is listed as {page!r}")
        if type(count) is not int or count < 1:  # sync never writes an empty page
            raise ManifestError(f"page {n} is listed as {page!r}")
        items += count
    if items > MAX_ITEMS:
        raise ManifestError(f"{items} entries are over the {MAX_ITEMS} a checkpoint may hold")
    return fmt, packs, listed


def _decode(
    doc: Any, fetch: PageReader | None, expect: Manifest | None, checked: Collection[str]
) -> tuple[Manifest, tuple[str, ...]]:
    fmt, packs, listed = _listing(doc)
    found: dict[str, list[Any]] = {kind: [] for kind in ENTRY_KINDS}
    items = sum(page["entries"] for page in listed)
    ids = [page["id"] for page in listed]
    written = dict(kinds(expect)) if expect is not None else {}
    at = dict.fromkeys(ENTRY_KINDS, 0)
    pages = fetch(ids) if fetch is not None else (b"" for _ in ids)
    for page, data in zip(listed, pages, strict=True):
        pid, kind = page["id"], page["kind"]
        made_from = [
            as_stored(e) for e in written.get(kind, ())[at[kind] : at[kind] + page["entries"]]
        ]
        if pid in checked:  # these very bytes were read back when they were first written
            entries = made_from
        elif fetch is None:
            raise ManifestError(f"page {pid} was not checked when it was written")
        else:
            entries = checked_page(page, data, packs, fmt)
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
        if any(at[kind] != len(written[kind]) for kind in ENTRY_KINDS):
            raise ManifestError("the pages do not hold every entry")
        files, dirs, links, hardlinks = expect.files, expect.dirs, expect.links, expect.hardlinks
    else:
        files = tuple(found["files"])
        dirs = tuple(found["dirs"])
        links = tuple(found["links"])
        hardlinks = tuple(found["hardlinks"])
    decoded = assemble(doc, files, dirs, links, hardlinks, packs)
    counts = tuple(page["entries"] for page in listed)
    return replace(decoded, page_entries=counts), tuple(ids)


__all__ = [
    "FORMAT",
    "PAGED_ABOVE",
    "check_page",
    "checked_page",
    "decode",
    "encode",
    "is_paged",
    "load_root",
    "page_refs",
    "pages_of",
    "reading",
    "root_bytes",
    "root_format",
]
