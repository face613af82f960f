"""One job inside a store: its listings, its manifests loaded and committed, its attempts.

Its keys are named in :mod:`.layout` (:class:`JobStore` is a :class:`~.layout.Layout`
with a store).

The commit protocol (guarantees 1, 3, 4 and 6 of DESIGN.md):

1. every chunk the new manifest names is uploaded first, as a blob or inside a pack (only
   chunks the store does not have: the previous manifest's and this session's uploads
   are known); then, for a paged manifest, the pages the previous one did not have;
2. the manifest (or its root) is created with put-if-absent under the next sequence
   number; that single object creation is the commit. A crash before it leaves only
   unreferenced blobs, packs and pages, which ``gc`` collects later; it never changes
   what a restore sees.
3. before committing, an attempt checks that no newer attempt of the job has started; a
   stale attempt is told (:class:`Superseded`) and stops committing.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog

from checkpoint.errors import (
    CommitConflict,
    ConditionalWritesUnsupported,
    ManifestError,
    ObjectNotFound,
    Superseded,
)

from ..store.base import Store
from . import page, paged, whole
from .layout import ATTEMPTS, MANIFESTS, TIMELINE, Layout, number_of
from .manifest import Manifest
from .pagememo import shared_pages

log = structlog.get_logger("checkpoint")


def utc_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobStore(Layout):
    """One job inside a store (with ``rank``, that rank of a group job): its keys
    (:class:`~.layout.Layout`), listings, manifests and attempts, and the commit."""

    #: sequences pruning must keep whatever their age (a group's rank: parts records name)
    pinned: frozenset[int] = frozenset()

    @property
    def stores_manifests(self) -> bool:
        """Is checkpoint n the object at ``manifest_key(n)`` (:meth:`manifest_bytes`)? Not
        for the views of a group job, whose checkpoints are made of its ranks' parts."""
        return True

    def __init__(self, store: Store, job_id: str, rank: int | None = None) -> None:
        super().__init__(job_id, rank)
        self.store = store
        self._warned_unconditional = False
        self._warned_keys: set[str] = set()

    def recorded_attempts(self) -> list[int]:
        """Attempts that left a timeline record, oldest first."""
        return self._numbers(TIMELINE)

    def _numbers(self, folder: str) -> list[int]:
        found = []
        for obj in self.store.list_objects(self.folder(folder)):
            number = number_of(obj.key[len(self.folder(folder)) :])
            if number is not None:
                found.append(number)
            elif obj.key not in self._warned_keys:  # not ours: say so once, never crash
                self._warned_keys.add(obj.key)
                log.warning("store.key_ignored", key=obj.key, why="not a name the agent writes")
        return sorted(found)

    def sequences(self) -> list[int]:
        """Committed sequence numbers, oldest first."""
        return self._numbers(MANIFESTS)

    def manifest_bytes(self, sequence: int) -> bytes:
        """The stored manifest ``sequence`` as it is: of a paged one, the root."""
        return self.store.get_object(self.manifest_key(sequence), max_bytes=paged.MAX_ROOT_BYTES)

    def load_manifest(self, sequence: int) -> Manifest:
        """The checkpoint ``sequence``, whole: a paged one (format 4) with its pages read."""
        return self.decode_manifest(sequence, self.manifest_bytes(sequence))

    def decode_manifest(self, sequence: int, data: bytes) -> Manifest:
        """The stored manifest ``sequence`` from its bytes (:meth:`manifest_bytes`), whole."""
        key = self.manifest_key(sequence)
        if paged.is_paged(data):
            manifest, pages = paged.decode(data, self.page_reader(), where=key)
            manifest = replace(manifest, pages=pages)
        else:
            manifest = whole.decode(data, where=key)
        if manifest.sequence != sequence:
            raise ManifestError(f"{key}: says it is sequence {manifest.sequence}")
        return manifest

    def references(self, sequence: int, seen_pages: set[str]) -> tuple[set[str], set[str]]:
        """The blobs and packs checkpoint ``sequence`` references, for gc. Of a paged one,
        only the pages not in ``seen_pages`` are read (one at a time) and then added to it:
        pages shared by many checkpoints are read once."""
        key = self.manifest_key(sequence)
        data = self.manifest_bytes(sequence)
        if not paged.is_paged(data):
            manifest = whole.decode(data, where=key)
            return manifest.stored_blobs(), manifest.pack_ids()
        try:
            doc_sequence = json.loads(data).get("sequence")
        except (ValueError, AttributeError):
            raise ManifestError(f"{key}: not a manifest root") from None
        if doc_sequence != sequence:
            raise ManifestError(f"{key}: says it is sequence {doc_sequence!r}")
        return paged.page_refs(data, self.read_page, seen_pages, where=key)

    def attempts(self) -> list[int]:
        return self._numbers(ATTEMPTS)

    def claim_attempt(self, info: dict[str, Any]) -> int:
        """Register a new attempt; its number fences off every older attempt."""
        attempt = (self.attempts() or [0])[-1] + 1
        for _ in range(100):
            body = json.dumps({**info, "attempt": attempt, "started": utc_iso()}).encode()
            if self._create(self.attempt_key(attempt), body):
                return attempt
            attempt += 1
        raise CommitConflict(f"{self.folder(ATTEMPTS)}: could not claim an attempt number")

    def check_current(self, attempt: int) -> None:
        if attempt and self.store.exists(self.attempt_key(attempt + 1)):
            raise Superseded(attempt, max(self.attempts()))

    def commit(
        self,
        manifest: Manifest,
        *,
        last: Manifest | None = None,
        paged_above: int = paged.PAGED_ABOVE,
    ) -> Manifest | None:
        """Commit ``manifest`` under its sequence; None if that number is taken.

        More than ``paged_above`` entries: paged (format 4), the pages that ``last`` (a
        committed checkpoint whose pages are stored) does not have PUT first; the manifest
        returned knows its pages. A page made of the very entries of one of ``last``'s is
        that page, not made again (:mod:`.pagememo`). What is
        written is first read back with the code a restore uses (guarantee 7): a manifest a
        restore would refuse raises :class:`ManifestError`, and no manifest is written.
        A page is read back, then PUT, as it is made, one window of them at a time (never
        every page in memory at once); a refusal after some were PUT leaves them
        unreferenced, as a crash would, for ``gc``.
        """
        key = self.manifest_key(manifest.sequence)
        entries = len(manifest.files) + len(manifest.dirs) + len(manifest.links)
        if entries + len(manifest.hardlinks) <= paged_above:
            body = whole.encode(manifest)
            whole.decode(body, where="the new checkpoint")
            return manifest if self._create(key, body) else None
        have = frozenset(last.pages if last is not None else ())
        fmt = paged.root_format(manifest)
        listed = []
        window = max(1, self.store.concurrency)
        with ThreadPoolExecutor(window, thread_name_prefix="ckpt-pages") as pool:
            stored: deque[Future[None]] = deque()
            try:
                known = shared_pages(last) if last is not None else None
                for listing, made_from, data in paged.pages_of(manifest, known):
                    listed.append(listing)
                    pid = listing["id"]
                    if pid in have:  # every page ``known`` gives the id of
                        continue
                    try:
                        paged.check_page(listing, data, made_from, manifest.packs, fmt)
                    except ManifestError as exc:
                        raise ManifestError(f"the new checkpoint: {exc}") from None
                    # Content-addressed: a page PUT twice (a retried commit) is the same.
                    put = self.store.put_object
                    stored.append(pool.submit(put, self.page_key(pid), data, sha256=pid))
                    while len(stored) > 2 * window:
                        stored.popleft().result()
                while stored:
                    stored.popleft().result()
            finally:
                for pending in stored:
                    pending.cancel()
        body = paged.root_bytes(manifest, listed, fmt)
        ids = [page["id"] for page in listed]
        paged.decode(body, None, where="the new checkpoint", expect=manifest, checked=ids)
        counts = tuple(listing["entries"] for listing in listed)
        committed = replace(manifest, pages=tuple(ids), page_entries=counts)
        return committed if self._create(key, body) else None

    def read_page(self, pid: str) -> bytes:
        try:
            return self.store.get_object(self.page_key(pid), max_bytes=page.MAX_PAGE_BYTES)
        except ObjectNotFound:
            raise ManifestError(f"page {pid} is missing") from None

    def page_reader(self) -> paged.PageReader:
        """Reads the pages with the ids given, in order, the store's concurrency at a time
        (a missing page is a :class:`ManifestError`: its checkpoint is damaged)."""
        return lambda ids: read_pages(self.read_page, ids, self.store.concurrency)

    def _create(self, key: str, body: bytes) -> bool:
        """Put-if-absent that tells a lost race from our own retried write.

        When a first PUT succeeds but its response is lost, the SDK retries and the retry is
        refused (412): the object is ours all the same. Bodies are unique (sequence, time),
        so equal bytes mean we wrote it.
        """
        try:
            if self.store.put_object_if_absent(key, body):
                return True
        except ConditionalWritesUnsupported as exc:
            return self._create_fenced(key, body, exc)
        try:
            return self.store.get_object(key) == body
        except ObjectNotFound:
            return False

    def _create_fenced(self, key: str, body: bytes, why: ConditionalWritesUnsupported) -> bool:
        """Fallback for stores without create-only writes: look, write, read back.

        Not atomic on its own. What makes it safe is the attempt fence: only the newest
        attempt commits (``check_current`` runs right before), and one attempt never writes
        a sequence number twice. Two agents of the *same* attempt racing inside this window
        is the one case it cannot rule out; the read-back tells the loser it lost.
        """
        if not self._warned_unconditional:
            self._warned_unconditional = True
            log.warning(
                "store.no_conditional_writes",
                store=self.store.uri,
                error=str(why),
                fallback="check, write, read back; attempts fence each other",
            )
        if self.store.exists(key):
            return False
        self.store.put_object(key, body)
        return self.store.get_object(key) == body


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
