"""The keys and commit protocol of one job inside a store.

Layout of one job under the store's root::

    <job-id>/blobs/<h[:2]>/<h>         chunk contents, named by their sha256 (immutable)
    <job-id>/packs/<p[:2]>/<p>         small files' chunks back to back, named by the sha256
                                       of the whole pack (immutable; manifest format 3)
    <job-id>/manifests/<seq>.json      one per committed checkpoint (10-digit sequence)
    <job-id>/attempts/<n>.json         one per agent start: the fencing token

The commit protocol (guarantees 1, 3, 4 and 6 of DESIGN.md):

1. every chunk the new manifest names is uploaded first, as a blob or inside a pack (only
   chunks the store does not have: the previous manifest's and this session's uploads
   are known);
2. the manifest is created with put-if-absent under the next sequence number; that single
   object creation is the commit. A crash before it leaves only unreferenced blobs, which
   ``gc`` collects later; it never changes what a restore sees.
3. before committing, an attempt checks that no newer attempt of the job has started; a
   stale attempt is told (:class:`Superseded`) and stops committing.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import structlog

from .errors import (
    CommitConflict,
    ConditionalWritesUnsupported,
    ManifestError,
    ObjectNotFound,
    Superseded,
)
from .manifest import MAX_MANIFEST_BYTES, Chunk, Manifest
from .store import Store

log = structlog.get_logger("checkpoint")
#: ASCII digits only: str.isdigit() also takes '²', which int() then refuses.
_NUMBERED = re.compile(r"([0-9]{1,18})\.json")


def utc_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobStore:
    """The keys and commit protocol of one job inside a store."""

    #: sequences pruning must keep whatever their age (a group's rank: parts records name)
    pinned: frozenset[int] = frozenset()

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.prefix = f"{job_id}/"
        self._warned_unconditional = False
        self._warned_keys: set[str] = set()

    def blob_key(self, sha256: str) -> str:
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256}"

    def pack_key(self, pack: str) -> str:
        return f"{self.prefix}packs/{pack[:2]}/{pack}"

    def chunk_key(self, chunk: Chunk) -> str:
        """The object holding ``chunk``'s bytes: its pack, or its own blob."""
        return self.pack_key(chunk.pack) if chunk.pack is not None else self.blob_key(chunk.sha256)

    def manifest_key(self, sequence: int) -> str:
        return f"{self.folder('manifests')}{sequence:010d}.json"

    def attempt_key(self, attempt: int) -> str:
        return f"{self.folder('attempts')}{attempt:06d}.json"

    def folder(self, name: str) -> str:
        """Where the job's ``manifests/`` and ``attempts/`` are (a group's rank overrides)."""
        return f"{self.prefix}{name}/"

    def _numbers(self, name: str) -> list[int]:
        found = []
        folder = self.folder(name)
        for obj in self.store.list_objects(folder):
            match = _NUMBERED.fullmatch(obj.key[len(folder) :])
            if match:
                found.append(int(match[1]))
            elif obj.key not in self._warned_keys:  # not ours: say so once, never crash
                self._warned_keys.add(obj.key)
                log.warning("store.key_ignored", key=obj.key, why="not a name the agent writes")
        return sorted(found)

    def sequences(self) -> list[int]:
        """Committed sequence numbers, oldest first."""
        return self._numbers("manifests")

    def load_manifest(self, sequence: int) -> Manifest:
        key = self.manifest_key(sequence)
        data = self.store.get_object(key, max_bytes=MAX_MANIFEST_BYTES)
        manifest = Manifest.from_json(data, where=key)
        if manifest.sequence != sequence:
            raise ManifestError(f"{key}: says it is sequence {manifest.sequence}")
        return manifest

    def attempts(self) -> list[int]:
        return self._numbers("attempts")

    def claim_attempt(self, info: dict[str, Any]) -> int:
        """Register a new attempt; its number fences off every older attempt."""
        attempt = (self.attempts() or [0])[-1] + 1
        for _ in range(100):
            body = json.dumps({**info, "attempt": attempt, "started": utc_iso()}).encode()
            if self._create(self.attempt_key(attempt), body):
                return attempt
            attempt += 1
        raise CommitConflict(f"{self.folder('attempts')}: could not claim an attempt number")

    def check_current(self, attempt: int) -> None:
        if attempt and self.store.exists(self.attempt_key(attempt + 1)):
            raise Superseded(attempt, max(self.attempts()))

    def commit(self, manifest: Manifest) -> bool:
        return self._create(self.manifest_key(manifest.sequence), manifest.to_json())

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
