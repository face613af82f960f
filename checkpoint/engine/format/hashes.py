"""Content hashes: which algorithm names new data, how an id says its algorithm, and how
bytes are checked against an id.

New chunks and packs are named by BLAKE3 (256 bits). What older checkpoints stored keeps
its sha256 name, so one manifest (format 5) may mix both, and each id says which it is,
in the OCI digest notation (``algorithm:hex``) where it is not sha256::

    <64 hex>          sha256: formats 1 to 4, and their chunks carried into format 5
    blake3:<64 hex>   BLAKE3: format 5 only

Why BLAKE3, and why the dependency (the ``blake3`` wheel, Rust, no build step): every byte
a sync reads is hashed once, and every byte a restore writes is checked once. Measured
under load on a shared 2-core machine (``python -m bench.hashspeed``): sha256 (hashlib,
OpenSSL) about 1,000 to 1,800 MiB per CPU-second, BLAKE3 on one thread about 3,900 to
7,000: a quarter of the CPU for the same bytes. A 2 GiB restore from a local SeaweedFS,
the same code checking with each: 2.67 user CPU-s and 9.9 s with sha256, 1.72 and 7.4 s
with BLAKE3 (medians of 3, interleaved; ``s5cmd cp``: 4.1 s). Both let go of the GIL while
they hash, so the threads of a restore hash side by side.

- **Objects.** A BLAKE3 id's blob or pack is named ``blake3-<hex>`` (``:`` is among the
  characters S3 asks keys to avoid), fanned out under ``<hex[:2]>/`` as a sha256 one is:
  the two algorithms never share a key (:func:`object_name`, :func:`id_of_name`).
- **Pages keep sha256.** A page whose chunks are all sha256 is byte for byte the page
  format 4 wrote, so the first format-5 commit after an upgrade reuses every unchanged
  page (a commit still writes O(changed) bytes of manifest); a page is a few hundred KiB,
  read once per load, so its hash is a small share of a load's CPU.
- **Uploads.** A BLAKE3 object goes up with a CRC-32 (``zlib``, about as fast as BLAKE3)
  for S3 to check, as there is no ``ChecksumBLAKE3``; a sha256 one with its own digest
  (:mod:`checkpoint.engine.store.s3.writes`). Restore checks BLAKE3 itself, as always.
- **Dedup across the change.** Unchanged files keep their sha256 chunks (their stat says
  so). A file read again whose last chunks were sha256 ones (the final sync reads what the
  job had open for writing; a full re-read) is checked against them first
  (:func:`carrying`): bytes that did not change keep their sha256 id and are not uploaded
  again; what changed is new data, named by BLAKE3. A file is hashed by BLAKE3 alone once
  none of its chunks has a sha256 id; until then each read of it pays a sha256 of every
  chunk, and a BLAKE3 of the chunks that changed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Protocol

import blake3

from checkpoint.errors import ManifestError

#: the manifest format that may name data by BLAKE3 (formats 1 to 4 name it by sha256)
FORMAT = 5
BLAKE3_TAG = "blake3:"
_NAME_TAG = "blake3-"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
#: the compact form of an id (:func:`packed`): a BLAKE3 id's 32 bytes follow this byte
_BLAKE3_BYTE = b"\x03"

#: an id for these bytes
Identify = Callable[[bytes], str]


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


def new_id(data: bytes) -> str:
    """The id new data is stored under: its BLAKE3."""
    return BLAKE3_TAG + blake3.blake3(data).hexdigest()


def sha256_id(data: bytes) -> str:
    """The id an agent of formats 1 to 4 gave these bytes (and every page's name)."""
    return hashlib.sha256(data).hexdigest()


def is_blake3(digest: str) -> bool:
    return digest.startswith(BLAKE3_TAG)


def identify_like(digests: Iterable[str]) -> Identify:
    """How to name bytes again as ``digests`` named them (the first one that is not a
    hole's): a pack rewritten keeps the ids its chunks had."""
    for d in digests:
        if d:
            return new_id if is_blake3(d) else sha256_id
    return new_id


def carrying(previous: Iterable[str]) -> Identify:
    """How to name the chunks of a file read again whose chunks were ``previous``: bytes
    that hash to one of its sha256 ids keep that id (stored already: not uploaded again);
    other bytes are new data, named by BLAKE3. Without a sha256 id among ``previous``,
    BLAKE3 alone: each byte is hashed once."""
    old = frozenset(d for d in previous if d and not is_blake3(d))
    if not old:
        return new_id

    def identify(data: bytes) -> str:
        digest = sha256_id(data)
        return digest if digest in old else new_id(data)

    return identify


def matches(digest: str, data: bytes | memoryview) -> bool:
    """Do ``data`` hash to ``digest``, in the algorithm the id names?"""
    if is_blake3(digest):
        return blake3.blake3(data).hexdigest() == digest[len(BLAKE3_TAG) :]
    return hashlib.sha256(data).hexdigest() == digest


class Verifier:
    """Checks bytes that arrive in pieces against one id, in its algorithm."""

    __slots__ = ("_blake3", "_expected", "_hash")

    def __init__(self, digest: str) -> None:
        self._blake3 = is_blake3(digest)
        self._expected = bytes.fromhex(digest[len(BLAKE3_TAG) :] if self._blake3 else digest)
        self._hash = self._new()

    def _new(self) -> _Hash:
        return blake3.blake3() if self._blake3 else hashlib.sha256()

    def restart(self) -> None:
        """Forget the bytes so far (the store reads the object again from its start)."""
        self._hash = self._new()

    def update(self, piece: bytes | memoryview) -> None:
        self._hash.update(piece)

    def matches(self) -> bool:
        return self._hash.digest() == self._expected


def check(value: object, fmt: int, what: str, where: str = "") -> str:
    """``value`` if it is an id that format ``fmt`` may hold, else one line saying why not
    (:class:`ManifestError`, ``where`` first): an unknown algorithm, a bad length, BLAKE3
    before format 5."""
    if isinstance(value, str):
        blake = value.startswith(BLAKE3_TAG)
        if _HEX64.match(value, len(BLAKE3_TAG) if blake else 0):  # one regex per id
            if not blake or fmt >= FORMAT:
                return value
            why = f"BLAKE3 in a format-{fmt} manifest"
        elif ":" in value and not blake:
            why = f"unknown hash algorithm {value.partition(':')[0][:20]!r}"
        else:
            why = "not 64 lowercase hex digits, bare or after blake3:"
    else:
        why = "not a string"
    raise ManifestError(f"{where}bad {what} {str(value)[:80]!r}: {why}")


def object_name(digest: str) -> str:
    """The last part of the key of the blob or pack ``digest`` names."""
    return _NAME_TAG + digest[len(BLAKE3_TAG) :] if is_blake3(digest) else digest


def id_of_name(name: str) -> str:
    """The id whose object is named ``name`` (:func:`object_name` undone)."""
    return BLAKE3_TAG + name[len(_NAME_TAG) :] if name.startswith(_NAME_TAG) else name


def fan_out(digest: str) -> str:
    """The folder a blob or pack is put in: the first two hex digits of its hash."""
    return digest[len(BLAKE3_TAG) : len(BLAKE3_TAG) + 2] if is_blake3(digest) else digest[:2]


def packed(digest: str) -> bytes:
    """The id in a few bytes, one to one: sha256's 32, BLAKE3's 32 after a tag byte."""
    if is_blake3(digest):
        return _BLAKE3_BYTE + bytes.fromhex(digest[len(BLAKE3_TAG) :])
    return bytes.fromhex(digest)


def sha256_hex(digest: str) -> str | None:
    """The sha256 an S3 PUT can carry as ``ChecksumSHA256`` for this object; None for a
    BLAKE3 one (the store then sends a CRC-32)."""
    return None if is_blake3(digest) else digest


def any_blake3(ids: Iterable[str]) -> bool:
    """Do these ids (chunks', packs') need :data:`FORMAT`? Stops at the first BLAKE3 one."""
    return any(is_blake3(d) for d in ids)
