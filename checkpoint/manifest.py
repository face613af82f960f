"""The manifest: what one committed checkpoint contains. Pure data, no I/O.

A manifest lists every file of the checkpoint dir with its size, mode, mtime and the
content-addressed chunks that hold its bytes (sha256 of each chunk; a file is split into
fixed-size chunks so a file that grew or changed in places re-sends only those chunks).
Writing the manifest is the commit; everything it names was uploaded before it.

Paths are relative, '/'-separated and are validated on load so that nothing read from a
store can name a place outside the checkpoint dir (guarantee 5): no absolute paths, no
'..', no empty or '.' components, no NUL; symlink targets are relative and never climb.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ManifestError

FORMAT = 1
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
#: The agent's own files inside a checkpoint dir; never synced, never restored over.
RESERVED_DIR = ".spot-agent"
#: Suffix of the checkpoint API's temporary files: a file being written is not synced.
TEMP_SUFFIX = ".spot-tmp"


@dataclass(frozen=True)
class Chunk:
    sha256: str
    size: int


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mode: int
    mtime_ns: int
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class LinkEntry:
    path: str
    target: str


@dataclass(frozen=True)
class Manifest:
    job_id: str
    sequence: int
    attempt: int
    created: str  # ISO 8601, UTC
    reason: str  # "periodic", "requested", "exit", "interruption", ...
    files: tuple[FileEntry, ...]
    dirs: tuple[str, ...] = ()
    links: tuple[LinkEntry, ...] = ()
    progress: dict[str, Any] = field(default_factory=dict)
    agent_version: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def chunks(self) -> Iterator[Chunk]:
        for f in self.files:
            yield from f.chunks

    def blob_hashes(self) -> set[str]:
        return {c.sha256 for c in self.chunks()}

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "job_id": self.job_id,
            "sequence": self.sequence,
            "attempt": self.attempt,
            "created": self.created,
            "reason": self.reason,
            "agent_version": self.agent_version,
            "progress": self.progress,
            "dirs": list(self.dirs),
            "links": [{"path": lk.path, "target": lk.target} for lk in self.links],
            "files": [
                {
                    "path": f.path,
                    "size": f.size,
                    "mode": f.mode,
                    "mtime_ns": f.mtime_ns,
                    "chunks": [[c.sha256, c.size] for c in f.chunks],
                }
                for f in self.files
            ],
        }
        # ensure_ascii keeps non-UTF-8 file names (surrogate escapes) representable.
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes, *, where: str = "manifest") -> Manifest:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc})") from None
        try:
            return _parse(doc)
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where}: malformed ({type(exc).__name__}: {exc})") from None


def _int(value: Any, name: str, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise ManifestError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _parse(doc: Any) -> Manifest:
    if not isinstance(doc, dict):
        raise ManifestError("not a JSON object")
    if doc.get("format") != FORMAT:
        raise ManifestError(f"unsupported format {doc.get('format')!r} (this agent reads {FORMAT})")
    files = []
    for raw in doc["files"]:
        path = check_relpath(raw["path"])
        chunks = []
        for digest, size in raw["chunks"]:
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise ManifestError(f"{path}: bad chunk hash {digest!r}")
            chunks.append(Chunk(digest, _int(size, f"{path}: chunk size")))
        size = _int(raw["size"], f"{path}: size")
        if sum(c.size for c in chunks) != size:
            raise ManifestError(f"{path}: chunk sizes do not add up to the file size {size}")
        mode = _int(raw["mode"], f"{path}: mode") & 0o777
        files.append(
            FileEntry(path, size, mode, _int(raw["mtime_ns"], f"{path}: mtime"), tuple(chunks))
        )
    dirs = tuple(check_relpath(d) for d in doc.get("dirs", ()))
    links = tuple(
        LinkEntry(check_relpath(lk["path"]), check_link_target(lk["target"]))
        for lk in doc.get("links", ())
    )
    _check_unique([f.path for f in files] + list(dirs) + [lk.path for lk in links])
    _check_no_path_through_link([f.path for f in files] + list(dirs), {lk.path for lk in links})
    progress = doc.get("progress") or {}
    if not isinstance(progress, dict):
        raise ManifestError("progress must be an object")
    return Manifest(
        job_id=str(doc["job_id"]),
        sequence=_int(doc["sequence"], "sequence", 1),
        attempt=_int(doc["attempt"], "attempt"),
        created=str(doc["created"]),
        reason=str(doc.get("reason", "")),
        files=tuple(files),
        dirs=dirs,
        links=links,
        progress=progress,
        agent_version=str(doc.get("agent_version", "")),
    )


def _check_unique(paths: Iterable[str]) -> None:
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            raise ManifestError(f"path {p!r} appears twice")
        seen.add(p)


def _check_no_path_through_link(paths: Iterable[str], links: set[str]) -> None:
    # A scan never descends into a symlink, so a path below a link can only be forged.
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise ManifestError(f"path {p!r} lies below the symlink {'/'.join(parts[:i])!r}")


def check_relpath(path: Any) -> str:
    """Return ``path`` if it is a safe relative path inside the checkpoint dir, else raise."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"path must be a non-empty string, got {path!r}")
    if "\x00" in path or "\\" in path:
        raise ManifestError(f"path {path!r} contains NUL or a backslash")
    if path.startswith("/"):
        raise ManifestError(f"path {path!r} is absolute")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"path {path!r} has an empty, '.' or '..' component")
    if parts[0] == RESERVED_DIR:
        raise ManifestError(f"path {path!r} is inside the agent's reserved {RESERVED_DIR}/")
    return path


def check_link_target(target: Any) -> str:
    """A symlink target may only point down from the link's own directory."""
    if not isinstance(target, str) or not target:
        raise ManifestError(f"link target must be a non-empty string, got {target!r}")
    if target.startswith("/") or "\x00" in target:
        raise ManifestError(f"link target {target!r} is absolute")
    if any(p == ".." for p in target.split("/")):
        raise ManifestError(f"link target {target!r} climbs out with '..'")
    return target
