"""Formats 1 to 3, and 5 whole: a manifest stored as one JSON object.

Format 3 is what sync writes for a manifest of at most
:data:`checkpoint.engine.format.paged.PAGED_ABOVE` entries (one request to commit or to
load), format 5 when a chunk or a pack is named by BLAKE3 (:mod:`.hashes`: the same object,
a chunk's id under ``"digest"``); formats 1 and 2 (written by older agents) still load.
:func:`head` and :func:`assemble` are the facts every stored manifest begins with, written
and read once for both the whole and the paged (:mod:`.paged`) formats.

The bytes are bounded both ways: :func:`encode` refuses what :func:`decode` would refuse,
and :func:`decode` counts the entries before it parses, so a hostile object is refused
before it is built in memory.
"""

from __future__ import annotations

import json
from typing import Any

from checkpoint.errors import ManifestError

from . import hashes
from .manifest import (
    MAX_ITEMS,
    MAX_MANIFEST_BYTES,
    Chunk,
    DirEntry,
    FileEntry,
    HardLinkEntry,
    LinkEntry,
    Manifest,
    check_int,
    chunk_key,
    parse_dir,
    parse_file,
    parse_hardlink,
    parse_link,
    parse_packs,
    stored_mode,
    too_many,
)
from .tree import check_tree_streaming

FORMAT = 3
#: format 4 is a paged root (:mod:`.paged`); 5 is either shape
READABLE_FORMATS = (1, 2, 3, hashes.FORMAT)


def head(manifest: Manifest, fmt: int) -> dict[str, Any]:
    """The facts a stored manifest begins with, in the order every format writes them;
    the entries (or the pages that hold them) follow."""
    return {
        "format": fmt,
        "job_id": manifest.job_id,
        "sequence": manifest.sequence,
        "attempt": manifest.attempt,
        "created": manifest.created,
        "reason": manifest.reason,
        "agent_version": manifest.agent_version,
        "progress": manifest.progress,
    }


def assemble(
    doc: dict[str, Any],
    files: tuple[FileEntry, ...],
    dirs: tuple[DirEntry, ...],
    links: tuple[LinkEntry, ...],
    hardlinks: tuple[HardLinkEntry, ...],
    packs: dict[str, int],
) -> Manifest:
    """The last step of loading any format: the entries checked as one tree, and the
    manifest built with the facts of ``doc`` (see :func:`head`)."""
    check_tree_streaming(files, dirs, links, hardlinks)
    progress = doc.get("progress") or {}
    if not isinstance(progress, dict):
        raise ManifestError("progress must be an object")
    return Manifest(
        job_id=str(doc["job_id"]),
        sequence=check_int(doc["sequence"], "sequence", 1),
        attempt=check_int(doc["attempt"], "attempt"),
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


def encode(manifest: Manifest) -> bytes:
    """The manifest's bytes; raises :class:`ManifestError` above the bounds restore keeps."""
    m = manifest
    items = len(m.files) + len(m.dirs) + len(m.links) + len(m.hardlinks)
    items += sum(len(f.chunks) for f in m.files)
    if items > MAX_ITEMS:
        raise ManifestError(too_many(items))
    fmt = written_format(m, FORMAT)
    key = chunk_key(fmt)
    doc = {
        **head(m, fmt),
        "dirs": [{"path": d.path, "mode": stored_mode(d)} for d in m.dirs],
        "links": [{"path": lk.path, "target": lk.target} for lk in m.links],
        "hardlinks": [{"path": h.path, "target": h.target} for h in m.hardlinks],
        "files": [
            {
                "path": f.path,
                "size": f.size,
                "mode": f.mode,
                "mtime_ns": f.mtime_ns,
                "chunks": [_chunk_json(c, key) for c in f.chunks],
            }
            for f in m.files
        ],
        "packs": m.packs,
    }
    # ensure_ascii keeps non-UTF-8 file names (surrogate escapes) representable.
    data = json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(_too_big(len(data)))
    return data


def decode(data: bytes, *, where: str = "manifest") -> Manifest:
    """The manifest these bytes hold (format 1, 2 or 3), checked; ``where`` names them in
    the one line of a :class:`ManifestError`."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: {_too_big(len(data))}")
    # Counted before parsing, so that a hostile manifest is refused before it is built
    # in memory (a marker inside a JSON string has its quotes escaped: never counted).
    estimate = sum(data.count(marker) for marker in _ITEM_MARKERS)
    if estimate > MAX_ITEMS:
        raise ManifestError(f"{where}: {too_many(estimate)}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ManifestError(f"{where}: nested too deeply to be a manifest") from None
    try:
        return _parse(doc)
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None


def written_format(manifest: Manifest, fmt: int) -> int:
    """``fmt`` (3 whole, 4 paged), or 5 when a chunk or a pack is named by BLAKE3: an
    agent that reads 1 to 4 then refuses it loudly ("unsupported format 5")."""
    ids = (c.digest for c in manifest.chunks())
    return hashes.FORMAT if hashes.any_blake3(manifest.packs) or hashes.any_blake3(ids) else fmt


def _chunk_json(c: Chunk, key: str) -> dict[str, Any]:
    if c.is_hole:
        return {"hole": c.size}
    if c.pack is None:
        return {key: c.digest, "size": c.size}
    return {key: c.digest, "size": c.size, "pack": c.pack, "offset": c.offset}


# '["': a format-1 chunk
_ITEM_MARKERS = (b'"path":', b'"sha256":', b'"digest":', b'"hole":', b'["')


def _too_big(n: int) -> str:
    return f"manifest of {n} bytes is over the {MAX_MANIFEST_BYTES} bytes a checkpoint may have"


def _parse(doc: Any) -> Manifest:
    if not isinstance(doc, dict):
        raise ManifestError("not a JSON object")
    fmt = doc.get("format")
    if fmt not in READABLE_FORMATS:
        raise ManifestError(f"unsupported format {fmt!r} (this agent reads 1 to {hashes.FORMAT})")
    lists = [doc["files"], doc.get("dirs", []), doc.get("links", []), doc.get("hardlinks", [])]
    if not all(isinstance(x, list) for x in lists):
        raise ManifestError("files, dirs, links and hardlinks must be lists")
    items = sum(len(x) for x in lists)
    if items > MAX_ITEMS:
        raise ManifestError(too_many(items))
    packs = parse_packs(doc.get("packs", {}), fmt) if fmt >= 3 else {}
    files = tuple(parse_file(raw, fmt, packs) for raw in doc["files"])
    items += sum(len(f.chunks) for f in files)
    if items > MAX_ITEMS:
        raise ManifestError(too_many(items))
    dirs = tuple(parse_dir(d, fmt) for d in doc.get("dirs", ()))
    links = tuple(parse_link(lk["path"], lk["target"]) for lk in doc.get("links", ()))
    hardlinks = tuple(parse_hardlink(h["path"], h["target"]) for h in doc.get("hardlinks", ()))
    return assemble(doc, files, dirs, links, hardlinks, packs)
