"""Where checkpoints live: a small object-store interface and its local-directory implementation.

The store knows nothing about manifests or files; it puts and gets opaque objects by key.
Keys are '/'-separated, relative to the store's root (the URI's path or S3 prefix), and are
built only by :mod:`checkpoint.engine.save.sync`, never taken from user input.

``put_object_if_absent`` is the one primitive the commit protocol needs: it creates a key
only if no object is there yet, atomically, and says whether it did.
"""

from __future__ import annotations

import abc
import errno
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from checkpoint.errors import (
    ObjectNotFound,
    ObjectTooLarge,
    StoreError,
    StoreUnavailable,
)

#: what link(2) answers on a filesystem that has no hard links (vfat: EPERM)
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class Store(abc.ABC):
    """An object store addressed by a URI. Implementations must be safe to use from threads."""

    uri: str
    #: how many transfers this store likes to run at once
    concurrency: int = 4
    #: the most bytes of an object :meth:`get_object_into` holds at once: None, the whole
    #: object (this default reads it whole); a streaming store, its piece
    stream_piece: int | None = None

    @abc.abstractmethod
    def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        """Create or replace ``key``. ``sha256`` (hex), when given, lets the store verify it."""

    @abc.abstractmethod
    def put_object_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; False when it already did."""

    @abc.abstractmethod
    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; raises :class:`ObjectNotFound`.

        With ``max_bytes``, an object larger than that raises :class:`ObjectTooLarge`
        before its body is read: hostile store content cannot fill memory.
        """

    def get_object_into(
        self, key: str, sink: Callable[[int, bytes | memoryview], None], *, max_bytes: int
    ) -> int:
        """Hand the object's bytes to ``sink(position, piece)`` in order; the bytes read.

        ``piece`` may be a view of a buffer the store reuses: it holds its bytes until
        ``sink`` returns, and a sink that keeps them copies them.

        A read cut short and made again starts over: ``sink`` sees position 0 once more.
        An object larger than ``max_bytes`` raises :class:`ObjectTooLarge` before any of
        it reaches ``sink``. This default reads the whole object with :meth:`get_object`;
        a network store streams it in pieces, so a transfer holds one piece, not one object.
        """
        data = self.get_object(key, max_bytes=max_bytes)
        sink(0, data)
        return len(data)

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in no particular order."""

    @abc.abstractmethod
    def delete_objects(self, keys: Iterable[str]) -> None:
        """Delete the keys; keys that do not exist are ignored."""

    def list_incomplete(self, prefix: str) -> Iterator[ObjectInfo]:
        """Partial objects under ``prefix`` that a writer killed mid-put left behind.

        None by default (an S3 PUT is atomic). ``delete_objects`` accepts their keys.
        """
        return iter(())

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`StoreUnavailable`, with the reason, if the store cannot be used."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start+length)`` of the object; fewer if it ends before.

        Raises :class:`ObjectNotFound`. This default reads the whole object: stores that
        can read a range (all of ours) do.
        """
        return self.get_object(key)[start : start + length]


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents as 0700 (whatever the umask); never change
    the mode of a directory that already exists: it is someone else's choice."""
    missing: list[Path] = []
    cur = path
    while not cur.exists() and not cur.is_symlink() and cur != cur.parent:
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # created meanwhile by someone else: leave its mode alone
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask


class LocalStore(Store):
    """A store in a local directory: ``file:///abs/path``.

    Objects are plain files written to a temporary name, fsynced and renamed, so a reader
    never sees a partial object. ``put_object_if_absent`` uses ``link(2)``, which fails
    atomically when the name exists. A filesystem without hard links (vfat, some FUSE and
    network mounts) cannot commit that way, and ``rename`` replaces silently, so such a
    store is refused by :meth:`check` (at start, and by ``doctor``) with one line.
    """

    concurrency = 4

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _write_temp(self, path: Path, data: bytes) -> Path:
        make_private_dirs(path.parent)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        os.replace(tmp, path)

    def put_object_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in _NO_LINKS:
                raise self._no_links(exc) from None
            raise
        finally:
            tmp.unlink()
        self._fsync_dir(path.parent)
        return True

    def _no_links(self, exc: OSError) -> StoreUnavailable:
        return StoreUnavailable(
            f"checkpoint store {self.uri}: this filesystem has no hard links "
            f"(link(2): {exc.strerror}), which a commit needs to be create-only: "
            "put the store on a local filesystem such as ext4 or xfs, or use s3://"
        )

    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                if max_bytes is None:
                    return fh.read()
                size = os.fstat(fh.fileno()).st_size
                data = fh.read(max_bytes + 1) if size <= max_bytes else b""
                if size > max_bytes or len(data) > max_bytes:
                    raise ObjectTooLarge(key, max(size, len(data)), max_bytes)
                return data
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(key)}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        return self._walk(prefix, incomplete=False)

    def list_incomplete(self, prefix: str) -> Iterator[ObjectInfo]:
        """Temp files of puts that never finished (the writer was killed), or still running."""
        return self._walk(prefix, incomplete=True)

    def _walk(self, prefix: str, *, incomplete: bool) -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names, then filter by the rest of it.
        head, _, _ = prefix.rpartition("/")
        base = self._path(head) if head else self.root
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if (name.startswith(".") and name.endswith(".tmp")) != incomplete:
                    continue  # an object being written, or (incomplete) a whole one
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete_objects(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def check(self) -> None:
        try:
            make_private_dirs(self.root)
        except OSError as exc:
            raise StoreUnavailable(
                f"checkpoint store {self.uri}: cannot create {self.root}: {exc.strerror}"
            ) from exc
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise StoreUnavailable(
                f"checkpoint store {self.uri}: {self.root} is not readable and writable"
            )
        self._check_links()

    def _check_links(self) -> None:
        """Refuse a filesystem without hard links now, not at the first commit."""
        probe = self.root / f".link-probe.{uuid.uuid4().hex}.tmp"
        linked = probe.with_name(f".{probe.name}")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.link(probe, linked)
        except OSError as exc:
            if exc.errno in _NO_LINKS:
                raise self._no_links(exc) from None
            raise StoreUnavailable(
                f"checkpoint store {self.uri}: cannot write in {self.root}: {exc.strerror}"
            ) from None
        finally:
            probe.unlink(missing_ok=True)
            linked.unlink(missing_ok=True)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(key)}: {exc.strerror}") from exc
        try:
            parts = []
            while length > 0:
                data = os.pread(fd, min(length, 16 << 20), start)
                if not data:
                    break  # the object ends here: the caller's hash check says so
                parts.append(data)
                start, length = start + len(data), length - len(data)
            return b"".join(parts)
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(key)}: {exc.strerror}") from exc
        finally:
            os.close(fd)
