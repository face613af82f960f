"""Exceptions of the checkpoint store, each carrying a message a user can act on."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class for everything the checkpoint package raises on purpose."""


class StoreURIError(CheckpointError, ValueError):
    """A checkpoint URI that cannot name a store (unknown scheme, relative path, ...).

    ``setting`` names the environment variable at fault when it is not the URI itself
    (``SPOT_AGENT_SSE``, ...), so that the user is pointed at the right one.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class StoreError(CheckpointError):
    """A store operation failed.

    ``transient``: the failure may pass if the call is made again a little later
    (throttling such as 503 SlowDown, a 5xx, a connection reset or refused, a timeout, a
    body cut short). Not transient: the answer will stay the same (no such bucket, access
    denied, bad credentials, a missing object).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StoreUnavailable(StoreError):
    """The store cannot be reached or read: no such bucket, access denied, no network."""


class ObjectNotFound(StoreError):
    """A key that should exist does not."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object at {key}")
        self.key = key


class ObjectTooLarge(StoreError):
    """An object bigger than its reader allows (a blob larger than its manifest says)."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"{key} holds {size} bytes, more than the {limit} expected")
        self.key = key


class ManifestError(CheckpointError):
    """A manifest that is malformed, or that names a path outside the checkpoint dir."""


class LocalWriteError(CheckpointError):
    """Restore could not write into the local directory (disk full, read-only, permissions).

    Nothing is wrong with the stored checkpoint; a retry elsewhere may well succeed.
    """


class CheckpointDamaged(CheckpointError):
    """A committed checkpoint whose objects are missing or do not match their hashes."""


class ConditionalWritesUnsupported(StoreError):
    """The store refused a create-only write (S3 ``If-None-Match: *``)."""


class CommitConflict(StoreError):
    """Another writer committed the same sequence number first."""


class Superseded(StoreError):
    """A newer attempt of the same job has started; this one must not commit any more."""

    def __init__(self, attempt: int, newer: int) -> None:
        super().__init__(
            f"attempt {attempt} is stale: attempt {newer} of the same job has started, "
            "so this attempt will not commit any more checkpoints"
        )
        self.attempt = attempt
        self.newer = newer
