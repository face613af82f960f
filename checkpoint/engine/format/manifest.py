"""The manifest: what one committed checkpoint contains, and what each entry may be.
Pure data, no I/O.

A manifest lists every file of the checkpoint dir with its size, mode, mtime and the
content-addressed chunks that hold its bytes; writing it is the commit. How it is stored
is the business of :mod:`.whole` (formats 1 to 3, one object) and :mod:`.paged` (format 4,
a root and pages); both load through the functions here, so every format is checked alike.

**One validation for sync and restore** (guarantee 7): :func:`check_relpath`,
:func:`check_mtime` and :func:`check_link_target` are what sync's scan applies to every
entry it records (an entry they refuse is left out loudly, the rest commits) and what
loading applies to every entry read (:func:`parse_file`, :func:`parse_dir`,
:func:`parse_link`, :func:`parse_hardlink`), before :func:`assemble` checks the whole tree.
A name may hold any byte but '/' and NUL (non-UTF-8 bytes travel as surrogate escapes);
mtimes may be before 1970. Nothing read from a store can name a place outside the
checkpoint dir (guarantee 5): no absolute paths, no '..', no entry below a file or a
symlink; symlink targets never climb.

A chunk is its own blob, bytes ``[offset, offset+size)`` of a pack, or a hole (zeros stored
nowhere). The ``packs`` table gives the size of every pack the manifest references: sync
needs it to tell a pack that is mostly unreferenced (and repack its live files). The bounds
below are described in docs/checkpoint-format.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from checkpoint.errors import ManifestError
from checkpoint.protocol import RESERVED_DIR

from . import hashes

#: Bounds on what one manifest may hold, so that loading one fits a documented memory
#: bound (docs/checkpoint-format.md: about 1 GiB peak at the limits) whatever the store
#: returns. Sync refuses to commit more, so it never writes what restore would refuse.
MAX_MANIFEST_BYTES = 64 << 20
MAX_ITEMS = 1_000_000  # entries (files, dirs, links) plus chunks
MAX_CHUNK_SIZE = 64 << 20
MAX_FILE_SIZE = 1 << 44  # 16 TiB: ext4's largest file
#: A pack's size (sync writes ~16 MiB); restore reads packs by ranges, never whole.
MAX_PACK_SIZE = 1 << 30
#: A relative path longer than this is left out by sync: the checkpoint dir's own path
#: must still fit with it under PATH_MAX (4096) wherever it is restored.
MAX_PATH_BYTES = 3072
_INT64 = 1 << 63
MODE_BITS = 0o777  # setuid, setgid and sticky bits are not kept
HOLE = ""  # the digest of a hole chunk: zeros, no blob


def chunk_key(fmt: int) -> str:
    """The key of a chunk's id in format ``fmt``'s JSON: it named the algorithm up to 4."""
    return "digest" if fmt >= hashes.FORMAT else "sha256"


@dataclass(frozen=True, slots=True)
class Chunk:
    #: the id of its bytes (:mod:`.hashes`: sha256 hex, or ``blake3:`` hex); HOLE for a
    #: run of zeros that is stored nowhere
    digest: str
    size: int
    pack: str | None = None  # the pack holding the bytes at ``offset``; None: its own blob
    offset: int = 0

    @property
    def is_hole(self) -> bool:
        return self.digest == HOLE


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    mode: int
    mtime_ns: int
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class LinkEntry:
    path: str
    target: str


@dataclass(frozen=True, slots=True)
class HardLinkEntry:
    path: str
    target: str  # the path of a file entry of the same manifest


@dataclass(frozen=True, slots=True)
class DirEntry:
    path: str
    mode: int | None = None  # None: not recorded (format 1); restore leaves the mode alone


@dataclass(frozen=True)
class Manifest:
    job_id: str
    sequence: int
    attempt: int
    created: str  # ISO 8601, UTC
    reason: str  # "periodic", "requested", "exit", "interruption", ...
    files: tuple[FileEntry, ...]
    dirs: tuple[DirEntry, ...] = ()
    links: tuple[LinkEntry, ...] = ()
    progress: dict[str, Any] = field(default_factory=dict)
    agent_version: str = ""
    hardlinks: tuple[HardLinkEntry, ...] = ()
    #: pack id -> its size in bytes, for every pack a chunk references (format 3)
    packs: dict[str, int] = field(default_factory=dict)
    #: the pages it is stored in (format 4, :mod:`.paged`), in order; () for
    #: a manifest stored as one object or not stored yet
    pages: tuple[str, ...] = ()
    #: how many entries each of ``pages`` holds, as the root lists them; not content
    page_entries: tuple[int, ...] = field(default=(), compare=False)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def chunks(self) -> Iterator[Chunk]:
        for f in self.files:
            yield from f.chunks

    def blob_hashes(self) -> set[str]:
        """Every distinct content hash, wherever its bytes live (blob or pack)."""
        return {c.digest for c in self.chunks() if not c.is_hole}

    def stored_blobs(self) -> set[str]:
        """The blobs (``blobs/`` objects) the manifest references: chunks not in a pack."""
        return {c.digest for c in self.chunks() if not c.is_hole and c.pack is None}

    def pack_ids(self) -> set[str]:
        return {c.pack for c in self.chunks() if c.pack is not None}


def too_many(n: int) -> str:
    return f"{n} entries and chunks are over the {MAX_ITEMS} a checkpoint may hold"


def check_int(value: Any, name: str, minimum: int = 0, maximum: int = _INT64 - 1) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise ManifestError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def check_mtime(mtime_ns: Any, where: str) -> int:
    """Any time a filesystem stores (an int64 of nanoseconds, before 1970 too)."""
    return check_int(mtime_ns, f"{where}: mtime", -_INT64)


def _chunk(raw: Any, fmt: int, path: str, packs: dict[str, int]) -> Chunk:
    if fmt == 1:
        digest, size = raw
    elif "hole" in raw:
        return Chunk(HOLE, check_int(raw["hole"], f"{path}: hole size", 1, MAX_FILE_SIZE))
    else:
        digest, size = raw[chunk_key(fmt)], raw["size"]
    digest = hashes.check(digest, fmt, "chunk hash", f"{path}: ")
    size = check_int(size, f"{path}: chunk size", 0, MAX_CHUNK_SIZE)
    if fmt < 3 or raw.get("pack") is None:
        return Chunk(digest, size)
    pack, offset = raw["pack"], check_int(raw["offset"], f"{path}: chunk offset")
    pack = hashes.check(pack, fmt, "pack id", f"{path}: ")
    if pack not in packs:
        raise ManifestError(f"{path}: pack {pack} is not in the manifest's packs table")
    if offset + size > packs[pack]:
        raise ManifestError(
            f"{path}: chunk at {offset}+{size} lies beyond the end of pack {pack} "
            f"({packs[pack]} bytes)"
        )
    return Chunk(digest, size, pack, offset)


def parse_packs(raw: Any, fmt: int) -> dict[str, int]:
    """The ``packs`` table of format ``fmt``: pack id -> its size."""
    if not isinstance(raw, dict):
        raise ManifestError("packs must be an object")
    if len(raw) > MAX_ITEMS:
        raise ManifestError(too_many(len(raw)))
    for pack, size in raw.items():
        hashes.check(pack, fmt, "pack id")
        check_int(size, f"pack {pack}: size", 0, MAX_PACK_SIZE)
    return dict(raw)


def parse_file(raw: Any, fmt: int, packs: dict[str, int]) -> FileEntry:
    """A file entry as format ``fmt`` stores it (a page's rows are read as format 3's)."""
    path = check_relpath(raw["path"])
    chunks = tuple(_chunk(c, fmt, path, packs) for c in raw["chunks"])
    size = check_int(raw["size"], f"{path}: size", 0, MAX_FILE_SIZE)
    if sum(c.size for c in chunks) != size:
        raise ManifestError(f"{path}: chunk sizes do not add up to the file size {size}")
    if len(chunks) == 1:  # most files: one int object for the file's and its chunk's size
        size = chunks[0].size
    mode = shared_mode(check_int(raw["mode"], f"{path}: mode") & MODE_BITS)
    return FileEntry(path, size, mode, check_mtime(raw["mtime_ns"], path), chunks)


_MODES: dict[int, int] = {}


def shared_mode(mode: int) -> int:
    """``mode``, as one int object per distinct mode (0o644 is not a cached small int: a
    manifest of a million files would hold a million of them)."""
    return _MODES.setdefault(mode, mode)


def parse_dir(raw: Any, fmt: int) -> DirEntry:
    if fmt == 1:
        return DirEntry(check_relpath(raw))
    path = check_relpath(raw["path"])
    return DirEntry(path, shared_mode(check_int(raw["mode"], f"{path}: mode") & MODE_BITS))


def parse_link(path: Any, target: Any) -> LinkEntry:
    return LinkEntry(check_relpath(path), check_link_target(target))


def parse_hardlink(path: Any, target: Any) -> HardLinkEntry:
    return HardLinkEntry(check_relpath(path), check_relpath(target))


def stored_mode(d: DirEntry) -> int:
    """A directory whose mode was not recorded (format 1) is stored as 0o700."""
    return 0o700 if d.mode is None else d.mode


def check_tree(
    files: Iterable[FileEntry],
    dirs: Iterable[DirEntry],
    links: Iterable[LinkEntry],
    hardlinks: Iterable[HardLinkEntry],
) -> None:
    """Every path once; nothing below a file or a link; hard links point at files."""
    file_paths = {f.path for f in files}
    dir_paths = {d.path for d in dirs}
    everything = [f.path for f in files] + [d.path for d in dirs]
    everything += [x.path for x in links] + [h.path for h in hardlinks]
    seen: set[str] = set()
    for p in everything:
        if p in seen:
            raise ManifestError(f"path {p!r} appears twice")
        seen.add(p)
    leaves = set(everything) - dir_paths
    for p in everything:
        parts = p.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in leaves:
                raise ManifestError(f"path {p!r} lies below the file or symlink {parent!r}")
    for h in hardlinks:
        if h.target not in file_paths:
            raise ManifestError(f"hard link {h.path!r} points at {h.target!r}, not a file")


def check_relpath(path: Any) -> str:
    """Return ``path`` if it is a safe relative path inside the checkpoint dir, else raise."""
    if not isinstance(path, str) or not path:
        raise ManifestError(f"path must be a non-empty string, got {path!r}")
    if "\x00" in path:
        raise ManifestError(f"path {path!r} contains NUL")
    if path.startswith("/"):
        raise ManifestError(f"path {path!r} is absolute")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"path {path!r} has an empty, '.' or '..' component")
    if parts[0] == RESERVED_DIR:
        raise ManifestError(f"path {path!r} is inside the agent's reserved {RESERVED_DIR}/")
    if len(_fs_bytes(path)) > MAX_PATH_BYTES:
        raise ManifestError(f"path {path[:60]!r}... is longer than {MAX_PATH_BYTES} bytes")
    return path


def check_link_target(target: Any) -> str:
    """A symlink target may only point down from the link's own directory."""
    if not isinstance(target, str) or not target:
        raise ManifestError(f"link target must be a non-empty string, got {target!r}")
    if target.startswith("/") or "\x00" in target:
        raise ManifestError(f"link target {target!r} is absolute")
    if any(p == ".." for p in target.split("/")):
        raise ManifestError(f"link target {target!r} climbs out with '..'")
    if len(_fs_bytes(target)) > MAX_PATH_BYTES:
        raise ManifestError(f"link target {target[:60]!r}... is longer than {MAX_PATH_BYTES} bytes")
    return target


def _fs_bytes(name: str) -> bytes:
    """The bytes the filesystem sees (os.fsencode on Linux); refuses what has none."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ManifestError(f"name {name!r} is not valid UTF-8 nor escaped bytes") from None
